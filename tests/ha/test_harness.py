"""The fault harness itself: the proxy cuts and blackholes, the fake PagerDuty holds and fails,
the invariants catch what they are for, and the launcher runs a replica end to end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest

from tests.fakes.postgres import PostgresCluster
from tests.ha.harness import (
    FakePagerDuty,
    HaLab,
    PdEvent,
    PgBouncer,
    PgProxy,
    PoolMode,
    assert_no_trigger_after_resolve,
    assert_one_trigger_per_episode,
)


@pytest.fixture
async def proxy(pg_cluster: PostgresCluster) -> AsyncIterator[PgProxy]:
    proxy = await PgProxy(pg_cluster.port).start()
    yield proxy
    await proxy.aclose()


async def test_proxy_forwards_and_cut_resets_and_refuses(pg_cluster: PostgresCluster, proxy: PgProxy) -> None:
    conn = await asyncpg.connect(pg_cluster.dsn(port=proxy.port), timeout=5)
    assert await conn.fetchval("select 41 + 1") == 42
    proxy.cut()
    with pytest.raises((asyncpg.exceptions.ConnectionDoesNotExistError, ConnectionError, OSError)):
        await asyncio.wait_for(conn.fetchval("select 1"), 2)
    with pytest.raises((ConnectionError, OSError, asyncpg.exceptions.ConnectionDoesNotExistError)):
        await asyncpg.connect(pg_cluster.dsn(port=proxy.port), timeout=2)
    proxy.heal()
    again = await asyncpg.connect(pg_cluster.dsn(port=proxy.port), timeout=5)
    assert await again.fetchval("select 2") == 2
    await again.close()
    conn.terminate()


async def test_proxy_blackhole_holds_sockets_open_and_heal_resumes(
    pg_cluster: PostgresCluster, proxy: PgProxy
) -> None:
    conn = await asyncpg.connect(pg_cluster.dsn(port=proxy.port), timeout=5)
    proxy.blackhole()
    query = asyncio.create_task(conn.fetchval("select 'through'"))
    done, _ = await asyncio.wait([query], timeout=0.5)
    assert done == set(), "a query answered through a blackhole"
    assert proxy.open_links == 1  # the socket is still open: nothing was reset
    with pytest.raises(TimeoutError):  # a new connection is accepted but never answered
        await asyncpg.connect(pg_cluster.dsn(port=proxy.port), timeout=0.5)
    proxy.heal()
    assert await asyncio.wait_for(query, 2) == "through"  # held bytes flow on: nothing lost
    await conn.close()


async def test_pagerduty_holds_fails_and_records_a_dropped_sender() -> None:
    body = {"routing_key": "k", "event_action": "resolve", "dedup_key": "backend-api:up"}
    async with aiohttp.ClientSession() as session:
        pd = await FakePagerDuty().start()
        try:
            pd.fail(503, count=1)
            async with session.post(pd.url, json=body) as resp:
                assert resp.status == 503
            async with session.post(pd.url, json=body) as resp:
                assert resp.status == 202
            pd.hold()
            held = asyncio.create_task(session.post(pd.url, json=body))
            await pd.wait_held(1, timeout_s=2)
            dropped = asyncio.create_task(session.post(pd.url, json=body))
            await pd.wait_held(2, timeout_s=2)
            dropped.cancel()  # the sender goes away while held, as a killed leader does
            await pd.wait_event("resolve", 3, timeout_s=2)
            pd.release()
            async with await held as resp:
                assert resp.status == 202
            async with session.post(pd.url, json={"event_action": "trigger"}) as resp:
                assert resp.status == 400  # no routing_key, dedup_key, payload
            async with session.post(pd.url, data=b"not json") as resp:
                assert resp.status == 400
        finally:
            await pd.aclose()
    assert [e.status for e in pd.events] == [503, 202, None, 202, 400]
    assert [e.dedup_key for e in pd.events[:4]] == ["backend-api:up"] * 4
    assert any("routing_key" in p for p in pd.problems) and "body is not a JSON object" in pd.problems[-1]


def _event(t: float, action: str, since: str = "s1", status: int | None = 202) -> PdEvent:
    return PdEvent(t=t, dedup_key="backend-api:up", event_action=action, since=since, status=status)


def test_invariants_catch_a_second_trigger_and_a_trigger_after_resolve() -> None:
    fine = [
        _event(1, "trigger", status=503),
        _event(2, "trigger"),
        _event(3, "resolve"),
        _event(4, "trigger", "s2"),
    ]
    assert_one_trigger_per_episode(fine)
    assert_no_trigger_after_resolve(fine)
    with pytest.raises(AssertionError, match="2 accepted triggers"):
        assert_one_trigger_per_episode([_event(1, "trigger"), _event(2, "trigger")])
    with pytest.raises(AssertionError, match="trigger after its resolve"):
        assert_no_trigger_after_resolve(
            [_event(1, "trigger"), _event(2, "resolve"), _event(3, "trigger", status=None)]
        )


async def test_launcher_runs_a_replica_through_its_proxy_to_a_page(ha_lab: HaLab) -> None:
    [replica] = await ha_lab.start(1, mode="single")
    status, cluster = await replica.request("GET", "/readyz")
    assert status == 200, cluster
    assert replica.proxy.connections >= 1  # the state store is reached through the proxy
    began = time.monotonic()
    ha_lab.target.down("backend-api")
    [trigger] = await ha_lab.pagerduty.wait_event("trigger", timeout_s=15)
    assert trigger.accepted and trigger.body["payload"]["component"] == "backend-api"
    assert trigger.t - began >= 1.0  # trigger_after = 2 runs 1 s apart
    ha_lab.target.up("backend-api")
    [resolve] = await ha_lab.pagerduty.wait_event("resolve", timeout_s=15)
    assert resolve.episode == trigger.episode
    assert ha_lab.target.runners("backend-api") == {"r0"}
    await ha_lab.finish()
    assert ha_lab.exit_codes == {"r0": 0}
    assert len(ha_lab.scraper.rounds) >= 4


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
async def test_pgbouncer_pools_by_session_or_by_transaction(
    pg_cluster: PostgresCluster, pool_mode: PoolMode
) -> None:
    """Two clients at once: in session mode each keeps its own server session; in transaction mode
    they take turns on one, which is why a session advisory lock cannot be held through it."""
    bouncer = await PgBouncer(pg_cluster, pool_mode).start()
    try:
        dsn = pg_cluster.dsn(port=bouncer.port)
        a = await asyncpg.connect(dsn, timeout=5, statement_cache_size=0)
        b = await asyncpg.connect(dsn, timeout=5, statement_cache_size=0)
        try:
            pid_a = await a.fetchval("select pg_backend_pid()")
            pid_b = await b.fetchval("select pg_backend_pid()")
        finally:
            await a.close()
            await b.close()
    finally:
        await bouncer.aclose()
    assert (pid_a == pid_b) == (pool_mode == "transaction"), (pid_a, pid_b)
