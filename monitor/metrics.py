"""The Prometheus metrics of SPEC section 7, on a registry of their own."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from monitor import __version__

# `_created` series double the exposition at thousands of checks and no dashboard uses them.
disable_created_metrics()

# Health checks answer in milliseconds to seconds; timeouts go up to tens of seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Scheduler lag is healthy below a few milliseconds; the target is p99 < 100 ms.
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Every metric the daemon exports. Tests pass a fresh registry each."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.check_up = Gauge(
            "monitor_check_up",
            "1 if the check's last run succeeded, else 0.",
            ["check", "type"],
            registry=r,
        )
        self.check_duration = Histogram(
            "monitor_check_duration_seconds",
            "Duration of check runs.",
            ["check", "type"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.check_runs = Counter(
            "monitor_check_runs",
            "Check runs by result (success|failure|timeout|error|skipped).",
            ["check", "type", "result"],
            registry=r,
        )
        self.check_value = Gauge(
            "monitor_check_value",
            "Last value of every sample metric of a check.",
            ["check", "metric"],
            registry=r,
        )
        self.alert_state = Gauge(
            "monitor_alert_state",
            "0 ok, 1 warning, 2 critical, per check and threshold row.",
            ["check", "metric"],
            registry=r,
        )
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
        return CheckSeries(self, check, type_)

    def forget_check(self, check: str, type_: str, metrics: list[str]) -> None:
        """Drop a removed check's series so Grafana does not show it as stale forever."""
        for gauge in (self.check_up, self.check_duration):
            _remove(gauge, check, type_)
        for result in ("success", "failure", "timeout", "error", "skipped"):
            _remove(self.check_runs, check, type_, result)
        for metric in metrics:
            _remove(self.check_value, check, metric)
            _remove(self.alert_state, check, metric)


def _remove(metric: Gauge | Counter | Histogram, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        metric.remove(*labels)


class CheckSeries:
    """One check's labelled children, each looked up once: at thousands of runs a second the
    label lookup would otherwise be a large part of a run's cost."""

    __slots__ = ("_metrics", "_runs", "_states", "_values", "check", "duration", "type", "up")

    def __init__(self, metrics: Metrics, check: str, type_: str) -> None:
        self._metrics = metrics
        self.check, self.type = check, type_
        self.up = metrics.check_up.labels(check, type_)
        self.duration = metrics.check_duration.labels(check, type_)
        self._runs: dict[str, Counter] = {}
        self._values: dict[str, Gauge] = {}
        self._states: dict[str, Gauge] = {}

    def runs(self, result: str) -> Counter:
        child = self._runs.get(result)
        if child is None:
            child = self._runs[result] = self._metrics.check_runs.labels(self.check, self.type, result)
        return child

    def value(self, metric: str) -> Gauge:
        child = self._values.get(metric)
        if child is None:
            child = self._values[metric] = self._metrics.check_value.labels(self.check, metric)
        return child

    def state(self, metric: str) -> Gauge:
        child = self._states.get(metric)
        if child is None:
            child = self._states[metric] = self._metrics.alert_state.labels(self.check, metric)
        return child
