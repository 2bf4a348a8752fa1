"""Scheduling: first runs spread over the interval, no overlapping runs, lag recorded."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter

from monitor.scheduler import SLOT_S, Scheduler, first_run_offset


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
    loop = asyncio.get_running_loop()
    now = loop.time()
    for i in range(1000):
        scheduler.add(f"check-{i}", 30.0)
    starts = [due - now for due in scheduler.jobs().values()]
    assert len(starts) == 1000
    per_second = Counter(int(s) for s in starts)
    assert max(per_second.values()) < 66
    assert min(starts) >= 0 and max(starts) < 30.1


async def test_a_stalled_loop_gives_one_late_run_then_the_phase_is_kept() -> None:
    starts: list[float] = []
    lags: list[float] = []
    loop = asyncio.get_running_loop()
    four = asyncio.Event()

    async def run(_: str) -> None:
        starts.append(loop.time())
        if len(starts) == 1:
            time.sleep(0.55)  # noqa: ASYNC251 -- the stall under test: no run can start for 5 intervals
        if len(starts) == 4:
            four.set()

    scheduler = Scheduler(run, lags.append, lambda _: None)
    scheduler.add("stalled", 0.1)
    phase = scheduler.jobs()["stalled"]
    scheduler.start()
    try:
        await asyncio.wait_for(four.wait(), 10)
    finally:
        scheduler.shutdown()
    assert lags[1] >= 0.4  # the run due during the stall started late, and its lag says so
    # ...but only once: the runs after it are back on the original phase, not a burst of 5.
    assert starts[2] - starts[1] > 0.02
    for start in starts[2:]:
        off_phase = (start - phase) % 0.1
        assert min(off_phase, 0.1 - off_phase) < 0.03
    assert len(starts) == 4


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


async def test_a_check_replaced_while_running_is_not_doubled_and_runs_again_after() -> None:
    release, first, second, skipped = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()
    starts = 0

    async def run(_: str) -> None:
        nonlocal starts
        starts += 1
        if starts == 1:
            first.set()
            await release.wait()
        else:
            second.set()

    scheduler = Scheduler(run, lambda _: None, lambda _: skipped.set())
    scheduler.add("reloaded", 0.05)
    scheduler.start()
    try:
        await asyncio.wait_for(first.wait(), 5)
        scheduler.add("reloaded", 0.05)  # a reload changed its definition mid-run
        await asyncio.wait_for(skipped.wait(), 5)
        assert starts == 1  # the new definition's first run waited for the old run
        release.set()
        await asyncio.wait_for(second.wait(), 5)  # ...and runs once the old one is over
    finally:
        scheduler.shutdown()


async def test_runs_due_close_together_start_in_one_wake_up_and_never_late_or_too_early() -> None:
    """200 checks of 1 s: about one due every 5 ms. Each wake-up of the loop starts those due
    within SLOT_S, so there are fewer wake-ups than runs, and no run starts more than SLOT_S
    before its time (nor late, on an idle loop)."""
    loop = asyncio.get_running_loop()
    starts: dict[str, tuple[float, float]] = {}  # name -> (when started, when due)

    async def run(name: str) -> None:
        if name not in starts:
            starts[name] = (loop.time(), scheduler.jobs()[name] - 1.0)  # due: the next one, less 1 s

    scheduler = Scheduler(run, lambda _: None, lambda _: None)
    for i in range(200):
        scheduler.add(f"check-{i}", 1.0)
    scheduler.start()
    try:
        await asyncio.sleep(1.1)
    finally:
        scheduler.shutdown()
    assert len(starts) == 200
    early = [due - started for started, due in starts.values()]
    assert max(early) <= SLOT_S + 0.001  # never earlier than the slot
    assert min(early) >= -0.05  # and not late on an idle loop
    times = sorted(started for started, _ in starts.values())
    wake_ups = 1 + sum(1 for a, b in itertools.pairwise(times) if b - a > 0.001)
    assert wake_ups <= 120  # about 1 s / SLOT_S; a wake-up per due run would be near 200
