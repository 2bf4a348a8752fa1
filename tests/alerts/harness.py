"""Drives evaluation, the alert pipeline and the outbox with a fake clock and recording notifiers."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from alerts.model import AlertPolicy, CheckInfo, Route
from alerts.notifiers.base import Delivery, Failed, Notification, Notifier, NotifierConfig, Retry, Sent
from alerts.outbox import Outbox
from alerts.pipeline import AlertPipeline
from monitor.config import Config, dependency_order, parse_config
from monitor.evaluation import CheckEvaluator
from monitor.models import CheckResult
from monitor.store import MemoryStore, Store
from tests.fakes.clock import FakeClock


def policy_for(config: Config) -> AlertPolicy:
    checks = {}
    by_name = {c.name: c for c in config.checks}
    for name in dependency_order(config):
        c = by_name[name]
        checks[name] = CheckInfo(
            name, c.type, f"{name}.example.com", dict(c.labels), c.runbook, tuple(c.depends_on)
        )
    return AlertPolicy(
        checks=checks,
        routes=tuple(Route.of(r) for r in config.routes),
        maintenance=tuple(config.maintenance),
        business_hours=config.business_hours,
        timezone=ZoneInfo(config.monitor.timezone),
        alerts=config.alerts,
        uplink=tuple(config.monitor.uplink),
        shard=config.cluster.shard,
    )


class Recorder(Notifier):
    """Records what it is given; answers from `script` (Sent when it runs out)."""

    type = "recorder"
    config_model = NotifierConfig

    def __init__(self, name: str, sent: list[tuple[str, Notification]], script: list[Delivery]) -> None:
        super().__init__(name, NotifierConfig(type="recorder"), None)  # type: ignore[arg-type]
        self.sent = sent
        self.script = script
        self.attempts = 0

    async def send(self, notification: Notification) -> Delivery:
        self.attempts += 1
        delivery = self.script.pop(0) if self.script else Sent()
        if isinstance(delivery, Sent):
            self.sent.append((self.name, notification))
        return delivery


@dataclass
class Harness:
    config: Config
    clock: FakeClock
    store: Store = field(default_factory=MemoryStore)
    sent: list[tuple[str, Notification]] = field(default_factory=list)
    scripts: dict[str, list[Delivery]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.notifiers = {
            name: Recorder(name, self.sent, self.scripts.setdefault(name, []))
            for name in self.config.notifiers
        }
        self.outbox = Outbox(self.store, dict(self.notifiers), self.clock, jitter=lambda: 1.0)
        self.manager = AlertPipeline(policy_for(self.config), self.store, self.outbox, self.clock)
        self.evaluators = {
            c.name: CheckEvaluator(c.name, self.config.rows_for(c.name)) for c in self.config.checks
        }

    @classmethod
    def from_toml(cls, toml: str, at: datetime, **kwargs: object) -> Harness:
        config = parse_config(textwrap.dedent(toml), {})
        return cls(config, FakeClock(at.timestamp()), **kwargs)  # type: ignore[arg-type]

    async def run(self, check: str, result: CheckResult) -> None:
        """One run of `check` with this result, evaluated, observed, and due notifications delivered."""
        now = self.clock.now()
        evaluator = self.evaluators[check]
        evaluator.observe(result, now)
        await self.manager.observe(check, evaluator.evaluations(), result.reason, now)
        await self.deliver()

    async def advance(self, seconds: float, step: float = 60.0) -> None:
        """Let time pass, ticking the manager as the daemon does (every `step` seconds here)."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.advance(min(step, end - self.clock.now()))
            await self.manager.tick(self.clock.now())
            await self.deliver()

    async def deliver(self) -> None:
        for name in self.notifiers:
            await self.outbox.step(name)

    def events(self, notifier: str | None = None) -> list[tuple[str, str, str, str]]:
        """(notifier, event, check, severity) of every delivered notification."""
        return [
            (name, n.event, n.check, n.severity)
            for name, n in self.sent
            if notifier is None or name == notifier
        ]

    def clear(self) -> None:
        self.sent.clear()


def down(reason: str = "status 503") -> CheckResult:
    return CheckResult.failure(reason, 5.0, status_code=503)


def up(latency_ms: float = 20.0) -> CheckResult:
    return CheckResult.success(latency_ms, status_code=200)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


__all__ = ["Failed", "Harness", "Retry", "Sent", "down", "up", "utc"]
