"""Check scheduling on the event loop's own timers: spread first runs, no overlaps, lag measured.

Why not APScheduler: its interval jobs cost far more CPU per run (README: Performance).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import zlib
from collections.abc import Awaitable, Callable

log = logging.getLogger("monitor.scheduler")
# Runs due within this of a wake-up start with it, up to this early (lateness, the lag, is not
# changed). A wake-up of the loop costs about what a refused connect does: at 2,000 runs a second,
# one per millisecond was a third of each run's CPU (README: Performance). It also covers the
# loop timers' millisecond resolution (a timer may fire just before its time).
SLOT_S = 0.010


def first_run_offset(name: str, interval_s: float) -> float:
    """Where in its interval a check first runs: stable per name, uniform over the interval.

    1,000 checks of 30 s then start about 33 a second instead of all at once, and a restart
    keeps each check's phase.
    """
    return zlib.crc32(name.encode()) / 2**32 * interval_s


class _Job:
    __slots__ = ("due", "interval_s", "name")

    def __init__(self, name: str, interval_s: float, due: float) -> None:
        self.name = name
        self.interval_s = interval_s
        self.due = due  # loop time of the next run

    def __lt__(self, other: _Job) -> bool:
        """Only heap entries due at the same instant compare jobs: by name, deterministically."""
        return self.name < other.name


class Scheduler:
    """Calls `run(name)` every interval of each added check, as a task of its own.

    - A run still going when the next one is due is not doubled: the due run is skipped and
      reported to `on_skip`.
    - After a stall (a suspended process, an overloaded loop) a check runs once, late, and then
      keeps its phase: missed runs are not made up in a burst.
    - `on_lag` gets, for every due run, how late it started (seconds).

    Due runs wait in one heap under a single loop timer set for the earliest; a wake-up starts
    every run due within SLOT_S. Why: a timer per check costs a handle, a context and a libuv
    timer each, and an operation per run.
    """

    def __init__(
        self,
        run: Callable[[str], Awaitable[None]],
        on_lag: Callable[[float], None],
        on_skip: Callable[[str], None],
    ) -> None:
        self._run = run
        self._on_lag = on_lag
        self._on_skip = on_skip
        self._jobs: dict[str, _Job] = {}
        # Runs in progress by check, kept by name: a run of a replaced definition still counts.
        # (A finished task is not kept: it would hold its memory until the next run.)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._heap: list[tuple[float, _Job]] = []  # (due, job); stale entries skipped
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None  # set for the earliest due run

    def start(self) -> None:
        """Start running the checks added so far and those added later."""
        self._loop = asyncio.get_running_loop()
        self._arm()

    def shutdown(self) -> None:
        """Stop starting runs; runs already started go on (the daemon waits for them)."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._loop = None, None

    def add(self, name: str, interval_s: float) -> None:
        """Schedule `name` (replacing its previous schedule); its first run falls at its stable
        offset within the interval, counted from now."""
        loop = self._loop or asyncio.get_running_loop()
        job = _Job(name, interval_s, loop.time() + first_run_offset(name, interval_s))
        self._jobs[name] = job
        self._push(job)

    def remove(self, name: str) -> None:
        self._jobs.pop(name, None)  # its heap entry is dropped when it comes up

    def jobs(self) -> dict[str, float]:
        """Every scheduled check and the loop time of its next run."""
        return {name: job.due for name, job in self._jobs.items()}

    def _push(self, job: _Job) -> None:
        heapq.heappush(self._heap, (job.due, job))
        if self._timer is None or job.due < self._timer.when():
            self._arm()

    def _arm(self) -> None:
        """Set the one timer for the earliest due run."""
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap:
            self._timer = self._loop.call_at(self._heap[0][0], self._wake)

    def _wake(self) -> None:
        loop = self._loop
        self._timer = None
        if loop is None:
            return
        now = loop.time()
        heap = self._heap
        due = []  # taken first: a job pushed back by its run is not due again in this wake-up
        while heap and heap[0][0] <= now + SLOT_S:
            due.append(heapq.heappop(heap)[1])
        for job in due:
            if self._jobs.get(job.name) is job:  # else removed or replaced since it was pushed
                self._fire(job, now, loop)
        self._arm()

    def _fire(self, job: _Job, now: float, loop: asyncio.AbstractEventLoop) -> None:
        self._on_lag(max(0.0, now - job.due))
        if job.name in self._running:
            self._on_skip(job.name)
        else:
            task = self._running[job.name] = loop.create_task(self._run(job.name))
            task.add_done_callback(functools.partial(self._finished, job.name))
        # The next run keeps the phase; after a stall, skip to the first due time still ahead.
        job.due += job.interval_s
        if job.due <= now:
            job.due += math.ceil((now - job.due) / job.interval_s + 1e-9) * job.interval_s
        heapq.heappush(self._heap, (job.due, job))

    def _finished(self, name: str, task: asyncio.Task[None]) -> None:
        if self._running.get(name) is task:
            del self._running[name]
        # The daemon's run never raises by design; should it, the schedule must go on regardless.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("scheduled run raised", exc_info=exc)
