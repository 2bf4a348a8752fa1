"""Time windows in monitor.timezone: maintenance (cron and one-off) and business hours."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from alerts import windows
from alerts.config import BusinessHoursConfig, MaintenanceConfig
from alerts.windows import BusinessHours, MaintenanceWindows

LONDON = ZoneInfo("Europe/London")
DEPLOY = MaintenanceConfig(name="deployment window", checks=["backend-*"], cron="0 2 * * *", duration="2h")


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def local(*args: int) -> float:
    return datetime(*args, tzinfo=LONDON).timestamp()


# (time, covered?) for the 02:00-04:00 London window, walked in order: GMT, the spring change
# (01:00 GMT -> 02:00 BST on 29 March 2026), BST, the autumn change (25 October 2026), GMT.
DEPLOY_TIMELINE = [
    (utc(2026, 3, 28, 1, 59, 59), False),
    (utc(2026, 3, 28, 2, 0), True),  # GMT: 02:00 local is 02:00 UTC
    (utc(2026, 3, 28, 3, 59, 59), True),
    (utc(2026, 3, 28, 4, 0), False),
    (utc(2026, 3, 29, 0, 59, 59), False),
    (utc(2026, 3, 29, 1, 0), True),  # the clocks went forward at 01:00 UTC: 02:00 BST
    (utc(2026, 3, 29, 2, 59, 59), True),
    (utc(2026, 3, 29, 3, 0), False),  # 04:00 BST
    (utc(2026, 6, 1, 1, 0), True),
    (utc(2026, 6, 1, 3, 0), False),
    (utc(2026, 10, 25, 1, 59, 59), False),  # 01:59 GMT, after the second 01:00-02:00 of the night
    (utc(2026, 10, 25, 2, 0), True),
    (utc(2026, 10, 25, 3, 59, 59), True),
    (utc(2026, 10, 25, 4, 0), False),
]


def test_cron_window_boundaries_across_dst_asked_in_order() -> None:
    """One MaintenanceWindows asked as time goes on: what it keeps is right at each boundary."""
    maintenance = MaintenanceWindows([DEPLOY], LONDON)
    seen = [(t, maintenance.covering("backend-api", t) is not None) for t, _ in DEPLOY_TIMELINE]
    assert seen == DEPLOY_TIMELINE


@pytest.mark.parametrize(
    ("now", "covered"), DEPLOY_TIMELINE, ids=[f"{i:02d}" for i in range(len(DEPLOY_TIMELINE))]
)
def test_cron_window_boundaries_across_dst_asked_fresh(now: float, covered: bool) -> None:
    maintenance = MaintenanceWindows([DEPLOY], LONDON)
    assert (maintenance.covering("backend-api", now) == "deployment window") is covered


def test_cron_window_asked_back_in_time_is_asked_again() -> None:
    """A clock stepped back (NTP, a restored VM) gets the answer for that time, not the kept one."""
    maintenance = MaintenanceWindows([DEPLOY], LONDON)
    assert maintenance.covering("backend-api", utc(2026, 3, 28, 3, 0)) is not None
    assert maintenance.covering("backend-api", utc(2026, 3, 28, 1, 0)) is None
    assert maintenance.covering("backend-api", utc(2026, 3, 27, 3, 0)) is not None


def test_window_covers_only_its_checks() -> None:
    maintenance = MaintenanceWindows(
        [DEPLOY, MaintenanceConfig(name="db", checks=["database"], cron="0 3 * * *", duration="30m")], LONDON
    )
    inside_both = utc(2026, 1, 5, 3, 10)
    assert maintenance.covering("backend-api", inside_both) == "deployment window"
    assert maintenance.covering("database", inside_both) == "db"
    assert maintenance.covering("frontend", inside_both) is None
    assert maintenance.covering("api-backend", inside_both) is None  # the glob is anchored


def one_off(**fields: Any) -> MaintenanceConfig:
    return MaintenanceConfig.model_validate({"name": "migration", "checks": ["*"], **fields})


@pytest.mark.parametrize(
    "window",
    [
        one_off(start="2026-06-01T01:00:00Z", end="2026-06-01T02:00:00Z"),
        one_off(start="2026-06-01T03:00:00+02:00", end="2026-06-01T04:00:00+02:00"),
        one_off(start="2026-06-01T02:00:00", end="2026-06-01T03:00:00"),  # naive: BST in London
        # Start with an offset, end without: each read on its own. The config loader rejects
        # this mix ("both with or both without an offset"); the window reads it all the same.
        MaintenanceConfig.model_construct(
            name="migration",
            checks=["*"],
            cron=None,
            duration=None,
            start=datetime(2026, 6, 1, 1, 0, tzinfo=UTC),
            end=datetime(2026, 6, 1, 3, 0),
        ),
    ],
    ids=["utc", "offset", "naive", "start-offset-end-naive"],
)
def test_one_off_window_from_01_to_02_utc(window: MaintenanceConfig) -> None:
    times = [
        utc(2026, 6, 1, 0, 59, 59),
        utc(2026, 6, 1, 1, 0),
        utc(2026, 6, 1, 1, 59, 59),
        utc(2026, 6, 1, 2, 0),
    ]
    in_order = MaintenanceWindows([window], LONDON)
    assert [in_order.covering("backend-api", t) is not None for t in times] == [False, True, True, False]
    fresh = [MaintenanceWindows([window], LONDON).covering("backend-api", t) is not None for t in times]
    assert fresh == [False, True, True, False]
    assert in_order.covering("backend-api", utc(2027, 6, 1)) is None  # long over


class Counted:
    """Wraps alerts.windows._occurrence, counting its calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._real = windows._occurrence
        monkeypatch.setattr(windows, "_occurrence", self)

    def __call__(self, *args: Any) -> tuple[float, bool]:
        self.calls += 1
        return self._real(*args)


def test_cron_occurrence_computed_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    occurrence = Counted(monkeypatch)
    maintenance = MaintenanceWindows([DEPLOY], LONDON)
    start, end = local(2026, 11, 24, 2, 0), local(2026, 11, 24, 4, 0)
    step = (end - start) / 1000
    answers = {maintenance.covering("backend-api", start + i * step) for i in range(1000)}
    assert answers == {"deployment window"}
    assert occurrence.calls == 1
    # Ended: asked once more, then that answer holds until the next start, 22 hours on.
    gap = (local(2026, 11, 25, 2, 0) - end) / 1000
    answers = {maintenance.covering("backend-api", end + i * gap) for i in range(1000)}
    assert answers == {None}
    assert occurrence.calls == 2
    assert maintenance.covering("backend-api", local(2026, 11, 25, 2, 0)) == "deployment window"
    assert occurrence.calls == 3


def test_occurrence_not_computed_for_checks_the_window_does_not_cover(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    occurrence = Counted(monkeypatch)
    maintenance = MaintenanceWindows([DEPLOY], LONDON)
    for i in range(100):
        assert maintenance.covering("database", local(2026, 11, 24, 2, 0) + i) is None
    assert occurrence.calls == 0


def test_one_off_occurrence_computed_once_before_during_and_after(monkeypatch: pytest.MonkeyPatch) -> None:
    occurrence = Counted(monkeypatch)
    window = one_off(start="2026-06-01T01:00:00Z", end="2026-06-01T02:00:00Z")
    maintenance = MaintenanceWindows([window], LONDON)
    for t in range(int(utc(2026, 6, 1, 0, 0)), int(utc(2026, 6, 1, 3, 0)), 10):
        maintenance.covering("backend-api", t)
    assert occurrence.calls == 3


# ---------------------------------------------------------------- business hours

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]
DAY = BusinessHours(BusinessHoursConfig(days=WEEKDAYS, start="09:00", end="18:00"), LONDON)
NIGHT = BusinessHours(BusinessHoursConfig(days=WEEKDAYS, start="22:00", end="06:00"), LONDON)

# Monday 23 November 2026 onwards (GMT: London time is UTC).
HOURS = [
    ("mon 08:59", local(2026, 11, 23, 8, 59), False, False),
    ("mon 09:00", local(2026, 11, 23, 9, 0), True, False),
    ("mon 17:59", local(2026, 11, 23, 17, 59), True, False),
    ("mon 18:00", local(2026, 11, 23, 18, 0), False, False),
    ("mon 21:59", local(2026, 11, 23, 21, 59), False, False),
    ("mon 22:00", local(2026, 11, 23, 22, 0), False, True),
    ("tue 05:59", local(2026, 11, 24, 5, 59), False, True),  # Monday's night
    ("tue 06:00", local(2026, 11, 24, 6, 0), False, False),
    ("fri 23:00", local(2026, 11, 27, 23, 0), False, True),
    ("sat 03:00", local(2026, 11, 28, 3, 0), False, True),  # Friday's night
    ("sat 10:00", local(2026, 11, 28, 10, 0), False, False),
    ("sat 22:00", local(2026, 11, 28, 22, 0), False, False),
    ("sun 03:00", local(2026, 11, 29, 3, 0), False, False),  # Saturday's night: none
    ("mon 03:00", local(2026, 11, 30, 3, 0), False, False),  # Sunday's night: none
    ("bst mon 22:30", local(2026, 6, 1, 22, 30), False, True),  # 21:30 UTC, in summer time
]


@pytest.mark.parametrize(("now", "day", "night"), [h[1:] for h in HOURS], ids=[h[0] for h in HOURS])
def test_business_hours_day_and_night_shift(now: float, day: bool, night: bool) -> None:
    assert DAY.open(now) is day
    assert NIGHT.open(now) is night
