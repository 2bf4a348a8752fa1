"""The few series the harness reads from the daemon's /metrics, and histogram quantiles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_RUNS = "monitor_check_runs_total{"
_LAG_BUCKET = 'monitor_scheduler_lag_seconds_bucket{le="'
_LAG_COUNT = "monitor_scheduler_lag_seconds_count "
_LAG_SUM = "monitor_scheduler_lag_seconds_sum "
RESULTS = ("success", "failure", "timeout", "error", "skipped")


@dataclass(slots=True)
class Scrape:
    """Counters summed over every check, and the scheduler-lag histogram (cumulative buckets)."""

    runs: dict[str, float] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0.0))
    lag_buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    lag_count: float = 0.0
    lag_sum: float = 0.0
    series: int = 0  # sample lines in the exposition
    size_bytes: int = 0

    def completed(self) -> float:
        """Runs that ended (every result but skipped)."""
        return sum(v for k, v in self.runs.items() if k != "skipped")


def parse(text: str) -> Scrape:
    scrape = Scrape(size_bytes=len(text))
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        scrape.series += 1
        if line.startswith(_RUNS):
            start = line.find('result="') + 8
            result = line[start : line.index('"', start)]
            scrape.runs[result] = scrape.runs.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
        elif line.startswith(_LAG_BUCKET):
            bound = line[len(_LAG_BUCKET) : line.index('"', len(_LAG_BUCKET))]
            scrape.lag_buckets[math.inf if bound == "+Inf" else float(bound)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith(_LAG_COUNT):
            scrape.lag_count = float(line.rsplit(" ", 1)[1])
        elif line.startswith(_LAG_SUM):
            scrape.lag_sum = float(line.rsplit(" ", 1)[1])
    return scrape


def bucket_delta(before: Scrape, after: Scrape) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the runs started between two scrapes, bounds ascending."""
    return [(b, after.lag_buckets[b] - before.lag_buckets.get(b, 0.0)) for b in sorted(after.lag_buckets)]


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """PromQL's histogram_quantile: linear within the bucket; in +Inf, the last finite bound."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def fraction_within(limit_s: float, buckets: list[tuple[float, float]]) -> float | None:
    """Share of runs whose lag was at most `limit_s` (which must be a bucket bound)."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    within = next((count for bound, count in buckets if bound >= limit_s), buckets[-1][1])
    return within / buckets[-1][1]
