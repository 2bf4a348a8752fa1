"""The Check base: built-in checks keep no per-instance __dict__, plugin subclasses still may."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import aiohttp
import pytest

from checks.base import Check, CheckConfig, CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.tcp import TcpCheck, TcpCheckConfig
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.models import CheckResult
from monitor.runner import run_check


@pytest.fixture
def deps(http_session: aiohttp.ClientSession) -> CheckDeps:
    """What the daemon gives every check: its one session."""
    return CheckDeps(http=http_session)


class CounterConfig(CheckConfig):
    type: Literal["counter"]


class CounterCheck(Check):
    """A plugin as third parties write one: no __slots__, its own attributes set anywhere."""

    type: ClassVar[str] = "counter"
    config_model: ClassVar[type[CheckConfig]] = CounterConfig

    def __init__(self, config: CheckConfig, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        self.runs = 0

    def target(self) -> str:
        return "nowhere"

    async def run(self) -> CheckResult:
        self.runs += 1
        self.last_run = self.runs
        return CheckResult.success(1.0, runs=float(self.runs))


async def test_plugin_check_without_slots_keeps_its_own_attributes(deps: CheckDeps) -> None:
    check = CounterCheck(CounterConfig(name="counter", type="counter"), deps)

    first = await run_check(check)
    second = await run_check(check)

    assert (first.up, second.samples["runs"]) == (True, 2.0)
    assert vars(check) == {"runs": 2, "last_run": 2}
    assert (check.name, check.config.type, check.deps) == ("counter", "counter", deps)


@pytest.mark.parametrize(
    ("check_type", "config_type", "table"),
    [
        (HttpCheck, HttpCheckConfig, {"type": "http", "url": "http://example.com/health"}),
        (TcpCheck, TcpCheckConfig, {"type": "tcp", "host": "example.com", "port": 5432}),
        (WebSocketCheck, WebSocketCheckConfig, {"type": "websocket", "url": "wss://example.com/ws"}),
    ],
    ids=["http", "tcp", "websocket"],
)
async def test_builtin_checks_have_no_instance_dict(
    check_type: type[Check], config_type: type[CheckConfig], table: dict[str, Any], deps: CheckDeps
) -> None:
    # At 20,000 checks a __dict__ each costs megabytes: the built-in types declare __slots__.
    check = check_type(config_type.model_validate({"name": "c", **table}), deps)

    assert not hasattr(check, "__dict__")
    with pytest.raises(AttributeError):
        check.extra = 1  # type: ignore[attr-defined]
