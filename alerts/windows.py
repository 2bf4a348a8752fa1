"""Time windows in the configured time zone: maintenance, business hours, silences."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from alerts.config import BusinessHoursConfig, MaintenanceConfig

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


def maintenance_active(window: MaintenanceConfig, now: float, tz: ZoneInfo) -> bool:
    """Is `now` inside the window? Recurring windows start at each cron time, in `tz`."""
    if window.cron is not None and window.duration:
        local = datetime.fromtimestamp(now, tz)
        from croniter import croniter  # only configs with a cron window load it (as their validation did)

        # The latest start at or before now; croniter walks wall-clock time in tz (DST-aware).
        last_start = croniter(window.cron, local + timedelta(microseconds=1)).get_prev(datetime)
        return local < last_start + timedelta(seconds=window.duration)
    start, end = one_off_bounds(window, tz)
    return start <= now < end


def in_maintenance(check: str, windows: list[MaintenanceConfig], now: float, tz: ZoneInfo) -> str | None:
    """The name of a maintenance window covering `check` now, if any."""
    for window in windows:
        if matches(check, window.checks) and maintenance_active(window, now, tz):
            return window.name
    return None


def _clock(hhmm: str) -> tuple[int, int]:
    h, m = hhmm.split(":")
    return int(h), int(m)


def in_business_hours(hours: BusinessHoursConfig, now: float, tz: ZoneInfo) -> bool:
    local = datetime.fromtimestamp(now, tz)
    if _WEEKDAYS[local.weekday()] not in hours.days:
        return False
    minutes = local.hour * 60 + local.minute
    sh, sm = _clock(hours.start)
    eh, em = _clock(hours.end)
    return sh * 60 + sm <= minutes < eh * 60 + em


@dataclass(frozen=True, slots=True)
class Silence:
    """A runtime silence made through the API: check globs, a time range, a comment."""

    id: str
    checks: tuple[str, ...]
    start: float
    end: float
    comment: str = ""
    created_by: str | None = None

    def active(self, now: float) -> bool:
        return self.start <= now < self.end

    def covers(self, check: str, now: float) -> bool:
        return self.active(now) and matches(check, self.checks)
