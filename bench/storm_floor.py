"""The floor under `bench/run --storm`'s `cpu_s`: the runs a storm's window holds, and nothing else.

N checks every `interval` s, by the daemon's own scheduler, each run one connect to a port where
nothing listens (refused, as the storm's target is once cut) under the run's deadline, as the
daemon's runner sets it: no result, evaluation, metrics, alerting or store. Over `runs` x
`interval` seconds each check runs `runs` times, as from the cut until `up` is critical. Prints
one JSON line: the process CPU, the runs and the CPU per run.

    python -m bench.storm_floor --checks 20000 --interval 10 --runs 2
    python -m bench.storm_floor --slot-ms 1      # what the scheduler's wake-up slot is worth
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import uvloop

from bench.services import free_port
from monitor import scheduler as scheduling
from monitor.scheduler import Scheduler

RUN_TIMEOUT_S = 5.0  # the storm config's timeout


class _Refused(asyncio.Protocol):
    """Never connected: every connect is refused."""


async def measure(checks: int, interval_s: float, runs: int) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    port = free_port()  # bound and closed again: nothing listens there
    done = 0

    async def run(_name: str) -> None:
        nonlocal done
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                await loop.create_connection(_Refused, "127.0.0.1", port)
        except OSError:
            pass
        done += 1

    scheduler = Scheduler(run, lambda _lag: None, lambda _name: None)
    for number in range(1, checks + 1):  # the storm config's names: the same first-run offsets
        scheduler.add(f"storm-{number:06d}", interval_s)
    cpu0 = time.process_time()
    scheduler.start()
    await asyncio.sleep(runs * interval_s)
    scheduler.shutdown()
    cpu_s = time.process_time() - cpu0
    return {"cpu_s": round(cpu_s, 3), "runs": done, "us_per_run": round(cpu_s / max(done, 1) * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=2, help="runs of each check: `up`'s trigger_after")
    slot = f"the scheduler's wake-up slot (the daemon's: {scheduling.SLOT_S * 1000:g})"
    parser.add_argument("--slot-ms", type=float, help=slot)
    args = parser.parse_args(argv)
    if args.slot_ms is not None:
        scheduling.SLOT_S = args.slot_ms / 1000
    print(json.dumps(uvloop.run(measure(args.checks, args.interval, args.runs))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
