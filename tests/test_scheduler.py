"""Scheduling: first runs spread over the interval, no overlapping runs, lag recorded."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

from monitor.scheduler import Scheduler, first_run_offset


def test_first_runs_of_1000_checks_spread_over_the_interval() -> None:
    names = [f"check-{i}" for i in range(1000)]
    offsets = [first_run_offset(n, 30.0) for n in names]
    assert all(0 <= o < 30 for o in offsets)
    per_second = Counter(int(o) for o in offsets)
    assert len(per_second) == 30  # every second of the interval gets some
    assert max(per_second.values()) < 66  # 33 expected; never a thundering herd
    assert offsets == [first_run_offset(n, 30.0) for n in names]  # stable across restarts


async def test_scheduled_jobs_start_spread_not_at_once() -> None:
    async def run(_: str) -> None:
        return None

    scheduler = Scheduler(run, lambda _: None, lambda _: None)
    now = datetime.now(UTC)
    scheduler.start()
    try:
        for i in range(1000):
            scheduler.add(f"check-{i}", 30.0, now=now)
        starts = [
            (job.trigger.start_date - now).total_seconds() for job in scheduler._aps.get_jobs()
        ]
    finally:
        scheduler.shutdown()
    assert len(starts) == 1000
    per_second = Counter(int(s) for s in starts)
    assert max(per_second.values()) < 66
    assert min(starts) >= 0 and max(starts) < 30


async def test_overlapping_run_is_skipped_and_counted() -> None:
    release = asyncio.Event()
    running = 0
    most = 0
    runs: list[str] = []
    skipped: list[str] = []
    lags: list[float] = []

    async def run(name: str) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        runs.append(name)
        try:
            await release.wait()
        finally:
            running -= 1

    three_skipped = asyncio.Event()

    def skip(name: str) -> None:
        skipped.append(name)
        if len(skipped) >= 3:
            three_skipped.set()

    scheduler = Scheduler(run, lags.append, skip)
    scheduler.start()
    try:
        scheduler.add("slow", 0.05)
        await asyncio.wait_for(three_skipped.wait(), 10)
    finally:
        release.set()
        scheduler.shutdown()
    assert skipped[:3] == ["slow", "slow", "slow"]
    assert runs == ["slow"]  # the hanging run was never doubled
    assert most == 1
    assert lags and all(0 <= lag < 1 for lag in lags)
