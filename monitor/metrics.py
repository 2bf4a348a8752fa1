"""The Prometheus metrics of SPEC section 7.

Daemon-wide metrics live on a prometheus-client registry. The per-check families
(`monitor_check_*`, `monitor_alert_state`) are collected when scraped, from plain per-check slots
written to the exposition directly.
Why: prometheus-client's labelled children cost memory per check and CPU per check per scrape.
"""

from __future__ import annotations

import bisect
import math
from abc import ABC, abstractmethod
from array import array
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from monitor import __version__
from monitor.store import OPERATIONS as STORE_OPERATIONS

# `_created` series double the exposition at thousands of checks and no dashboard uses them.
disable_created_metrics()

# Health checks answer in milliseconds to seconds; timeouts go up to tens of seconds.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Scheduler lag is healthy below a few milliseconds; the target is p99 < 100 ms.
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def _num(value: float) -> str:
    """A sample value as the text format writes it (Go's float formatting)."""
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(float(value))


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_BUCKET_LE = [_num(b) for b in DURATION_BUCKETS] + ["+Inf"]


# monitor_check_runs_total's `result` label values, in exposition order.
RUN_RESULTS = ("success", "failure", "timeout", "error", "skipped")
_RESULT_SLOT = {result: i for i, result in enumerate(RUN_RESULTS)}
_FAILURE, _SKIPPED = _RESULT_SLOT["failure"], _RESULT_SLOT["skipped"]
# Layout of CheckSeries.counts: per-bucket counts (not cumulative), count, sum, runs by result.
_COUNT = len(DURATION_BUCKETS) + 1
_SUM = _COUNT + 1
_RUNS = _SUM + 1


class CheckSeries(ABC):
    """A check as /metrics shows it. Its counters are kept here, in one flat array of doubles
    (layout above); its gauges are read from its latest run and evaluation when scraped, not
    kept a second time. The daemon's per-check runtime is one,
    so that nothing is kept per check on the metrics side."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = array("d", bytes(8 * (_RUNS + len(RUN_RESULTS))))

    @property
    @abstractmethod
    def series_check(self) -> str: ...

    @property
    @abstractmethod
    def series_type(self) -> str: ...

    @abstractmethod
    def metric_up(self) -> float | None: ...

    @abstractmethod
    def metric_values(self) -> dict[str, float]: ...

    @abstractmethod
    def alert_levels(self) -> dict[str, float]: ...

    @property
    def labels(self) -> str:
        """Made when scraped rather than kept per check."""
        return f'check="{_label(self.series_check)}",type="{_label(self.series_type)}"'

    def observe(self, seconds: float, result: str) -> None:
        """One run: its duration and its result (a plugin's own outcome counts as a failure)."""
        counts = self.counts
        counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1.0
        counts[_COUNT] += 1.0
        counts[_SUM] += seconds
        counts[_RUNS + _RESULT_SLOT.get(result, _FAILURE)] += 1.0

    def count_skipped(self) -> None:
        self.counts[_RUNS + _SKIPPED] += 1.0


class Metrics:
    """Every metric the daemon exports. Tests pass a fresh registry each."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.alerts_firing = Gauge(
            "monitor_alerts_firing", "Alerts firing now, by severity.", ["severity"], registry=r
        )
        self.notifications = Counter(
            "monitor_notifications",
            "Notification attempts by notifier and outcome (sent|retry|failed).",
            ["notifier", "outcome"],
            registry=r,
        )
        self.outbox_pending = Gauge(
            "monitor_outbox_pending", "Notifications written to the outbox and not yet delivered.", registry=r
        )
        for severity in ("warning", "critical"):
            self.alerts_firing.labels(severity)
        self.storm_active = Gauge(
            "monitor_storm_active", "1 while a storm is on (many checks down at once), else 0.", registry=r
        )
        self.alerts_suppressed = Gauge(
            "monitor_alerts_suppressed",
            "Active alerts not notified, by reason (maintenance|silence|dependency|down|flapping|"
            "uplink|storm).",
            ["reason"],
            registry=r,
        )
        self.scheduler_lag = Histogram(
            "monitor_scheduler_lag_seconds",
            "Actual start minus scheduled start of check runs.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.config_reloads = Counter(
            "monitor_config_reloads", "Config reloads by result.", ["result"], registry=r
        )
        self.build_info = Gauge(
            "monitor_build_info", "Version of the running daemon.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)
        self.store_errors = Counter(
            "monitor_store_errors",
            "Failed state store operations, retries included, by operation.",
            ["operation"],
            registry=r,
        )
        for operation in STORE_OPERATIONS:
            self.store_errors.labels(operation)
        self.store_commits = Counter(
            "monitor_store_commits",
            "State store transactions committed by the writer, each holding every write ready.",
            registry=r,
        )

        # An HA pair's (SPEC section 9); a single replica exports none of their series.
        self.cluster_leader = Gauge(
            "monitor_cluster_leader", "1 on the shard's leader, 0 on its followers.", ["shard"], registry=r
        )
        self.cluster_epoch = Gauge(
            "monitor_cluster_epoch", "The shard's current epoch (fencing token).", ["shard"], registry=r
        )
        self.cluster_transitions = Counter(
            "monitor_cluster_transitions",
            "Times this replica became leader or stopped leading.",
            ["shard"],
            registry=r,
        )
        self.cluster_fenced = Counter(
            "monitor_cluster_fenced",
            "Leader writes refused because the epoch moved on or the lease ended, by operation.",
            ["operation"],
            registry=r,
        )
        self.outbox_redelivered = Counter(
            "monitor_outbox_redelivered",
            "Notifications sent again after a takeover (a previous leader may have sent them).",
            ["notifier"],
            registry=r,
        )
        self.dependency_stale = Counter(
            "monitor_cluster_dependency_stale",
            "Alerts that paged because a dependency on another shard had no fresh state (fail open).",
            registry=r,
        )
        self.lease_renew = Histogram(
            "monitor_cluster_lease_renew_seconds",
            "Time the leader's lease renewals take.",
            buckets=LAG_BUCKETS,
            registry=r,
        )

    def store_failed(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()

    def render(self, checks: Iterable[CheckSeries]) -> Iterator[str]:
        """The whole exposition (text format 0.0.4) in parts, one family's samples of one check
        each: whoever writes it out may yield to the event loop between any two parts."""
        yield generate_latest(self.registry).decode()
        yield from _check_lines(list(checks))


def _check_lines(all_series: list[CheckSeries]) -> Iterator[str]:
    # Each part is joined before it is yielded: a run may change a check's state during a pause.
    yield "# HELP monitor_check_up 1 if the check's last run succeeded, else 0.\n"
    yield "# TYPE monitor_check_up gauge\n"
    for s in all_series:
        if (up := s.metric_up()) is not None:
            yield f"monitor_check_up{{{s.labels}}} {_num(up)}\n"
    yield "# HELP monitor_check_duration_seconds Duration of check runs.\n"
    yield "# TYPE monitor_check_duration_seconds histogram\n"
    for s in all_series:
        if s.counts[_COUNT]:
            yield _histogram(s)
    yield "# HELP monitor_check_runs_total Check runs by result (success|failure|timeout|error|skipped)\n"
    yield "# TYPE monitor_check_runs_total counter\n"
    for s in all_series:
        labels, runs = s.labels, s.counts[_RUNS:]
        yield "".join(
            f'monitor_check_runs_total{{{labels},result="{result}"}} {_num(n)}\n'
            for result, n in zip(RUN_RESULTS, runs, strict=True)
            if n
        )
    yield "# HELP monitor_check_value Last value of every sample metric of a check.\n"
    yield "# TYPE monitor_check_value gauge\n"
    for s in all_series:
        yield _by_metric("monitor_check_value", s.series_check, s.metric_values())
    yield "# HELP monitor_alert_state 0 ok, 1 warning, 2 critical, per check and threshold row.\n"
    yield "# TYPE monitor_alert_state gauge\n"
    for s in all_series:
        yield _by_metric("monitor_alert_state", s.series_check, s.alert_levels())


def _histogram(s: CheckSeries) -> str:
    lines = []
    counts, labels = s.counts, s.labels
    cumulative = 0.0
    for le, n in zip(_BUCKET_LE, counts[:_COUNT], strict=True):
        cumulative += n
        lines.append(f'monitor_check_duration_seconds_bucket{{{labels},le="{le}"}} {_num(cumulative)}\n')
    lines.append(f"monitor_check_duration_seconds_count{{{labels}}} {_num(counts[_COUNT])}\n")
    lines.append(f"monitor_check_duration_seconds_sum{{{labels}}} {_num(counts[_SUM])}\n")
    return "".join(lines)


def _by_metric(family: str, check: str, values: dict[str, float]) -> str:
    labels = _label(check)
    return "".join(
        f'{family}{{check="{labels}",metric="{_label(metric)}"}} {_num(v)}\n' for metric, v in values.items()
    )
