"""HA pair measurements (issue 12): takeover time per fault, and duplicates and losses over kill -9
trials of the leader during an outage. Two `monitor run` replicas on a throwaway PostgreSQL, with
the fault harness of tests/ha (proxies, fake PagerDuty, leader scraper).

    python -m bench.ha                       # failover 15s, 5 trials per fault, 20 kill trials
    python -m bench.ha --failover 6s --trials 3 --kills 5 --out ha.json

Takeover is the time from the fault to the first scrape (every 50 ms) at which the other replica
alone says it leads (`monitor_cluster_leader`); it includes that scrape's round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.fakes.postgres import PostgresCluster
from tests.ha.harness import HaLab, Replica, Scrape, episodes

CHECK = "backend-api"
FAULTS = ("kill -9", "SIGSTOP", "blackhole", "SIGTERM")


async def _leader(lab: HaLab, not_: Replica | None = None, timeout_s: float = 60.0) -> tuple[Replica, float]:
    """The sole leader from now on (other than `not_`) and the time of the scrape that saw it."""

    def one(scrape: Scrape) -> bool:
        names = scrape.leaders.get(0, ())
        return len(names) == 1 and (not_ is None or names[0] != not_.name)

    scrape = await lab.scraper.wait(one, timeout_s, "one leader")
    return lab.replica(scrape.leaders[0][0]), scrape.t


async def _follower_again(replica: Replica, timeout_s: float = 60.0) -> None:
    """The faulted replica is back, ready and following."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            status, _ = await replica.request("GET", "/readyz")
            body = await replica.get_json("/api/v1/cluster") if status == 200 else {}
        except Exception:  # not answering yet
            body = {}
        if body.get("role") == "follower":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{replica.name} not a ready follower within {timeout_s}s")


async def _fault(lab: HaLab, fault: str, leader: Replica) -> Callable[[], Awaitable[None]]:
    """Inflict `fault` on the leader; returns how to undo it."""
    if fault == "kill -9":
        leader.kill()
        await leader.wait_exit(10)
        return lambda: _restart(leader)
    if fault == "SIGSTOP":
        leader.pause()

        async def resume() -> None:
            leader.resume()

        return resume
    if fault == "blackhole":
        leader.proxy.blackhole()

        async def heal() -> None:
            leader.proxy.heal()

        return heal
    leader.terminate()
    await leader.wait_exit(15)
    return lambda: _restart(leader)


async def _restart(replica: Replica) -> None:
    await replica.start()


async def takeovers(lab: HaLab, trials: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {fault: [] for fault in FAULTS}
    for fault in FAULTS:
        for _ in range(trials):
            leader, _ = await _leader(lab)
            began = time.monotonic()
            undo = await _fault(lab, fault, leader)
            _, seen = await _leader(lab, not_=leader)
            times[fault].append(seen - began)
            await undo()
            await _follower_again(leader)
        print(f"{fault}: {_summary(times[fault])}", file=sys.stderr)
    return times


async def kill_trials(lab: HaLab, kills: int) -> dict[str, Any]:
    """Each trial: the target goes down, the leader is killed at a random moment of the outage
    (before, during or after its trigger), it comes back, the target recovers. Every episode must
    get exactly one accepted trigger and one resolve after it."""
    for _ in range(kills):
        leader, _ = await _leader(lab)
        before = len(lab.pagerduty.of("resolve"))
        lab.target.down(CHECK)
        await asyncio.sleep(random.uniform(0.5, 4.0))  # trigger_after = 2 at 1 s: around the page
        leader.kill()
        await leader.wait_exit(10)
        await _leader(lab, not_=leader)
        await asyncio.sleep(random.uniform(0.0, 2.0))
        lab.target.up(CHECK)
        await lab.pagerduty.wait_event("resolve", before + 1, timeout_s=60)
        await leader.start()
        await _follower_again(leader)
    duplicates = losses = redelivered = 0
    for evs in episodes(lab.pagerduty.events).values():
        accepted = [e for e in evs if e.event_action == "trigger" and e.accepted]
        resolves = [e for e in evs if e.event_action == "resolve" and e.accepted]
        duplicates += max(0, len(accepted) - 1)
        losses += int(not accepted) + int(not resolves)
        redelivered += sum(1 for e in evs if e.event_action == "trigger") - len(accepted)
        if accepted and resolves and min(r.t for r in resolves) < max(t.t for t in accepted):
            losses += 1  # a trigger after its resolve opens a new incident: the resolve is lost
    return {
        "trials": kills,
        "episodes": len(episodes(lab.pagerduty.events)),
        "duplicate_triggers": duplicates,
        "lost_or_out_of_order": losses,
        "unanswered_sends": redelivered,
    }


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 2),
        "max_s": round(max(values), 2),
        "n": len(values),
    }


async def main(failover: str, trials: int, kills: int) -> dict[str, Any]:
    with PostgresCluster() as pg, tempfile.TemporaryDirectory(prefix="monitor-bench-ha-") as tmp:
        lab = await HaLab(pg, "postgres", Path(tmp)).open()
        lab.scraper.interval_s = 0.05
        try:
            await lab.start(2, failover=failover)
            result: dict[str, Any] = {"failover": failover}
            if trials:
                times = await takeovers(lab, trials)
                result["takeover"] = {fault: _summary(v) for fault, v in times.items()}
            if kills:
                result["kill_during_outage"] = await kill_trials(lab, kills)
            result["two_leaders_seen"] = len(lab.scraper.violations)
            await lab.stop_all()
            return result
        finally:
            await lab.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failover", default="15s")
    parser.add_argument("--trials", type=int, default=5, help="per fault")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main(args.failover, args.trials, args.kills))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
