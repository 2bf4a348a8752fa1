"""Run history: hourly rollups per check (runs, failures, latency p50/p95/max) in the state store
for `monitor.history`, and the uptime and latency views made from them."""

from __future__ import annotations

import asyncio
import math
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from monitor.clock import Clock
from monitor.models import iso
from monitor.store import HourRow, Store

RECENT_HOURS = 24  # closed hours kept in memory in full: the sparkline, the 24 h uptime, the API's default
DAYS = 30  # UTC days whose totals are kept in memory: the 7 d and 30 d uptime
UPTIME_WINDOWS = {"24h": 24, "7d": 7, "30d": 30}  # "24h" in hours, the others in UTC days

# The open hour's latencies are counted in log buckets, 4 to an octave (each value within 9 %
# of its bucket's middle) from 1/64 ms to 2^17 ms (131 s): a fixed array of 92 counters per check.
_PER_OCTAVE = 4
_LOW_OCTAVE = -6
_BUCKETS = (17 - _LOW_OCTAVE) * _PER_OCTAVE
_COUNT_MAX = 65535  # an 'H' counter; at that, every counter is halved (the quantiles stay put)
_NO_COUNTS = array("H", bytes(2 * _BUCKETS))
_EMPTY_HOUR = array("f", [0.0, 0.0, math.nan, math.nan, math.nan])
_FIELDS = 5  # of a closed hour in `_Track.recent`: runs, failures, p50, p95, max (NaN: none)


def _bucket(latency_ms: float) -> int:
    if latency_ms <= 0.0:
        return 0
    return min(max(int((math.log2(latency_ms) - _LOW_OCTAVE) * _PER_OCTAVE), 0), _BUCKETS - 1)


def _bucket_ms(index: int) -> float:
    """The middle (geometric) of a bucket."""
    return float(2.0 ** ((index + 0.5) / _PER_OCTAVE + _LOW_OCTAVE))


def _quantiles(counts: array[int], max_ms: float | None) -> tuple[float | None, float | None]:
    """p50 and p95: the middle of the bucket holding each (at most the hour's max)."""
    if max_ms is None:
        return None, None
    cumulative = list(accumulate(counts))
    total = cumulative[-1]
    if total == 0:  # a clock set back can leave a max without counts
        return None, None
    p50 = bisect_left(cumulative, max(1, math.ceil(0.5 * total)))
    p95 = bisect_left(cumulative, max(1, math.ceil(0.95 * total)))
    return min(_bucket_ms(p50), max_ms), min(_bucket_ms(p95), max_ms)


def _mix(a: float | None, a_runs: int, b: float | None, b_runs: int) -> float | None:
    if a is None or a_runs == 0:
        return b
    if b is None or b_runs == 0:
        return a
    return (a * a_runs + b * b_runs) / (a_runs + b_runs)


def _none(value: float) -> float | None:
    return None if math.isnan(value) else value


class _Track:
    """One check's history in memory: the open hour (counters and a latency histogram), its 24
    closed hours before it and the run totals of its 30 UTC days up to the open one."""

    __slots__ = ("counts", "days", "failures", "hour", "max_ms", "recent", "runs", "written")

    def __init__(self, hour: int) -> None:
        self.hour = hour  # the open hour, in hours since the epoch
        self.runs = 0
        self.failures = 0
        self.max_ms: float | None = None  # of the runs that succeeded
        self.counts = array("H", _NO_COUNTS)
        self.written = 0  # `runs` when the open hour was last stored
        self.recent = array("f", _EMPTY_HOUR * RECENT_HOURS)  # slot hour % 24: hours [hour-24, hour)
        self.days = array("I", bytes(8 * DAYS))  # slot day % 30: (runs, failures) of closed hours

    def observe(self, up: bool, latency_ms: float) -> None:
        self.runs += 1
        if not up:
            self.failures += 1
            return
        counts, i = self.counts, _bucket(latency_ms)
        if counts[i] == _COUNT_MAX:
            for j in range(_BUCKETS):
                counts[j] >>= 1
        counts[i] += 1
        if self.max_ms is None or latency_ms > self.max_ms:
            self.max_ms = float(latency_ms)

    def set_hour(self, hour: int, row: HourRow) -> None:
        """A closed hour (within the 24 before the open one) as loaded or as it closed."""
        i = (hour % RECENT_HOURS) * _FIELDS
        values = (row.p50_ms, row.p95_ms, row.max_ms)
        self.recent[i : i + _FIELDS] = array(
            "f", [row.runs, row.failures, *(math.nan if v is None else v for v in values)]
        )

    def add_day(self, day: int, runs: int, failures: int) -> None:
        """Runs of closed hours of `day`; none outside the 30 days up to the open hour's."""
        today = self.hour // 24
        if not today - DAYS < day <= today:
            return
        i = (day % DAYS) * 2
        self.days[i] += runs
        self.days[i + 1] += failures

    def close(self, row: HourRow | None, hour: int) -> None:
        """The open hour (its row, None without runs) is closed and `hour` opened."""
        old, old_day, day = self.hour, self.hour // 24, hour // 24
        if hour - old > RECENT_HOURS:
            self.recent = array("f", _EMPTY_HOUR * RECENT_HOURS)
        else:
            for h in range(old + 1, hour):
                i = (h % RECENT_HOURS) * _FIELDS
                self.recent[i : i + _FIELDS] = _EMPTY_HOUR
            if row is None:
                i = (old % RECENT_HOURS) * _FIELDS
                self.recent[i : i + _FIELDS] = _EMPTY_HOUR
            else:
                self.set_hour(old, row)
        self.add_day(old_day, self.runs, self.failures)
        if day - old_day >= DAYS:
            self.days = array("I", bytes(8 * DAYS))
        else:
            for d in range(old_day + 1, day + 1):
                self.days[(d % DAYS) * 2] = self.days[(d % DAYS) * 2 + 1] = 0
        self.hour, self.runs, self.failures, self.max_ms, self.written = hour, 0, 0, None, 0
        self.counts[:] = _NO_COUNTS

    def closed(self, hour: int) -> tuple[int, int, float | None, float | None, float | None] | None:
        """A closed hour held in memory: runs, failures, p50, p95, max; None without runs."""
        if not self.hour - RECENT_HOURS <= hour < self.hour:
            return None
        i = (hour % RECENT_HOURS) * _FIELDS
        runs = int(self.recent[i])
        if runs == 0:
            return None
        r = self.recent
        return runs, int(r[i + 1]), _none(r[i + 2]), _none(r[i + 3]), _none(r[i + 4])

    def day_total(self, day: int) -> tuple[int, int]:
        """Runs and failures of one UTC day's closed hours held in memory."""
        today = self.hour // 24
        if not today - DAYS < day <= today:
            return 0, 0
        i = (day % DAYS) * 2
        return self.days[i], self.days[i + 1]


class History:
    """Every check's run history: `record` is called once per run (O(1): counters and one
    histogram bucket of the open hour); `flush` stores the hours' rows through the store's one
    writer in one transaction (the daemon calls it every minute and at stop); `load` reads them
    back at start.

    `keep_s` 0 keeps none: nothing is recorded or stored."""

    def __init__(self, store: Store, clock: Clock, keep_s: float) -> None:
        self.store = store
        self.clock = clock
        self.keep_hours = math.ceil(keep_s / 3600)
        self._tracks: dict[str, _Track] = {}
        # A restart inside an hour adds its runs to the stored row's; the latency quantiles are
        # the run-weighted mean of the stored row's and this process's. {check: (ok runs, p50, p95)}
        self._carried: dict[str, tuple[int, float | None, float | None]] = {}
        self._closed: list[HourRow] = []  # closed hours not stored as closed yet

    @property
    def enabled(self) -> bool:
        return self.keep_hours > 0

    # ------------------------------------------------------------ recording

    def record(self, name: str, up: bool, latency_ms: float, now: float) -> None:
        if not self.keep_hours:
            return
        hour = int(now // 3600)
        track = self._tracks.get(name)
        if track is None:
            track = self._tracks[name] = _Track(hour)
        elif hour > track.hour:
            self._close(name, track, hour)
        track.observe(up, latency_ms)  # a clock set back counts in the open hour

    def _close(self, name: str, track: _Track, hour: int) -> None:
        row = self._row(name, track) if track.runs else None
        if row is not None:
            self._closed.append(row)
        self._carried.pop(name, None)
        track.close(row, hour)

    def _row(self, name: str, track: _Track) -> HourRow:
        """The open hour's row, with what a restart inside it carried over."""
        p50, p95 = _quantiles(track.counts, track.max_ms)
        if (carried := self._carried.get(name)) is not None:
            carried_ok, carried_p50, carried_p95 = carried
            own_ok = track.runs - track.failures - carried_ok
            p50, p95 = _mix(p50, own_ok, carried_p50, carried_ok), _mix(p95, own_ok, carried_p95, carried_ok)
        return HourRow(name, track.hour, track.runs, track.failures, p50, p95, track.max_ms)

    def keep_only(self, names: Iterable[str]) -> None:
        """After a reload: checks no longer configured are forgotten (their stored rows age out)."""
        wanted = set(names)
        for name in [n for n in self._tracks if n not in wanted]:
            del self._tracks[name]
            self._carried.pop(name, None)

    # ------------------------------------------------------------ the store

    async def load(self, names: Iterable[str]) -> None:
        """At start, for `names`: the day totals of the last 30 days, the stored hours of the
        last day; and an hour a stopped process left open, now closed (and so stored next)."""
        if not self.keep_hours:
            return
        wanted = set(names)
        hour = int(self.clock.now() // 3600)
        since_day = max(hour // 24 - DAYS + 1, (hour - self.keep_hours + 1) // 24)
        tracks = {name: _Track(hour) for name in wanted}
        for total in await self.store.load_days(since_day):
            if (track := tracks.get(total.check)) is not None:
                track.add_day(total.day, total.runs, total.failures)
        for row in await self.store.load_open_hours(hour):
            self._closed.append(row)  # checks no longer configured too: none is left open
            if (track := tracks.get(row.check)) is not None:
                track.add_day(row.hour // 24, row.runs, row.failures)
        for row in await self.store.load_hours(hour - RECENT_HOURS, hour + 1):
            if (track := tracks.get(row.check)) is None:
                continue
            if row.hour < hour:
                track.set_hour(row.hour, row)
            else:
                track.runs = track.written = row.runs
                track.failures = row.failures
                track.max_ms = row.max_ms
                self._carried[row.check] = (row.runs - row.failures, row.p50_ms, row.p95_ms)
        self._tracks.update(tracks)

    def forget_closed(self) -> None:
        """A follower's (its leader stores the history): the hours it closed are not stored."""
        self._closed.clear()

    async def flush(self) -> None:
        """The hours recorded since the last flush, stored in one transaction (and the hours
        past `monitor.history` deleted). Raises StoreError; what was not stored is kept."""
        if not self.keep_hours:
            return
        closed, self._closed = self._closed, []
        rows: list[HourRow] = []
        stored: list[tuple[_Track, int, int]] = []
        for i, (name, track) in enumerate(list(self._tracks.items())):
            if track.runs != track.written:
                rows.append(self._row(name, track))
                stored.append((track, track.hour, track.runs))
            if i % 1000 == 999:
                await asyncio.sleep(0)  # 20,000 checks' quantiles in slices, the loop running between
        if not rows and not closed:
            return
        keep_from = int(self.clock.now() // 3600) - self.keep_hours + 1
        try:
            await self.store.save_hours(rows, closed, keep_from)
        except BaseException:
            self._closed[:0] = closed
            raise
        for track, hour, runs in stored:
            if track.hour == hour:
                track.written = runs

    # ------------------------------------------------------------ views

    def _now_hour(self, track: _Track | None) -> int:
        hour = int(self.clock.now() // 3600)
        return hour if track is None else max(hour, track.hour)

    def _hour(self, name: str, track: _Track, hour: int) -> HourRow | None:
        if hour == track.hour:
            return self._row(name, track) if track.runs else None
        if (closed := track.closed(hour)) is None:
            return None
        return HourRow(name, hour, *closed)

    def hours(self, name: str, since: float | None = None) -> list[dict[str, Any]]:
        """The hours held in memory (the open one and the 24 before it) from `since` (default:
        the last 24 hours), as the API shows them."""
        track = self._tracks.get(name)
        if track is None:
            return []
        now_hour = self._now_hour(track)
        first = now_hour - RECENT_HOURS + 1 if since is None else int(since // 3600)
        first = max(first, track.hour - RECENT_HOURS)
        found = (self._hour(name, track, h) for h in range(first, now_hour + 1))
        return [hour_view(row) for row in found if row is not None]

    def held_from(self, name: str) -> float:
        """The start of the oldest hour `hours` can show: older ones are read from the store."""
        track = self._tracks.get(name)
        hour = self._now_hour(track) if track is None else track.hour
        return float((hour - RECENT_HOURS) * 3600)

    async def stored_hours(self, name: str, since: float, before: float) -> list[dict[str, Any]]:
        rows = await self.store.load_hours(int(since // 3600), math.ceil(before / 3600), name)
        return [hour_view(row) for row in rows]

    def uptime_pct(self, name: str) -> dict[str, float | None]:
        """Successful runs, % of runs: over the open hour and the 23 before it, and over the
        current UTC day and the 6 (29) before it; None without runs."""
        track = self._tracks.get(name)
        if track is None:
            return dict.fromkeys(UPTIME_WINDOWS)
        now_hour = self._now_hour(track)
        open_day = track.hour // 24
        found: dict[str, float | None] = {}
        for window, size in UPTIME_WINDOWS.items():
            if window == "24h":
                first = now_hour - size + 1
                totals = [c[:2] for h in range(first, now_hour) if (c := track.closed(h)) is not None]
                in_open = first <= track.hour
            else:
                first = now_hour // 24 - size + 1
                totals = [track.day_total(d) for d in range(first, now_hour // 24 + 1)]
                in_open = first <= open_day
            runs = sum(t[0] for t in totals) + (track.runs if in_open else 0)
            failures = sum(t[1] for t in totals) + (track.failures if in_open else 0)
            found[window] = None if runs == 0 else round(100.0 * (runs - failures) / runs, 3)
        return found

    def latency_hours(self, name: str) -> list[float | None]:
        """The p95 latency (ms) of each of the last 24 hours, oldest first; None without a
        successful run."""
        track = self._tracks.get(name)
        now_hour = self._now_hour(track)
        if track is None:
            return [None] * RECENT_HOURS
        rows = (self._hour(name, track, h) for h in range(now_hour - RECENT_HOURS + 1, now_hour + 1))
        return [None if r is None or r.p95_ms is None else round(r.p95_ms, 3) for r in rows]


def hour_view(row: HourRow) -> dict[str, Any]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "hour": iso(row.hour * 3600.0),
        "runs": row.runs,
        "failures": row.failures,
        "latency_p50_ms": ms(row.p50_ms),
        "latency_p95_ms": ms(row.p95_ms),
        "latency_max_ms": ms(row.max_ms),
    }
