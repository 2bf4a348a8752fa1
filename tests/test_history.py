"""Run history: hourly rollups per check on the fake clock, stored in batches through the one
writer, pruned past `monitor.history`, read back at start so uptime survives a restart."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from monitor.config import ConfigError, parse_config
from monitor.history import History
from monitor.store import MemoryStore, Store, StoreWriter
from tests.fakes.clock import FakeClock

HOUR = 3600.0
START = 1_794_988_800.0  # an hour's start: 2026-11-18T08:00:00Z
DAY_30 = 30 * 86400.0


def hours_since_epoch(ts: float) -> int:
    return int(ts // HOUR)


def run_hour(history: History, clock: FakeClock, name: str, failures: int, latency_ms: float) -> None:
    """360 runs, one every 10 s: the first `failures` fail, the others take `latency_ms`."""
    for i in range(360):
        history.record(name, i >= failures, latency_ms, clock.now())
        clock.advance(10)


def test_an_hour_rolls_up_runs_failures_and_latency_quantiles() -> None:
    clock = FakeClock(START)
    history = History(MemoryStore(), clock, DAY_30)
    latencies = [float(i) for i in range(1, 101)]  # 1..100 ms: p50 50, p95 95, max 100
    for i in range(200):
        up = i % 20 != 0  # 10 of 200 fail
        history.record("web", up, latencies[i % 100], START + i * 10)
    clock.advance(HOUR - 1)  # still inside the hour
    (row,) = history.hours("web")
    assert (row["hour"], row["runs"], row["failures"]) == ("2026-11-18T08:00:00.000Z", 200, 10)
    # Log buckets of a fourth of an octave: each quantile within 10 % of the exact one.
    assert row["latency_p50_ms"] == pytest.approx(50, rel=0.1)
    assert row["latency_p95_ms"] == pytest.approx(95, rel=0.1)
    assert row["latency_max_ms"] == 100.0  # exact, not bucketed
    assert history.uptime_pct("web") == {"24h": 95.0, "7d": 95.0, "30d": 95.0}


def test_hour_boundaries_the_last_24_hours_and_checks_without_runs() -> None:
    clock = FakeClock(START)
    history = History(MemoryStore(), clock, DAY_30)
    run_hour(history, clock, "api", failures=0, latency_ms=20.0)  # 08:00
    run_hour(history, clock, "api", failures=360, latency_ms=0.0)  # 09:00: every run failed
    clock.advance(2 * HOUR)  # 10:00 and 11:00 without runs; now 12:00, no run yet
    latencies = history.latency_hours("api")
    assert len(latencies) == 24
    assert latencies[-5] == pytest.approx(20.0, rel=0.1)  # 08:00, oldest first
    assert latencies[-4:] == [None, None, None, None]  # all failed; no runs; no runs; now
    assert latencies[:-5] == [None] * 19
    rows = history.hours("api")
    assert [(r["hour"][11:16], r["runs"], r["failures"]) for r in rows] == [
        ("08:00", 360, 0),
        ("09:00", 360, 360),
    ]
    assert rows[1]["latency_p95_ms"] is None  # no run succeeded
    assert history.uptime_pct("api") == {"24h": 50.0, "7d": 50.0, "30d": 50.0}
    # 25 hours after the last run, the 24 h window is empty; the day windows still count it.
    clock.advance(23 * HOUR)
    assert history.uptime_pct("api") == {"24h": None, "7d": 50.0, "30d": 50.0}
    assert history.latency_hours("api") == [None] * 24
    assert history.uptime_pct("never-ran") == {"24h": None, "7d": None, "30d": None}
    history.keep_only(["web"])  # a reload without "api": its history is let go
    assert history.uptime_pct("api") == {"24h": None, "7d": None, "30d": None}


def test_history_0_keeps_none_and_a_bad_value_names_the_key() -> None:
    assert parse_config("[monitor]\n").monitor.history == DAY_30
    config = parse_config('[monitor]\nhistory = "0"\n')
    history = History(MemoryStore(), FakeClock(START), config.monitor.history)
    history.record("web", True, 5.0, START)
    assert history.hours("web") == []
    assert history.uptime_pct("web") == {"24h": None, "7d": None, "30d": None}
    with pytest.raises(ConfigError) as caught:
        parse_config('[monitor]\nhistory = "a month"\n')
    assert caught.value.errors[0].startswith("monitor.history: ")


async def test_restart_keeps_uptime_and_merges_the_hour_it_happened_in(stores: Callable[[], Store]) -> None:
    clock = FakeClock(START)
    store = stores()
    await store.open()
    history = History(store, clock, DAY_30)
    run_hour(history, clock, "api", failures=36, latency_ms=40.0)  # 08:00: 90 % up
    run_hour(history, clock, "api", failures=0, latency_ms=40.0)  # 09:00: 100 %
    for i in range(180):  # half of 10:00, then a restart
        history.record("api", i >= 18, 80.0, clock.now())
        clock.advance(10)
    before = (history.uptime_pct("api"), history.latency_hours("api"), history.hours("api"))
    await history.flush()
    await store.close()

    store = stores()
    await store.open()
    try:
        restarted = History(store, clock, DAY_30)
        await restarted.load(["api"])
        assert (restarted.uptime_pct("api"), restarted.latency_hours("api"), restarted.hours("api")) == before
        # The rest of 10:00 after the restart: its runs add to the stored row's.
        for i in range(180):
            restarted.record("api", i >= 18, 40.0, clock.now())
            clock.advance(10)
        clock.advance(-1)  # the hour's last second
        await restarted.flush()
        stored = await store.load_hours(hours_since_epoch(START) + 2, check="api")
        assert [(r.runs, r.failures) for r in stored] == [(360, 36)]
        # Run-weighted mean of the two halves' quantiles (80 ms, then 40 ms).
        assert stored[0].p50_ms == pytest.approx(60.0, rel=0.1)
        assert stored[0].max_ms == 80.0
        total_runs, total_failures = 3 * 360, 36 + 0 + 36
        expected = round(100 * (total_runs - total_failures) / total_runs, 3)
        assert restarted.uptime_pct("api") == {"24h": expected, "7d": expected, "30d": expected}
    finally:
        await store.close()


async def test_an_hour_a_stopped_process_left_open_is_counted_once(stores: Callable[[], Store]) -> None:
    clock = FakeClock(START)
    store = stores()
    await store.open()
    try:
        history = History(store, clock, DAY_30)
        for i in range(100):  # 08:00, then the process stops at 08:16
            history.record("api", i >= 10, 5.0, clock.now())
            clock.advance(10)
        await history.flush()  # stored open: its hour had not ended
        for restart in (1, 2):  # started again at 09:16, then at 10:16
            clock.advance(HOUR)
            restarted = History(store, clock, DAY_30)
            await restarted.load(["api"])
            assert restarted.uptime_pct("api")["7d"] == 90.0
            await restarted.flush()  # 08:00, now closed, goes into its day's totals once
            days = await store.load_days(0)
            assert [(t.check, t.runs, t.failures) for t in days] == [("api", 100, 10)], restart
            assert await store.load_open_hours(hours_since_epoch(clock.now())) == []
    finally:
        await store.close()


async def test_a_batch_is_one_transaction_and_old_hours_are_pruned(stores: Callable[[], Store]) -> None:
    clock = FakeClock(START)
    store = StoreWriter(stores())
    await store.open()
    store.start()
    try:
        history = History(store, clock, 2 * HOUR)  # history = "2h"
        for name in (f"check-{i}" for i in range(500)):
            history.record(name, True, 3.0, clock.now())
        rounds = store.rounds
        await history.flush()
        assert store.rounds == rounds + 1  # 500 rows, one commit
        assert len(await store.load_hours(0)) == 500
        await history.flush()
        assert store.rounds == rounds + 1  # nothing new: nothing written

        clock.advance(HOUR)
        history.record("check-0", False, 0.0, clock.now())
        await history.flush()  # 09:00 kept with 08:00 (2 hours)
        assert {r.hour for r in await store.load_hours(0)} == {hours_since_epoch(START) + h for h in (0, 1)}
        clock.advance(HOUR)
        history.record("check-0", True, 2.0, clock.now())
        await history.flush()  # 10:00: 08:00 is past the 2 hours
        kept = await store.load_hours(0)
        assert sorted((r.check, r.hour - hours_since_epoch(START), r.failures) for r in kept) == [
            ("check-0", 1, 1),
            ("check-0", 2, 0),
        ]
        # One check's hours from the store, a `since` before anything stored walking nothing.
        assert [r.hour for r in await store.load_hours(-(10**9), check="check-0")] == [
            hours_since_epoch(START) + 1,
            hours_since_epoch(START) + 2,
        ]
    finally:
        await store.stop()
        await store.close()
