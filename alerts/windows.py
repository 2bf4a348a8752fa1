"""Time windows in the configured time zone: maintenance, business hours, silences."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.config import BusinessHoursConfig, MaintenanceConfig
from monitor.models import iso
from monitor.plugins import optional_module

_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def matches(check: str, globs: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(check, g) for g in globs)


def _instant(when: datetime, tz: ZoneInfo) -> float:
    """A time without an offset is read in `monitor.timezone` (SPEC section 3)."""
    return (when if when.tzinfo is not None else when.replace(tzinfo=tz)).timestamp()


def one_off_bounds(window: MaintenanceConfig, tz: ZoneInfo) -> tuple[float, float]:
    """A start + end window's instants (Unix seconds), each of the two read on its own.

    Compared as instants: Python compares two datetimes of one zone by wall clock, which gets the
    repeated hour of a DST change wrong.
    """
    assert window.start is not None and window.end is not None
    return _instant(window.start, tz), _instant(window.end, tz)


@dataclass(frozen=True, slots=True)
class Silence:
    """A runtime silence made through the API: check globs, a time range, a comment."""

    id: str
    checks: tuple[str, ...]
    start: float
    end: float
    comment: str = ""
    created_by: str | None = None

    @classmethod
    def from_doc(cls, doc: object) -> Silence:
        """A stored silence; TypeError or ValueError for a row that could not be shown (written
        before the API checked its input, or by hand)."""
        if not isinstance(doc, dict):
            raise TypeError("not a JSON object")
        checks = doc.get("checks")
        if not isinstance(checks, list) or not all(isinstance(g, str) for g in checks):
            raise TypeError("checks: not a list of check name globs")
        silence = cls(**{**doc, "checks": tuple(checks)})  # TypeError: a missing or unknown key
        if not isinstance(silence.id, str) or not isinstance(silence.comment, str):
            raise TypeError("id and comment must be strings")
        if not isinstance(silence.created_by, str | None):
            raise TypeError("created_by: not a string")
        for name, value in (("start", silence.start), ("end", silence.end)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"{name}: not a number")
            try:
                iso(value)
            except (OverflowError, OSError) as exc:  # NaN, infinite, outside years 1..9999
                raise ValueError(f"{name}: {exc}") from None
        return silence

    def active(self, now: float) -> bool:
        return self.start <= now < self.end

    def covers(self, check: str, now: float) -> bool:
        return self.active(now) and matches(check, self.checks)


class MaintenanceWindows:
    """The maintenance windows of a config, asked "is this check covered now?" on every decision.

    A cron window's current occurrence is computed once and kept until it ends (or the next one
    begins), not once per alert per tick.
    """

    def __init__(self, windows: Iterable[MaintenanceConfig], tz: ZoneInfo) -> None:
        self._tz = tz
        self._windows = tuple(windows)
        # Per window: (computed at, valid until, active): the answer holds for now in [at, until).
        self._known: list[tuple[float, float, bool]] = [(0.0, 0.0, False)] * len(self._windows)

    def covering(self, check: str, now: float) -> str | None:
        """The name of a window covering `check` at `now`, if any."""
        for i, window in enumerate(self._windows):
            if matches(check, window.checks) and self._active(i, now):
                return window.name
        return None

    def _active(self, i: int, now: float) -> bool:
        at, until, active = self._known[i]
        if not at <= now < until:
            until, active = _occurrence(self._windows[i], now, self._tz)
            self._known[i] = (now, until, active)
        return active


def _occurrence(window: MaintenanceConfig, now: float, tz: ZoneInfo) -> tuple[float, bool]:
    """(until when the answer holds, whether `window` is active at `now`)."""
    if window.cron is None or not window.duration:
        start, end = one_off_bounds(window, tz)
        if now < start:
            return start, False
        return (end, True) if now < end else (math.inf, False)
    croniter = optional_module("croniter").croniter
    # croniter walks wall-clock time in tz (DST-aware): the latest start at or before now, the next after.
    local = datetime.fromtimestamp(now, tz)
    last_start = croniter(window.cron, local + timedelta(microseconds=1)).get_prev(datetime).timestamp()
    next_start = croniter(window.cron, local).get_next(datetime).timestamp()
    end = last_start + window.duration
    return (min(end, next_start), True) if now < end else (next_start, False)


def next_occurrence(window: MaintenanceConfig, now: float, tz: ZoneInfo) -> tuple[float, float] | None:
    """The occurrence of `window` in progress at `now`, else its next one, as (start, end); None
    for a one-off window that is over (what the status page lists as upcoming)."""
    if window.cron is None or not window.duration:
        start, end = one_off_bounds(window, tz)
        return (start, end) if now < end else None
    croniter = optional_module("croniter").croniter
    local = datetime.fromtimestamp(now, tz)
    last_start = croniter(window.cron, local + timedelta(microseconds=1)).get_prev(datetime).timestamp()
    if now < last_start + window.duration:
        return last_start, last_start + window.duration
    next_start = croniter(window.cron, local).get_next(datetime).timestamp()
    return next_start, next_start + window.duration


class BusinessHours:
    """`[business_hours]` in `monitor.timezone`; a `start` after `end` is a night shift, open from
    start on each listed day until end the next morning."""

    def __init__(self, hours: BusinessHoursConfig, tz: ZoneInfo) -> None:
        self._days = frozenset(_WEEKDAYS.index(d) for d in hours.days)
        self._start = _minutes(hours.start)
        self._end = _minutes(hours.end)
        self._tz = tz

    def open(self, now: float) -> bool:
        local = datetime.fromtimestamp(now, self._tz)
        minutes, day = local.hour * 60 + local.minute, local.weekday()
        if self._start < self._end:
            return day in self._days and self._start <= minutes < self._end
        if minutes >= self._start:
            return day in self._days
        return minutes < self._end and (day - 1) % 7 in self._days


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)
