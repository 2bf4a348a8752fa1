"""The Check interface: a config model, built with shared deps, `async run() -> CheckResult`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field

from monitor.models import CheckResult, ConfigModel, Duration, Frozen, freeze
from monitor.secrets import Secrets, secrets_of
from monitor.store.heartbeats import HeartbeatBook

ThresholdOverride = dict[str, Any] | Literal[False]


class CheckConfig(ConfigModel):
    """Keys every check type shares. Each type subclasses this with its own keys and `type`."""

    name: str = Field(pattern=r"^[a-z0-9._-]+$", max_length=200)
    type: str
    # The loader puts monitor.default_interval/default_timeout here when absent. Zero would run a
    # check once and never again (interval) or time every run out at once (timeout).
    interval: Duration = Field(default=30.0, gt=0)
    timeout: Duration = Field(default=10.0, gt=0)
    depends_on: list[str] = []
    runbook: str | None = None
    labels: dict[str, str] = {}
    thresholds: dict[str, ThresholdOverride] = {}  # validated as rows by the config loader


@dataclass(frozen=True, slots=True)
class CheckDeps:
    """Shared resources the daemon builds once and passes to every check."""

    http: aiohttp.ClientSession
    # Heartbeat checks judge from it; the daemon passes its own, over the state store.
    heartbeats: HeartbeatBook = field(default_factory=HeartbeatBook)


class Check(ABC):
    """One configured check. `run` never raises for a failing target: it returns a failed result.

    The caller enforces `config.timeout` around `run` (one deadline from DNS to body) and turns
    it into the result `timeout after Ns`; a check only needs to clean up when cancelled.

    `config` is the run-time copy of the validated `config_model` (`monitor.models.freeze`): the
    same fields, read-only. The loader makes it; a model given here is copied.

    The built-in checks declare `__slots__`: a check is kept per configured check, for the
    daemon's life. A plugin's subclass without `__slots__` gets a `__dict__` as usual.
    """

    __slots__ = ("_secrets", "config", "deps")

    type: ClassVar[str]
    config_model: ClassVar[type[CheckConfig]]

    def __init__(self, config: CheckConfig | Frozen, deps: CheckDeps) -> None:
        self.config: Any = freeze(config)  # typed as its model's fields by each subclass
        self.deps = deps
        # Found now, not at the first failure: a storm's thousands of first failures come at once.
        self._secrets = secrets_of(self.config)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def secrets(self) -> Secrets:
        """The config's secret values (monitor.secrets): the runner masks them in every reason."""
        return self._secrets

    @abstractmethod
    def target(self) -> str:
        """What is checked, for people: `host:port`, the URL's host, the database name."""

    @abstractmethod
    async def run(self) -> CheckResult:
        """Measure the target once."""
