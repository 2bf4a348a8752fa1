"""The elector and the fence on a real PostgreSQL, in process: who leads, epochs, resign, the
fenced round, the claim; the timing budget of HA.md (b)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from monitor.cluster import Budget, Elector, Role
from monitor.store import Fenced, StoreWriter, WatchedStore
from monitor.store.base import AlertRecord
from monitor.store.postgres import PostgresStore
from tests.fakes.postgres import PostgresCluster

FAILOVER_S = 3.5


@pytest.fixture
async def dsn(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    async with pg_cluster.database(f"cluster_{uuid.uuid4().hex[:10]}") as db:
        yield pg_cluster.dsn(database=db)


class Watch:
    """An elector's `on_change`, as an event a test can wait on."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()

    def __call__(self) -> None:
        self.changed.set()

    async def until(self, elector: Elector, role: Role, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while elector.role is not role:
                self.changed.clear()
                await self.changed.wait()


def elector(dsn: str, watch: Watch, holder: str) -> Elector:
    return Elector(dsn, 0, 1, FAILOVER_S, watch, holder=holder)


@pytest.mark.parametrize(
    ("failover_s", "budget"),
    [(15.0, Budget(15 / 7, 6.0, 5.0, 10.0)), (6.0, Budget(6 / 7, 2.4, (6 / 7 + 2.4) / 2, 4.0))],
    ids=["default", "short"],
)
def test_budget_of_failover(failover_s: float, budget: Budget) -> None:
    got = Budget.of(failover_s)
    assert (got.renew_s, got.idle_s, got.deadline_s, got.lease_s) == pytest.approx(
        (budget.renew_s, budget.idle_s, budget.deadline_s, budget.lease_s)
    )
    assert got.renew_s < got.deadline_s < got.idle_s < got.lease_s  # renew before D, D before S


async def test_one_leads_and_a_resign_hands_over_at_once(dsn: str) -> None:
    wa, wb = Watch(), Watch()
    a, b = elector(dsn, wa, "a"), elector(dsn, wb, "b")
    ta = asyncio.create_task(a.run())
    await wa.until(a, Role.LEADER)
    tb = asyncio.create_task(b.run())
    try:
        async with asyncio.timeout(5):
            while b.leader != "a":
                wb.changed.clear()
                await wb.changed.wait()
        assert (a.epoch, b.epoch, b.role) == (1, 1, Role.FOLLOWER)
        await asyncio.sleep(a.budget.renew_s * 3)  # renews keep it; nothing stacks the lock
        assert a.role is Role.LEADER and a.lease_left() > 0
        conn = await asyncpg.connect(dsn)
        try:
            locks = await conn.fetchval("select count(*) from pg_locks where locktype = 'advisory'")
        finally:
            await conn.close()
        assert locks == 1
        ta.cancel()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await a.resign()
        await wb.until(b, Role.LEADER, timeout_s=2)
        assert loop.time() - began < 1.0  # the NOTIFY, not the 1 s retry
        assert b.epoch == 2 and a.role is Role.FOLLOWER and a.lease_left() == 0
    finally:
        for task in (ta, tb):
            task.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)
        await b.resign()


async def test_a_terminated_lock_session_demotes(dsn: str) -> None:
    watch = Watch()
    a = elector(dsn, watch, "a")
    task = asyncio.create_task(a.run())
    try:
        await watch.until(a, Role.LEADER)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("select pg_terminate_backend(holder_pid) from monitor_cluster")
        finally:
            await conn.close()
        await watch.until(a, Role.FOLLOWER, timeout_s=a.budget.renew_s + 3)
        await watch.until(a, Role.LEADER, timeout_s=5)  # nobody else: it wins again, a new epoch
        assert a.epoch == 2 and a.transitions == 3
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await a.resign()


async def test_fenced_round_writes_nothing_and_a_claim_needs_the_epoch(dsn: str) -> None:
    """Fencing 1 and 3: a round with a leader write from a stale epoch is refused whole; a
    follower's write in the same round still goes through alone; a claim names the epoch."""
    watch = Watch()
    a = elector(dsn, watch, "a")
    task = asyncio.create_task(a.run())
    refused: list[tuple[str, ...]] = []
    writer = StoreWriter(
        WatchedStore(PostgresStore(dsn)), on_fenced=lambda exc: refused.append(exc.operations)
    )
    await writer.open()
    writer.start()
    try:
        await watch.until(a, Role.LEADER)
        assert a.epoch is not None
        writer.fence = (a.shard_key, a.epoch)
        record = AlertRecord("k:1", "k", True, 1.0, {"id": "k"})
        [item] = await writer.commit(record, [("oncall", {"alert_id": "k", "event": "firing"})], 1.0)
        assert await writer.claim(item.id, a.shard_key, a.epoch) is True
        writer.fence = (a.shard_key, a.epoch - 1)  # as a leader that a takeover left behind
        commit = writer.commit(record, [("oncall", {"alert_id": "k", "event": "resolved"})], 2.0)
        silence = writer.save_silence("s1", {"id": "s1"})
        results = await asyncio.gather(commit, silence, return_exceptions=True)
        assert isinstance(results[0], Fenced) and results[1] is None
        assert refused == [("commit",)]
        with pytest.raises(Fenced):
            await writer.claim(item.id, a.shard_key, a.epoch - 1)
        writer.fence = (a.shard_key, a.epoch)
        assert await writer.claim(item.id, a.shard_key, a.epoch - 1) is False  # not its epoch
        assert [i.payload["event"] for i in await writer.pending()] == ["firing"]
        assert [s["id"] for s in await writer.load_silences()] == ["s1"]
        [stored] = await writer.pending()
        assert stored.claimed_epoch == a.epoch
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await a.resign()
        await writer.stop()
        await writer.close()


async def test_without_idle_session_timeout_a_follower_ends_a_lapsed_holder(dsn: str) -> None:
    """PostgreSQL 13 has no idle_session_timeout: a frozen holder keeps its lock (and its session)
    until a follower terminates its backend, once its lease has expired, and not before."""
    frozen = await asyncpg.connect(dsn)
    await frozen.execute(
        "create table monitor_cluster (shard text primary key, epoch bigint not null, "
        "holder text not null, holder_pid integer not null, expires_at timestamptz not null)"
    )
    await frozen.execute("select pg_advisory_lock(hashtext('monitor/0/1'))")
    await frozen.execute(
        "insert into monitor_cluster values ('0/1', 5, 'frozen', pg_backend_pid(), now() + interval '3 s')"
    )
    watch = Watch()
    b = elector(dsn, watch, "b")
    b._idle_timeout = False  # as on PostgreSQL 13
    task = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(1.5)  # the lease runs: the holder is left alone
        assert b.role is Role.FOLLOWER and (b.epoch, b.leader) == (5, "frozen") and not frozen.is_closed()
        await watch.until(b, Role.LEADER, timeout_s=5)
        assert b.epoch == 6
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
            await frozen.fetchval("select 1")  # its backend was ended
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await b.resign()
        frozen.terminate()
