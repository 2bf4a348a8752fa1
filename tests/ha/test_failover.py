"""The faults an HA pair must survive (HA.md (c)): leadership, fencing and the outbox, over real
`monitor run` processes and PostgreSQL, with the invariants watched all along (one leader per
shard at every 250 ms scrape) and checked at the end (one trigger per episode, none after its
resolve, every replica exits 0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg

from tests.ha.harness import HaLab, Replica

FAILOVER = "4s"  # R = 0.57 s, S = 1.6 s, D = 1.09 s, L = 2.67 s
CHECK = "backend-api"


async def cluster_of(replica: Replica) -> dict[str, object]:
    body: dict[str, object] = await replica.get_json("/api/v1/cluster")
    return body


async def outage(lab: HaLab, leader: Replica) -> None:
    """The target goes down; the leader pages once, and has marked the page delivered."""
    lab.target.down(CHECK)
    await lab.pagerduty.wait_event("trigger", accepted=True)
    await until(lambda: sent(leader), "the trigger marked sent")


async def sent(replica: Replica) -> bool:
    value = await replica.metric("monitor_notifications_total", notifier="oncall", outcome="sent")
    return bool(value)


async def until(ready: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 10.0) -> None:
    """Polls `ready` (a replica's API or metrics: another process, no event to wait on)."""
    end = time.monotonic() + timeout_s
    while not await ready():
        assert time.monotonic() < end, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.1)


async def test_steady_pair_pages_once(ha_lab: HaLab) -> None:
    """1. Both replicas run the check; only the leader pages: 1 trigger, 1 resolve, one dedup_key."""
    a, b = await ha_lab.start(2, failover=FAILOVER)
    leader = await ha_lab.wait_leader()
    follower = b if leader is a else a
    assert (await cluster_of(leader))["role"] == "leader"
    view = await cluster_of(follower)
    assert view["role"] == "follower" and view["leader"] == (await cluster_of(leader))["leader"]
    assert view["mode"] == "ha" and view["checks"] == 1 and view["epoch"] == 1
    await outage(ha_lab, leader)
    await asyncio.sleep(3)  # a second page would have come by now (repeat is 1h, both run the check)
    ha_lab.target.up(CHECK)
    [resolve] = await ha_lab.pagerduty.wait_event("resolve")
    [trigger] = ha_lab.pagerduty.of("trigger")
    assert resolve.dedup_key == trigger.dedup_key
    assert ha_lab.target.runners(CHECK) == {"r0", "r1"}  # every replica runs its checks
    await ha_lab.finish()


async def test_kill_leader_while_firing(ha_lab: HaLab) -> None:
    """2. kill -9 the leader while the alert fires: the follower leads within 3 s with epoch + 1,
    sends no second trigger, and the resolve comes from it."""
    await ha_lab.start(2, failover=FAILOVER)
    old = await ha_lab.wait_leader()
    epoch = (await cluster_of(old))["epoch"]
    await outage(ha_lab, old)
    killed = time.monotonic()
    old.kill()
    new = await ha_lab.wait_leader(not_=old, timeout_s=10)
    assert time.monotonic() - killed < 3.0
    assert (await cluster_of(new))["epoch"] == epoch + 1  # type: ignore[operator]
    await asyncio.sleep(2)  # the new leader has loaded the firing alert: no trigger again
    assert len(ha_lab.pagerduty.of("trigger")) == 1
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()


async def _lock_backend(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        pid: int = await conn.fetchval("select holder_pid from monitor_cluster where shard = '0/1'")
        await conn.execute("select pg_terminate_backend($1)", pid)
        return pid
    finally:
        await conn.close()
