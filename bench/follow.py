"""What an HA follower's read of the leader's alerts costs in a storm: a whole read (`load`, as a
replica taking over reads) against the read of what changed (`follow`, every second).

N http checks on SQLite state, each failed twice through the daemon's own recording (a storm:
N alerts firing, swallowed), then each read timed three times on the loop (CPU and wall).

    python -m bench.follow                 # N = 20,000 -> bench/results/follow.json
    python -m bench.follow --checks 2000 --out /tmp/follow.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.storm import storm_config
from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.models import CheckResult

RESULTS = Path(__file__).parent / "results" / "follow.json"
READS = 3


async def measure(checks: int) -> dict[str, Any]:
    logging.disable(logging.WARNING)  # the storm's own lines
    with tempfile.TemporaryDirectory() as workdir:
        config = storm_config(
            checks, 3600.0, 2, "http://127.0.0.1:9/health", "127.0.0.1:0",
            f"{workdir}/state.db", "http://127.0.0.1:9/v2/enqueue", True,
        )  # fmt: skip
        daemon = Daemon(parse_config(config))
        await daemon.start()  # interval 1 h: the results below are the only runs that count
        try:
            refused = CheckResult.failure("connection refused", 0.2)
            runtimes = list(daemon.runtimes.values())
            for _ in range(2):  # pending, then firing
                for start in range(0, len(runtimes), 100):
                    now = time.time()
                    await asyncio.gather(
                        *(daemon._record(rt, refused, now) for rt in runtimes[start : start + 100])
                    )
            # (each recording returns once its alert is stored: the store holds them all by now)
            reads: dict[str, Any] = {}
            for name, read in (("load", daemon.alerts.load), ("follow", daemon.alerts.follow)):
                cpu, wall = [], []
                for _ in range(READS):
                    cpu0, wall0 = time.process_time(), time.perf_counter()
                    await read()
                    cpu.append(round(time.process_time() - cpu0, 4))
                    wall.append(round(time.perf_counter() - wall0, 4))
                reads[name] = {"cpu_s": cpu, "wall_s": wall, "alerts": len(daemon.alerts.active)}
        finally:
            await daemon.stop()
    return {"checks": checks, "firing": daemon.alerts.counts("up")["critical"], **reads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    result = uvloop.run(measure(args.checks))
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
