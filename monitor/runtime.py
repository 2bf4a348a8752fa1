"""A scheduled check at run time: its check, evaluation, latest run, metric series and views."""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from alerts.model import AlertPolicy, CheckInfo, Route
from checks import Check, CheckDeps, check_types
from monitor.config import Config, dependency_order
from monitor.evaluation import CheckEvaluator
from monitor.metrics import CheckSeries
from monitor.models import STATUS_RANK, CheckResult, Level, Status, iso
from monitor.sharding import members

_STATUS_OF_LEVEL = {
    Level.OK: Status.OK,
    Level.WARNING: Status.WARNING,
    Level.CRITICAL: Status.CRITICAL,
}


class Judge(Protocol):
    """Who says where each threshold row of a check stands: alerting (the daemon) or the single
    run itself (`monitor once`)."""

    def row_states(self, check: str) -> dict[str, str]:
        """Rows not ok: pending, warning or critical."""
        ...

    def levels(self, check: str) -> dict[str, int]:
        """monitor_alert_state of rows not ok."""
        ...

    def worst(self, check: str) -> Level: ...


@dataclass(slots=True)
class CheckRuntime(CheckSeries):
    """One scheduled check with its evaluation, latest run and metric series.

    The latest run is kept flat (`last` rebuilds it): these slots and one array of the sample
    values rather than a CheckResult with its dict, since one is kept per check.
    """

    check: Check
    evaluator: CheckEvaluator
    judge: Judge
    last_run: float | None = None
    suppressed: str | None = None  # set by alerting: maintenance|silence|dependency
    # Samples of earlier runs that the latest run lacks (a failed run has no status_code):
    # monitor_check_value keeps showing their last value. None in the common case.
    earlier: dict[str, float] | None = None
    up: bool | None = None  # None until the first run
    latency_ms: float = 0.0
    reason: str | None = None
    outcome: str = "success"
    _names: tuple[str, ...] = ()
    _values: array[float] | None = None

    def __post_init__(self) -> None:
        CheckSeries.__init__(self)

    @property
    def series_check(self) -> str:
        return self.check.name

    @property
    def series_type(self) -> str:
        return self.check.type

    @property
    def last(self) -> CheckResult | None:
        """The latest run, None before the first."""
        if self.up is None:
            return None
        return CheckResult(self.up, self.latency_ms, self.samples(), self.reason, self.outcome)

    def samples(self) -> dict[str, float]:
        """The latest run's type-specific samples."""
        return {} if self._values is None else dict(zip(self._names, self._values, strict=True))

    def record(self, result: CheckResult, now: float) -> None:
        samples = result.samples
        names = tuple(samples)
        if names != self._names:
            if self.up is not None:
                earlier = {**(self.earlier or {}), **self.samples()}
                self.earlier = {k: v for k, v in earlier.items() if k not in samples} or None
            self._names = names
            self._values = array("d", bytes(8 * len(names))) if names else None
        if self._values is not None:
            values = self._values
            for i, value in enumerate(samples.values()):
                values[i] = value
        self.up, self.latency_ms, self.reason, self.outcome = (
            result.up,
            result.latency_ms,
            result.reason,
            result.outcome,
        )
        self.last_run = now

    # CheckSeries: the gauges of monitor_check_up/value and monitor_alert_state, read when scraped.
    def metric_up(self) -> float | None:
        return None if self.up is None else (1.0 if self.up else 0.0)

    def metric_values(self) -> dict[str, float]:
        if self.up is None:
            return {}
        return {
            "up": 1.0 if self.up else 0.0,
            "latency_ms": self.latency_ms,
            **(self.earlier or {}),
            **self.samples(),
            **self.evaluator.derived,
        }

    def alert_levels(self) -> dict[str, float]:
        levels = self.judge.levels(self.check.name)
        return {metric: float(levels.get(metric, 0)) for metric in self.evaluator.applied()}

    def status(self) -> Status:
        if self.up is None or self.outcome == "error":
            return Status.UNKNOWN
        return _STATUS_OF_LEVEL[self.judge.worst(self.check.name)]

    def view(self) -> dict[str, Any]:
        """The check as `monitor once --json` and `GET /api/v1/checks` show it."""
        last = self.last
        samples: dict[str, float] = {}
        if last is not None:
            samples = {**last.all_samples(), **self.evaluator.derived}
        states = self.judge.row_states(self.check.name)
        return {
            "name": self.check.name,
            "type": self.check.type,
            "target": self.check.target(),
            "interval_s": self.check.config.interval,
            "status": self.status().value,
            "up": None if last is None else last.up,
            "reason": None if last is None else last.reason,
            "duration_ms": None if last is None else round(last.latency_ms, 3),
            "last_run": iso(self.last_run),
            "samples": {k: round(v, 3) for k, v in samples.items()},
            "states": {m: states.get(m, "ok") for m in self.evaluator.applied()},
            "suppressed": self.suppressed,
        }


def build_runtimes(
    config: Config, deps: CheckDeps, judge: Judge, names: Iterable[str] | None = None
) -> dict[str, CheckRuntime]:
    """Checks in dependency order (dependencies first), each with its evaluator: the named ones,
    else those of this replica's shard."""
    types = check_types()
    wanted = set(names) if names is not None else members(config)
    runtimes: dict[str, CheckRuntime] = {}
    by_name = {c.name: c for c in config.checks}
    for name in dependency_order(config):
        if name not in wanted:
            continue
        cfg = by_name[name]
        check = types[cfg.type](cfg, deps)
        runtimes[name] = CheckRuntime(check, CheckEvaluator(name, config.rows_for(name)), judge)
    return runtimes


def summary(runtimes: Iterable[CheckRuntime]) -> dict[str, Any]:
    views = [rt.view() for rt in runtimes]
    worst = max((Status(v["status"]) for v in views), key=STATUS_RANK.__getitem__, default=Status.OK)
    return {"status": worst.value, "checks": views}


class CheckInfos(Mapping[str, CheckInfo]):
    """What alerting knows of each running check, made when it asks: alerting looks a check up
    only while it breaches, so none is kept per check."""

    __slots__ = ("_runtimes",)

    def __init__(self, runtimes: dict[str, CheckRuntime]) -> None:
        self._runtimes = runtimes

    def get(self, name: str, default: None = None) -> CheckInfo | None:  # type: ignore[override]
        return self[name] if name in self._runtimes else default

    def __getitem__(self, name: str) -> CheckInfo:
        check = self._runtimes[name].check
        return CheckInfo(
            name=name,
            type=check.type,
            target=check.target(),
            labels=check.config.labels,  # read-only: alerting copies what it keeps
            runbook=check.config.runbook,
            depends_on=tuple(check.config.depends_on),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._runtimes)

    def __len__(self) -> int:
        return len(self._runtimes)


def alert_policy(config: Config, runtimes: dict[str, CheckRuntime]) -> AlertPolicy:
    """The alerting part of the config, checks in dependency order."""
    return AlertPolicy(
        checks=CheckInfos(runtimes),
        routes=tuple(Route.of(r) for r in config.routes),
        maintenance=tuple(config.maintenance),
        business_hours=config.business_hours,
        timezone=ZoneInfo(config.monitor.timezone),
        alerts=config.alerts,
        uplink=tuple(config.monitor.uplink),
        shard=config.cluster.shard,
    )


class SingleRun:
    """`monitor once`'s judge: each row on the check's one run, as a Nagios plugin judges it
    (trigger_after does not apply)."""

    def __init__(self, runtimes: Mapping[str, CheckRuntime]) -> None:
        self._runtimes = runtimes

    def _levels(self, check: str) -> dict[str, Level]:
        return self._runtimes[check].evaluator.levels()

    def row_states(self, check: str) -> dict[str, str]:
        return {m: level.name.lower() for m, level in self._levels(check).items() if level > Level.OK}

    def levels(self, check: str) -> dict[str, int]:
        return {m: int(level) for m, level in self._levels(check).items()}

    def worst(self, check: str) -> Level:
        return max(self._levels(check).values(), default=Level.OK)
