"""Run history at scale: N checks' runs for some hours on a fake clock, batches through the store
writer as the daemon writes them; CPU of recording and of the batches, store bytes per check per
day (SQLite and PostgreSQL), memory per check, and the load at start.

    .venv/bin/python -m bench.history                 # 20,000 checks every 10 s, 2 hours
    .venv/bin/python -m bench.history --checks 2000 --hours 1 --out bench/results/history.json

PostgreSQL is a throwaway cluster (tests/fakes/postgres.py), or `--dsn` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg

from monitor.history import History
from monitor.store import Store, StoreWriter
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import SqliteStore

START = 1_794_988_800.0  # an hour's start
DAY_30 = 30 * 86400.0
PG_SIZE = "select pg_total_relation_size('monitor_history') + pg_total_relation_size('monitor_history_days')"


class Clock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t


def cpu() -> float:
    return time.process_time()  # the whole process: the loop and aiosqlite's thread


async def simulate(
    store: Store, checks: int, hours: int, interval_s: float, flush_s: float
) -> dict[str, Any]:
    """Every check runs every `interval_s` (1 % of runs fail); a batch every `flush_s`."""
    clock = Clock(START)
    writer = StoreWriter(store)
    await writer.open()
    writer.start()
    names = names_of(checks)
    rng = random.Random(1)
    latencies = [rng.lognormvariate(3.0, 0.6) for _ in range(4096)]  # ~20 ms median
    history = History(writer, clock, DAY_30)
    record_cpu = flush_cpu = flush_wall = 0.0
    flushes = runs = 0
    steps_per_flush = round(flush_s / interval_s)
    try:
        for step in range(round(hours * 3600 / interval_s)):
            started = cpu()
            now = clock.t
            for i, name in enumerate(names):
                history.record(name, (i + step) % 100 != 0, latencies[(i * 7 + step) & 4095], now)
            record_cpu += cpu() - started
            runs += checks
            clock.t += interval_s
            if (step + 1) % steps_per_flush == 0:
                started, wall = cpu(), time.perf_counter()
                await history.flush()
                flush_cpu += cpu() - started
                flush_wall += time.perf_counter() - wall
                flushes += 1
        clock.t -= 1  # the last hour's last second: its row is written whole
        await history.flush()
        rows = len(await writer.load_hours(0))
        # The load at start, as after a restart: 24 hours of rows and the day totals.
        restarted = History(writer, clock, DAY_30)
        started, wall = cpu(), time.perf_counter()
        await restarted.load(names)
        load = {"cpu_s": cpu() - started, "wall_s": time.perf_counter() - wall}
        assert restarted.uptime_pct(names[1]) == history.uptime_pct(names[1])
    finally:
        await writer.stop()
        await writer.close()
    per_hour = 3600 / interval_s * checks
    return {
        "rows": rows,
        "runs": runs,
        "record_us_per_run": record_cpu / runs * 1e6,
        "record_cpu_s_per_hour": record_cpu / runs * per_hour,
        "flushes": flushes,
        "flush_cpu_s_each": flush_cpu / flushes,
        "flush_wall_s_each": flush_wall / flushes,
        "flush_cpu_s_per_hour": flush_cpu / flushes * 3600 / flush_s,
        "load_24h": load,
        "writer_rounds": writer.rounds,
    }


def memory_per_check(checks: int) -> float:
    """Bytes a check's history holds in memory once it has run (tracemalloc)."""
    clock = Clock(START)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    history = History(None, clock, DAY_30)  # type: ignore[arg-type]  # no store: nothing is flushed
    for i in range(checks):
        history.record(f"service-{i:05d}.example-team", True, 12.0, START)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    name_bytes = sys.getsizeof("service-00000.example-team")  # the name belongs to the config
    return used / checks - name_bytes


def names_of(checks: int) -> list[str]:
    return [f"service-{i:05d}.example-team" for i in range(checks)]


async def sqlite_size(path: Path) -> int:
    store = SqliteStore(str(path))
    await store.open()
    await store.db.execute("pragma wal_checkpoint(truncate)")
    await store.close()
    return (await asyncio.to_thread(path.stat)).st_size


async def fill_sqlite(path: Path, checks: int, days: int) -> None:
    """`days` of hours before START for every check, made by SQL (a Python loop would take hours)."""
    store = SqliteStore(str(path))
    await store.open()
    db = store.db
    await db.execute("create temp table names (name text)")
    await db.executemany("insert into names values (?)", [(n,) for n in names_of(checks)])
    first = int(START // 3600) - 24 * days
    await db.execute(
        "with recursive h(x) as (select ? union all select x + 1 from h where x + 1 < ?) "
        "insert or ignore into history select x, name, 360, 3, 19876, 45123, 91234, 1 from h, names",
        (first, int(START // 3600)),
    )
    await db.execute(
        "insert or ignore into history_days select hour / 24, name, sum(runs), sum(failures) "
        "from history where hour < ? group by 1, 2",
        (int(START // 3600),),
    )
    await db.commit()
    await store.close()


async def fill_postgres(dsn: str, checks: int, days: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        first = int(START // 3600) - 24 * days
        await conn.execute(
            "insert into monitor_history select h, n, 360, 3, 19876, 45123, 91234, true "
            "from generate_series($1::integer, $2::integer - 1) h, unnest($3::text[]) n "
            "on conflict do nothing",
            first,
            int(START // 3600),
            names_of(checks),
        )
        await conn.execute(
            "insert into monitor_history_days select hour / 24, name, sum(runs), sum(failures) "
            "from monitor_history where hour < $1 group by 1, 2 on conflict do nothing",
            int(START // 3600),
        )
        await conn.execute("vacuum analyze monitor_history")
    finally:
        await conn.close()


async def load_at_start(store: Store, checks: int) -> dict[str, float]:
    """`History.load` of a full store, 24 hours after START (so 30 days lie behind)."""
    clock = Clock(START + 24 * 3600)
    await store.open()
    try:
        history = History(store, clock, DAY_30)
        started, wall = cpu(), time.perf_counter()
        await history.load(names_of(checks))
        result = {"cpu_s": cpu() - started, "wall_s": time.perf_counter() - wall}
        assert history.uptime_pct(names_of(1)[0])["30d"] is not None
        return result
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def postgres(dsn: str | None) -> AsyncIterator[str]:
    if dsn is not None:
        yield dsn
        return
    from tests.fakes.postgres import PostgresCluster  # bench/ runs from the checkout's root

    with PostgresCluster() as cluster:
        async with cluster.database("history_bench") as db:
            yield cluster.dsn(database=db)


async def full_size(where: Path | str, args: argparse.Namespace, store: Store) -> dict[str, Any]:
    """The store holding `--fill-days` days of every check (plus the simulated hours)."""
    load = await load_at_start(store, args.checks)
    if isinstance(where, Path):
        size = await sqlite_size(where)
    else:
        conn = await asyncpg.connect(where)
        try:
            size = await conn.fetchval(PG_SIZE)
        finally:
            await conn.close()
    days = args.fill_days + args.hours / 24
    return {
        "days": days,
        "bytes": size,
        "bytes_per_check_per_day": size / args.checks / days,
        "load_at_start": load,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checks", type=int, default=20_000)
    parser.add_argument("--hours", type=int, default=2)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between a check's runs")
    parser.add_argument("--flush", type=float, default=60.0, help="seconds between batches")
    parser.add_argument("--fill-days", type=int, default=30, help="days of rows to add, for size and load")
    parser.add_argument("--dsn", help="a PostgreSQL database to use (default: a throwaway cluster)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    shape = (args.checks, args.hours, args.interval, args.flush)
    results: dict[str, Any] = {
        "checks": args.checks,
        "hours": args.hours,
        "interval_s": args.interval,
        "flush_s": args.flush,
        "memory_bytes_per_check": round(memory_per_check(args.checks)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "state.db"
        results["sqlite"] = await simulate(SqliteStore(str(path)), *shape)
        results["sqlite"]["bytes"] = await sqlite_size(path)
        if args.fill_days:
            await fill_sqlite(path, args.checks, args.fill_days)
            results["sqlite"]["filled"] = await full_size(path, args, SqliteStore(str(path)))
    async with postgres(args.dsn) as dsn:
        results["postgresql"] = await simulate(PostgresStore(dsn), *shape)
        conn = await asyncpg.connect(dsn)
        try:
            # Each batch rewrites the open hour's rows: dead row versions until (auto)vacuum reuses them.
            size = await conn.fetchval(PG_SIZE)
            await conn.execute("vacuum full monitor_history")
            await conn.execute("vacuum full monitor_history_days")
            live = await conn.fetchval(PG_SIZE)
        finally:
            await conn.close()
        results["postgresql"]["bytes_before_vacuum_full"] = size
        results["postgresql"]["bytes"] = live
        if args.fill_days:
            await fill_postgres(dsn, args.checks, args.fill_days)
            results["postgresql"]["filled"] = await full_size(dsn, args, PostgresStore(dsn))
    for backend in ("sqlite", "postgresql"):
        r = results[backend]
        r["bytes_per_row"] = r["bytes"] / r["rows"]
        r["bytes_per_check_per_day"] = r["bytes_per_row"] * 24
    text = json.dumps(results, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    asyncio.run(main())
