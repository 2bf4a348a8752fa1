"""HA pair measurements (issue 12): takeover time per fault, and duplicates and losses over kill -9
trials of the leader during an outage. Two `monitor run` replicas on a throwaway PostgreSQL, with
the fault harness of tests/ha (proxies, fake PagerDuty, leader scraper).

    python -m bench.ha                       # failover 15s, 5 trials per fault, 20 kill trials
    python -m bench.ha --failover 6s --trials 3 --kills 5 --out ha.json
    python -m bench.ha --trials 0 --kills 0 --pg-checks 2000   # PostgreSQL cost, leader and follower

Takeover is the time from the fault to the first scrape (every 50 ms) at which the other replica
alone says it leads (`monitor_cluster_leader`); it includes that scrape's round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from tests.fakes.postgres import PostgresCluster, free_port
from tests.ha.harness import HaLab, PgProxy, Replica, Scrape, episodes

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
    (before, during or after its trigger), the outage lasts until it is paged (or 30 s: a lost
    page), then the target recovers and its resolve is awaited (30 s: a lost resolve); the killed
    replica comes back as a follower. Every episode must get one accepted trigger, and its
    resolve after it."""
    lost = 0
    for _ in range(kills):
        leader, _ = await _leader(lab)
        triggers = len(lab.pagerduty.of("trigger", accepted=True))
        resolves = len(lab.pagerduty.of("resolve", accepted=True))
        lab.target.down(CHECK)
        await asyncio.sleep(random.uniform(0.5, 4.0))  # trigger_after = 2 at 1 s: around the page
        leader.kill()
        await leader.wait_exit(10)
        await _leader(lab, not_=leader)
        for action, seen in (("trigger", triggers), ("resolve", resolves)):
            if action == "resolve":
                lab.target.up(CHECK)
            try:
                await lab.pagerduty.wait_event(action, seen + 1, accepted=True, timeout_s=30)
            except AssertionError:
                lost += 1
        await leader.start()
        await _follower_again(leader)
    duplicates = out_of_order = 0
    for evs in episodes(lab.pagerduty.events).values():
        accepted = [e for e in evs if e.event_action == "trigger" and e.accepted]
        resolved = [e.t for e in evs if e.event_action == "resolve" and e.accepted]
        duplicates += max(0, len(accepted) - 1)
        out_of_order += sum(1 for e in accepted if resolved and e.t > min(resolved))
    return {
        "trials": kills,
        "episodes": len(episodes(lab.pagerduty.events)),
        "duplicate_triggers": duplicates,
        "lost_pages_or_resolves": lost,
        "triggers_after_resolve": out_of_order,
        "sends_without_answer": sum(1 for e in lab.pagerduty.events if e.status is None),
    }


async def pg_cost(lab: HaLab, checks: int, failover: str, window_s: float = 20.0) -> dict[str, Any]:
    """Transactions per second PostgreSQL commits for a leader alone, then for leader + follower,
    with `checks` checks (every 30 s, all up) on each replica (pg_stat_database's xact_commit)."""
    names = [f"c{i}" for i in range(checks)]
    result: dict[str, Any] = {"checks": checks}
    for role in ("leader", "follower"):
        name, port = f"r{len(lab.replicas)}", free_port()
        proxy = await PgProxy(lab.pg.port).start()
        text = lab.config_text(name, port, proxy.port, failover=failover, checks=names)
        path = lab.dir / f"{name}.toml"
        path.write_text(text.replace('interval = "1s"', 'interval = "30s"'))
        replica = Replica(name, 0, path, port, proxy, {})
        lab.replicas.append(replica)
        await replica.start(timeout_s=120)
        await asyncio.sleep(5)  # past the start: schema, first loads
        before, cpu_before = await _commits(lab), [_cpu_s(r) for r in lab.replicas]
        await asyncio.sleep(window_s)
        result[f"{role}_xact_per_s"] = round((await _commits(lab) - before) / window_s, 1)
        # Each replica's share of a core over the window (leader alone, then leader and follower).
        shares = [(_cpu_s(r) - c) / window_s for r, c in zip(lab.replicas, cpu_before, strict=True)]
        result[f"{role}_window_cpu_share"] = [round(x, 3) for x in shares]
    # The second window has both: what the follower adds is the difference.
    result["follower_adds_xact_per_s"] = round(result["follower_xact_per_s"] - result["leader_xact_per_s"], 1)
    result["leader_alone_xact_per_s"] = result.pop("leader_xact_per_s")
    result["pair_xact_per_s"] = result.pop("follower_xact_per_s")
    return result


def _cpu_s(replica: Replica) -> float:
    """User + system CPU seconds of a replica's process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{replica.proc.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _commits(lab: HaLab) -> int:
    conn = await asyncpg.connect(lab.dsn)
    try:
        # Our own query's transaction is one of them: negligible over a window of seconds.
        value: int = await conn.fetchval(
            "select xact_commit + xact_rollback from pg_stat_database where datname = current_database()"
        )
        return value
    finally:
        await conn.close()


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(values), 2),
        "max_s": round(max(values), 2),
        "n": len(values),
    }


async def main(failover: str, trials: int, kills: int, pg_checks: int) -> dict[str, Any]:
    with PostgresCluster() as pg, tempfile.TemporaryDirectory(prefix="monitor-bench-ha-") as tmp:
        lab = await HaLab(pg, "postgres", Path(tmp)).open()
        lab.scraper.interval_s = 0.05
        try:
            result: dict[str, Any] = {"failover": failover}
            if pg_checks:
                result["postgres_cost"] = await pg_cost(lab, pg_checks, failover)
                await lab.stop_all()
                return result
            await lab.start(2, failover=failover)
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
    parser.add_argument("--pg-checks", type=int, default=0, help="measure PostgreSQL cost instead")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main(args.failover, args.trials, args.kills, args.pg_checks))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
