"""The Prometheus metrics of SPEC section 7.

Daemon-wide metrics live on a prometheus-client registry. The per-check families
(`monitor_check_*`, `monitor_alert_state`) are kept in plain per-check slots and written to the
exposition directly: at 20,000 checks prometheus-client's labelled children took ~200 MB and
4 s of CPU per scrape; plain floats take a few MB and a fraction of that.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from monitor import __version__

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


class CheckSeries:
    """One check's per-check samples, as plain numbers."""

    __slots__ = ("_labels", "buckets", "check", "count", "runs", "states", "sum", "type", "up", "values")

    def __init__(self, check: str, type_: str) -> None:
        self.check, self.type = check, type_
        self._labels = f'check="{_label(check)}",type="{_label(type_)}"'
        self.up: float | None = None
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0
        self.runs: dict[str, float] = {}
        self.values: dict[str, float] = {}
        self.states: dict[str, float] = {}

    def observe(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def count_run(self, result: str) -> None:
        self.runs[result] = self.runs.get(result, 0.0) + 1.0


class Metrics:
    """Every metric the daemon exports. Tests pass a fresh registry each."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self._series: dict[str, CheckSeries] = {}
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

    def series(self, check: str, type_: str) -> CheckSeries:
        found = self._series.get(check)
        if found is None or found.type != type_:
            found = self._series[check] = CheckSeries(check, type_)
        return found

    def forget_check(self, check: str) -> None:
        """Drop a removed check's series so Grafana does not show it as stale forever."""
        self._series.pop(check, None)

    def render(self) -> Iterator[str]:
        """The whole exposition (text format 0.0.4) in parts, one family's samples of one check
        each: whoever writes it out may yield to the event loop between any two parts."""
        yield generate_latest(self.registry).decode()
        yield from self._check_lines()

    def _check_lines(self) -> Iterator[str]:
        # Each part is joined before it is yielded: a run may change a check's dicts during a pause.
        all_series = list(self._series.values())
        yield "# HELP monitor_check_up 1 if the check's last run succeeded, else 0.\n"
        yield "# TYPE monitor_check_up gauge\n"
        for s in all_series:
            if s.up is not None:
                yield f"monitor_check_up{{{s._labels}}} {_num(s.up)}\n"
        yield "# HELP monitor_check_duration_seconds Duration of check runs.\n"
        yield "# TYPE monitor_check_duration_seconds histogram\n"
        for s in all_series:
            if s.count:
                yield _histogram(s)
        yield "# HELP monitor_check_runs_total Check runs by result (success|failure|timeout|error|skipped)\n"
        yield "# TYPE monitor_check_runs_total counter\n"
        for s in all_series:
            yield "".join(
                f'monitor_check_runs_total{{{s._labels},result="{result}"}} {_num(n)}\n'
                for result, n in s.runs.items()
            )
        yield "# HELP monitor_check_value Last value of every sample metric of a check.\n"
        yield "# TYPE monitor_check_value gauge\n"
        for s in all_series:
            yield _by_metric("monitor_check_value", s.check, s.values)
        yield "# HELP monitor_alert_state 0 ok, 1 warning, 2 critical, per check and threshold row.\n"
        yield "# TYPE monitor_alert_state gauge\n"
        for s in all_series:
            yield _by_metric("monitor_alert_state", s.check, s.states)


def _histogram(s: CheckSeries) -> str:
    lines = []
    cumulative = 0
    for le, n in zip(_BUCKET_LE, s.buckets, strict=True):
        cumulative += n
        lines.append(f'monitor_check_duration_seconds_bucket{{{s._labels},le="{le}"}} {cumulative}.0\n')
    lines.append(f"monitor_check_duration_seconds_count{{{s._labels}}} {s.count}.0\n")
    lines.append(f"monitor_check_duration_seconds_sum{{{s._labels}}} {_num(s.sum)}\n")
    return "".join(lines)


def _by_metric(family: str, check: str, values: dict[str, float]) -> str:
    labels = _label(check)
    return "".join(
        f'{family}{{check="{labels}",metric="{_label(metric)}"}} {_num(v)}\n' for metric, v in values.items()
    )
