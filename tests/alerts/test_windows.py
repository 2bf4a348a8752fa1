"""One-off maintenance windows: start and end each read on its own (an offset, or monitor.timezone)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.config import MaintenanceConfig
from alerts.windows import MaintenanceWindows
from monitor.config import Config, ConfigError, parse_config

CHECK = '[[checks]]\nname = "web"\ntype = "http"\nurl = "http://127.0.0.1:8080/health"\n'


def window_config(timezone: str, start: str, end: str) -> Config:
    text = (
        f'[monitor]\ntimezone = "{timezone}"\n'
        + CHECK
        + f'[[maintenance]]\nname = "upgrade"\nchecks = ["web"]\nstart = "{start}"\nend = "{end}"\n'
    )
    return parse_config(text, {})


def maintenance_active(window: MaintenanceConfig, now: float, tz: ZoneInfo) -> bool:
    return MaintenanceWindows([window], tz).covering("web", now) is not None


def in_maintenance(check: str, windows: list[MaintenanceConfig], now: float, tz: ZoneInfo) -> str | None:
    return MaintenanceWindows(windows, tz).covering(check, now)


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# Paris is UTC+1 in December: a time without an offset there is one hour ahead of UTC.
@pytest.mark.parametrize(
    ("start", "end", "first_in", "first_out"),
    [
        ("2026-12-01T02:00:00+00:00", "2026-12-01T05:00:00", "2026-12-01T02:00:00Z", "2026-12-01T04:00:00Z"),
        ("2026-12-01T03:00:00", "2026-12-01T04:00:00Z", "2026-12-01T02:00:00Z", "2026-12-01T04:00:00Z"),
        # The end's wall clock reads earlier than the start's, but it is the later instant.
        ("2026-12-01T04:30:00+05:00", "2026-12-01T01:00:00", "2026-11-30T23:30:00Z", "2026-12-01T00:00:00Z"),
    ],
    ids=["start-offset-end-naive", "start-naive-end-offset", "end-wall-clock-earlier"],
)
def test_mixed_offsets_accepted_and_active_at_the_right_instants(
    start: str, end: str, first_in: str, first_out: str
) -> None:
    config = window_config("Europe/Paris", start, end)
    tz = ZoneInfo(config.monitor.timezone)
    [window] = config.maintenance
    opens, closes = at(first_in), at(first_out)
    assert not maintenance_active(window, opens - 0.001, tz)
    assert maintenance_active(window, opens, tz)
    assert maintenance_active(window, closes - 0.001, tz)
    assert not maintenance_active(window, closes, tz)
    assert in_maintenance("web", config.maintenance, opens, tz) == "upgrade"
    assert in_maintenance("web", config.maintenance, closes, tz) is None
    assert in_maintenance("other", config.maintenance, opens, tz) is None


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-12-01T04:00:00Z", "2026-12-01T05:00:00"),  # 05:00 in Paris is 04:00Z: empty
        ("2026-12-01T05:30:00", "2026-12-01T04:15:00Z"),  # 05:30 in Paris is 04:30Z: reversed
    ],
    ids=["start-offset-end-naive", "start-naive-end-offset"],
)
def test_mixed_offsets_compared_as_instants(start: str, end: str) -> None:
    with pytest.raises(ConfigError) as info:
        window_config("Europe/Paris", start, end)
    [error] = info.value.errors
    assert error.startswith("maintenance[0].end: "), error


def test_naive_times_across_the_autumn_clock_change() -> None:
    """New York repeats 01:00-02:00 on 2026-11-01: 01:30 (EDT, the first) is 05:30Z. At 06:20Z
    the wall clock reads 01:20 again (EST), still inside a window open until 03:00 (08:00Z)."""
    config = window_config("America/New_York", "2026-11-01T01:30:00", "2026-11-01T03:00:00")
    tz = ZoneInfo("America/New_York")
    [window] = config.maintenance
    assert datetime.fromtimestamp(at("2026-11-01T06:20:00Z"), tz).hour == 1
    assert not maintenance_active(window, at("2026-11-01T05:29:59Z"), tz)
    assert maintenance_active(window, at("2026-11-01T05:30:00Z"), tz)
    assert maintenance_active(window, at("2026-11-01T06:20:00Z"), tz)
    assert not maintenance_active(window, at("2026-11-01T08:00:00Z"), tz)
