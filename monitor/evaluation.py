"""The threshold table at work: sliding windows, derived metrics and a state per (check, row)."""

from __future__ import annotations

import math
from array import array

from monitor.config import ThresholdRow
from monitor.models import CheckResult, Level, RowEvaluation

# Metrics computed over a row's window rather than taken from the latest run.
DERIVED = ("latency_p95_ms", "latency_p99_ms", "error_rate_pct", "availability_pct")
# A float32 time offset below 2**14 s is exact to the millisecond (ulp 2**-10 s).
_REBASE_S = 2.0**14


def level_of(row: ThresholdRow, value: float) -> tuple[Level, float | None]:
    """The severity `value` reaches on `row`, and the threshold it crossed."""
    if row.critical is not None and row.breaches(value, row.critical):
        return Level.CRITICAL, row.critical
    if row.warning is not None and row.breaches(value, row.warning):
        return Level.WARNING, row.warning
    return Level.OK, None


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of values at or below it."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class Window:
    """A check's recent runs: enough for the longest window any of its derived rows needs.

    Runs are (time, latency_ms) pairs in one flat array of 4-byte floats, a failed run's latency
    NaN, times as offsets from `_base` (moved forward before they lose millisecond precision).
    Why flat: every check keeps one for the daemon's life, where tuples of floats are far larger.
    """

    __slots__ = ("_base", "_runs", "span_s")

    def __init__(self, span_s: float) -> None:
        self.span_s = span_s
        self._base = 0.0
        self._runs = array("f")  # time - _base, latency_ms, time - _base, latency_ms, ... oldest first

    def add(self, now: float, result: CheckResult) -> None:
        runs = self._runs
        if now - self._base >= _REBASE_S:
            self._rebase(runs[0] + self._base if runs else now)
        runs.append(now - self._base)
        runs.append(result.latency_ms if result.up else math.nan)
        start = self._start(now - self.span_s)
        if start > 0:
            del runs[:start]

    def _rebase(self, base: float) -> None:
        runs, shift = self._runs, base - self._base
        for i in range(0, len(runs), 2):
            runs[i] -= shift
        self._base = base

    def _start(self, horizon: float) -> int:
        """Index of the first run after `horizon`."""
        runs, index, horizon = self._runs, 0, horizon - self._base
        while index < len(runs) and runs[index] <= horizon:
            index += 2
        return index

    def derived(self, metric: str, window_s: float, now: float) -> float | None:
        """A derived metric over the runs of the last `window_s`; None when it has no data.

        Latency percentiles use successful runs only: a refused connection is fast and a
        timeout is the timeout, neither says how fast the service answers (`up` covers them).
        """
        latencies = self._runs[self._start(now - window_s) + 1 :: 2]
        if not latencies:
            return None
        if metric in ("error_rate_pct", "availability_pct"):
            failed = sum(1 for latency in latencies if latency != latency)  # NaN: a failed run
            rate = failed / len(latencies) * 100
            return rate if metric == "error_rate_pct" else 100 - rate
        succeeded = sorted(latency for latency in latencies if latency == latency)
        if not succeeded:
            return None
        # Rounded to the microsecond: the window keeps 4-byte floats (1.2345 would show as 1.2345000505).
        return round(percentile(succeeded, 95 if metric == "latency_p95_ms" else 99), 3)


class CheckEvaluator:
    """Evaluates every applicable row of one check after each of its runs: how bad each row's
    value is now. Whether that makes an alert pending, firing or resolved is alerting's to count.

    Each row's last value and level live in flat arrays; the common, all-clear run allocates nothing.
    """

    __slots__ = ("_applied", "_evaluated", "_levels", "_values", "check", "rows", "window")

    def __init__(self, check: str, rows: dict[str, ThresholdRow]) -> None:
        self.check = check
        self.rows = rows  # often one object shared by every check with the same table: read-only
        self._values = array("d", bytes(8 * len(rows)))  # each row's last value, in `rows` order
        self._levels = array("b", bytes(len(rows)))  # each row's last Level
        self._applied = 0  # bit i: row i has applied at least once
        self._evaluated = 0  # bit i: row i applied to the latest run
        self.window = Window(max((r.window_s for m, r in rows.items() if m in DERIVED), default=0.0))

    def observe(self, result: CheckResult, now: float) -> bool:
        """Evaluate one run; True when a row that applied to it breaches."""
        window = self.window
        window.add(now, result)
        values, levels = self._values, self._levels
        evaluated, breaching = 0, False
        for i, (metric, row) in enumerate(self.rows.items()):
            value = window.derived(metric, row.window_s, now) if metric in DERIVED else result.sample(metric)
            if value is None:
                continue  # the run did not produce it: the row stays as it was
            evaluated |= 1 << i
            values[i] = value
            level = levels[i] = level_of(row, value)[0]
            breaching = breaching or level > Level.OK
        self._applied |= evaluated
        self._evaluated = evaluated
        return breaching

    def evaluations(self) -> list[RowEvaluation]:
        """The rows that applied to the latest run, as alerting counts them."""
        out = []
        for i, (metric, row) in enumerate(self.rows.items()):
            if self._evaluated >> i & 1:
                value = self._values[i]
                level, threshold = level_of(row, value)
                out.append(
                    RowEvaluation(
                        metric, level, value, threshold, row.direction, row.trigger_after, row.resolve_after
                    )
                )
        return out

    def applied(self) -> list[str]:
        """The rows that have applied at least once, in table order."""
        return [metric for i, metric in enumerate(self.rows) if self._applied >> i & 1]

    def levels(self) -> dict[str, Level]:
        """Each applied row's level on its latest value: a single run's judgement (`monitor once`)."""
        applied = self._applied
        return {metric: Level(self._levels[i]) for i, metric in enumerate(self.rows) if applied >> i & 1}

    @property
    def derived(self) -> dict[str, float]:
        """The latest derived values (p95, error rate, ...), exported as metrics: each is its
        row's last evaluated value."""
        return {
            metric: self._values[i]
            for i, metric in enumerate(self.rows)
            if metric in DERIVED and self._applied >> i & 1
        }
