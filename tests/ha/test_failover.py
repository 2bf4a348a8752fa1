"""The faults an HA pair must survive (HA.md (c)): leadership, fencing and the outbox, over real
`monitor run` processes and PostgreSQL, with the invariants watched all along (one leader per
shard at every 250 ms scrape) and checked at the end (one trigger per episode, none after its
resolve, every replica exits 0)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.fakes.postgres import PostgresCluster, free_port
from tests.ha.harness import HaLab, PgBouncer, PgProxy, PoolMode, Replica, Scrape

FAILOVER = "4s"  # R = 0.57 s, S = 1.6 s, D = 1.09 s, L = 2.67 s
CHECK = "backend-api"
TOKEN = "ha-test-token"


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
    holder = (await cluster_of(leader))["leader"]
    await until(lambda: _follows(follower, holder), "the follower names the leader", timeout_s=3)
    view = await cluster_of(follower)
    assert view["mode"] == "ha" and view["checks"] == 1 and view["epoch"] == 1
    await outage(ha_lab, leader)
    # The leader exports its alerts; the follower the same, as the store has them (within 2 s).
    await until(lambda: _firing(leader, 1), "the leader exports the firing alert", timeout_s=2)
    await until(lambda: _firing(follower, 1), "the follower exports the firing alert", timeout_s=2)
    ha_lab.target.up(CHECK)
    [resolve] = await ha_lab.pagerduty.wait_event("resolve")
    [trigger] = ha_lab.pagerduty.of("trigger")
    assert resolve.dedup_key == trigger.dedup_key
    await until(lambda: _firing(follower, 0), "the follower exports the resolve", timeout_s=2)
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


async def _follows(replica: Replica, holder: object) -> bool:
    view = await cluster_of(replica)
    return view["role"] == "follower" and view["leader"] == holder


async def role_of(replica: Replica) -> str:
    return str((await cluster_of(replica))["role"])


async def test_paused_leader_is_replaced_and_fenced_after(ha_lab: HaLab) -> None:
    """4. SIGSTOP the leader while the target fails: the follower takes over (about S + P) and
    pages once; after SIGCONT the old leader stops leading within 2 s and sends nothing."""
    await ha_lab.start(2, failover=FAILOVER)
    old = await ha_lab.wait_leader()
    old.pause()
    paused = time.monotonic()
    ha_lab.target.down(CHECK)
    new = await ha_lab.wait_leader(not_=old, timeout_s=15)
    assert time.monotonic() - paused < 8.0
    await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    old.resume()
    resumed = time.monotonic()
    await until(lambda: _is_follower(old), "the old leader demoted", timeout_s=5)
    assert time.monotonic() - resumed < 2.0
    await asyncio.sleep(1)  # what the woken leader had due (runs, repeats) is refused, not sent
    assert not await sent(old)
    assert len(ha_lab.pagerduty.of("trigger")) == 1
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()
    assert new.running is False


async def _is_follower(replica: Replica) -> bool:
    return await role_of(replica) == "follower"


async def test_lock_session_terminated(ha_lab: HaLab) -> None:
    """6. pg_terminate_backend on the leader's lock session: a new leader within 2 s; the old one
    demotes and stays up, as a follower."""
    await ha_lab.start(2, failover=FAILOVER)
    old = await ha_lab.wait_leader()
    conn = await asyncpg.connect(ha_lab.dsn)
    try:
        pid = await conn.fetchval("select holder_pid from monitor_cluster where shard = '0/1'")
        assert await conn.fetchval("select pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
    ended = time.monotonic()

    def new_epoch(scrape: Scrape) -> bool:
        names = scrape.leaders.get(0, ())
        return len(names) == 1 and scrape.epochs.get(names[0]) == 2

    scrape = await ha_lab.scraper.wait(new_epoch, 10, "a leader of epoch 2")
    assert scrape.t - ended < 2.0
    leader = ha_lab.replica(scrape.leaders[0][0])
    if leader is old:  # it lost its session and won again: a new epoch all the same
        assert await old.metric("monitor_cluster_transitions_total", shard="0") == 3
    else:
        assert await role_of(old) == "follower" and old.running
    ha_lab.target.down(CHECK)
    await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()


async def test_leader_blackholed_from_postgres(ha_lab: HaLab) -> None:
    """7. The proxy between the leader and PostgreSQL black-holes, the target down: the other
    replica takes over within 15 s and pages once; after the heal the old leader is a follower."""
    await ha_lab.start(2, failover=FAILOVER)
    old = await ha_lab.wait_leader()
    old.proxy.blackhole()
    cut = time.monotonic()
    ha_lab.target.down(CHECK)
    new = await ha_lab.wait_leader(not_=old, timeout_s=15)
    took = time.monotonic() - cut
    assert took < 15.0
    # The old leader stops by its own clock (D after its last renew), before the new one leads.
    assert await role_of(old) == "follower"
    await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    await asyncio.sleep(1)
    old.proxy.heal()
    await until(lambda: _store_ready(old), "the old leader back on PostgreSQL", timeout_s=40)
    assert await role_of(old) == "follower" and await role_of(new) == "leader"
    assert not await sent(old)
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()


async def _store_ready(replica: Replica) -> bool:
    status, _ = await replica.request("GET", "/readyz")
    return status == 200


async def test_rolling_sigterm(ha_lab: HaLab) -> None:
    """9. A rolling restart by SIGTERM during an outage: each handover within 1 s, each replica
    exits 0 within 10 s; no page repeated, none lost."""
    await ha_lab.start(2, failover=FAILOVER)
    first = await ha_lab.wait_leader()
    await outage(ha_lab, first)
    handovers = []
    for _ in range(2):
        leader = await ha_lab.wait_leader()
        (replacement,) = await ha_lab.start(1, failover=FAILOVER)  # the rollout's new pod
        leader.terminate()
        began = time.monotonic()
        await ha_lab.wait_leader(not_=leader, timeout_s=10)
        handovers.append(time.monotonic() - began)
        assert await leader.wait_exit(10) == 0
        assert replacement.running
    assert max(handovers) < 1.0 + 0.5, handovers  # + one scrape interval and its round trip
    assert len(ha_lab.pagerduty.of("trigger")) == 1
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()
    assert [e.event_action for e in ha_lab.pagerduty.events] == ["trigger", "resolve"]


async def test_ack_and_silence_through_the_follower(ha_lab: HaLab) -> None:
    """10. An ack posted to the follower reaches PagerDuty from the leader and shows on both
    replicas within 2 s; a silence posted to the follower suppresses at the leader."""
    a, b = await ha_lab.start(
        2, failover=FAILOVER, checks=(CHECK, "worker"), monitor_extra=f'api_token = "{TOKEN}"'
    )
    leader = await ha_lab.wait_leader()
    follower = b if leader is a else a
    await outage(ha_lab, leader)
    await until(lambda: _alert_ids(follower, CHECK), "the follower shows the alert", timeout_s=2.5)
    [aid] = await _alert_ids(follower, CHECK)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status, body = await follower.request(
        "POST", f"/api/v1/alerts/{aid}/ack", json={"by": "ann"}, headers=auth
    )
    assert status == 200 and body["acknowledged"] is True
    acked = time.monotonic()
    await ha_lab.pagerduty.wait_event("acknowledge", timeout_s=5)
    assert time.monotonic() - acked < 2.0 + 0.5
    for replica in (leader, follower):
        await until(lambda r=replica: _acknowledged(r, aid), f"{replica.name} shows the ack", timeout_s=2.5)
    start = "2020-01-01T00:00:00Z"
    status, silence = await follower.request(
        "POST",
        "/api/v1/silences",
        json={"checks": ["worker"], "start": start, "end": "2099-01-01T00:00:00Z", "comment": "deploy"},
        headers=auth,
    )
    assert status == 201
    await until(lambda: _silence_ids(leader, silence["id"]), "the leader shows the silence", timeout_s=2.5)
    ha_lab.target.down("worker")
    await until(lambda: _suppressed(leader, "worker"), "the worker alert suppressed", timeout_s=8)
    await asyncio.sleep(1)
    assert [e.event_action for e in ha_lab.pagerduty.events] == ["trigger", "acknowledge"]
    ha_lab.target.up(CHECK, "worker")
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()


async def _alert_ids(replica: Replica, check: str) -> list[str]:
    body = await replica.get_json("/api/v1/alerts")
    return [a["id"] for a in body["alerts"] if a["check"] == check]


async def _acknowledged(replica: Replica, aid: str) -> bool:
    body = await replica.get_json("/api/v1/alerts")
    return any(a["id"] == aid and a["acknowledged"] for a in body["alerts"])


async def _silence_ids(replica: Replica, sid: str) -> bool:
    body = await replica.get_json("/api/v1/silences")
    return any(s["id"] == sid for s in body["silences"])


async def _suppressed(replica: Replica, check: str) -> bool:
    body = await replica.get_json("/api/v1/alerts")
    return any(a["check"] == check and a["suppressed"] == "silence" for a in body["alerts"])


async def test_kill_leader_mid_send(ha_lab: HaLab) -> None:
    """3. kill -9 the leader while PagerDuty holds its trigger: the new leader sends that row again
    first (in doubt), counts one redelivery, and every trigger comes before the resolve."""
    await ha_lab.start(2, failover=FAILOVER)
    old = await ha_lab.wait_leader()
    ha_lab.pagerduty.hold()
    ha_lab.target.down(CHECK)
    await ha_lab.pagerduty.wait_held()
    old.kill()
    new = await ha_lab.wait_leader(not_=old, timeout_s=10)
    ha_lab.pagerduty.release()  # by now the dead sender's request is dropped, unanswered
    await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    await until(lambda: _redelivered(new), "one redelivery counted")
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish(one_trigger=False)
    assert [e.event_action for e in ha_lab.pagerduty.events] == ["trigger", "trigger", "resolve"]
    assert ha_lab.pagerduty.events[0].status is None  # the first sender died waiting for it


async def _redelivered(replica: Replica) -> bool:
    return await replica.metric("monitor_outbox_redelivered_total", notifier="oncall") == 1


async def test_paused_while_retrying(ha_lab: HaLab) -> None:
    """5. SIGSTOP the leader while its trigger waits for a retry (503): the new leader's send is the
    one accepted; after SIGCONT the old leader's retry is refused (fenced), not sent."""
    await ha_lab.start(2, failover=FAILOVER)
    old = await ha_lab.wait_leader()
    ha_lab.pagerduty.fail(503)
    ha_lab.target.down(CHECK)
    await ha_lab.pagerduty.wait_event("trigger")
    old.pause()
    ha_lab.pagerduty.accept()
    await ha_lab.wait_leader(not_=old, timeout_s=15)
    await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    old.resume()
    await until(lambda: _fenced(old), "the old leader's retry fenced", timeout_s=5)
    await asyncio.sleep(1)
    assert len(ha_lab.pagerduty.of("trigger", accepted=True)) == 1
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()


async def _fenced(replica: Replica) -> bool:
    samples = (await replica.metrics()).get("monitor_cluster_fenced_total", [])
    return sum(value for _, value in samples) >= 1


@pytest.fixture
async def own_pg_lab(tmp_path: Path) -> AsyncIterator[tuple[HaLab, PostgresCluster]]:
    """An HaLab on a PostgreSQL cluster of its own, which the test may restart (the shared one
    keeps connections of the fixtures open)."""
    with PostgresCluster() as pg:
        lab = await HaLab(pg, "postgres", tmp_path).open()
        try:
            yield lab, pg
        finally:
            await lab.aclose()


async def test_postgres_fast_restart_while_pending(own_pg_lab: tuple[HaLab, PostgresCluster]) -> None:
    """8. PostgreSQL restarts (fast) while the alert is pending: /readyz 503 then 200, one leader
    within P + 1 s of PostgreSQL being back, one trigger, and the resolve."""
    ha_lab, pg_cluster = own_pg_lab
    a, b = await ha_lab.start(2, failover=FAILOVER)
    leader = await ha_lab.wait_leader()
    ha_lab.target.down(CHECK)
    await until(lambda: _alert_ids(leader, CHECK), "the alert pending")
    restarted = asyncio.create_task(asyncio.to_thread(_restart, pg_cluster))
    await until(lambda: _not_ready(a), "/readyz 503 while PostgreSQL is down", timeout_s=10)
    await restarted
    back = time.monotonic()
    await ha_lab.scraper.wait(
        lambda s: len(s.leaders.get(0, ())) == 1 and s.t > back, 10, "a leader after the restart"
    )
    assert time.monotonic() - back < 1.2 + 1.0 + 0.5  # P (jittered) + 1 s + one scrape
    for replica in (a, b):
        await until(lambda r=replica: _store_ready(r), f"{replica.name} ready again", timeout_s=40)
    await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await ha_lab.finish()


def _restart(pg: PostgresCluster) -> None:
    pg._run(["pg_ctl", "-D", str(pg.datadir), "-l", str(pg.logfile), "-m", "fast", "-w", "restart"])


async def _not_ready(replica: Replica) -> bool:
    return not await _store_ready(replica)


@pytest.fixture
async def bouncers(ha_lab: HaLab) -> AsyncIterator[dict[PoolMode, PgBouncer]]:
    """Debian pgbouncer before the test's PostgreSQL, one per pool mode."""
    started: dict[PoolMode, PgBouncer] = {}
    try:
        for mode in ("transaction", "session"):
            started[mode] = await PgBouncer(ha_lab.pg, mode).start()
        yield started
    finally:
        for bouncer in started.values():
            await bouncer.aclose()


async def test_pgbouncer_transaction_mode_never_leads(
    ha_lab: HaLab, bouncers: dict[PoolMode, PgBouncer]
) -> None:
    """12. Behind pgbouncer in transaction mode a replica refuses to lead and logs why; in session
    mode it leads."""
    pooled = await _behind_pgbouncer(ha_lab, bouncers["transaction"])
    await until(lambda: _refused(pooled), "the refusal logged", timeout_s=10)
    assert ha_lab.leaders() == () and await role_of(pooled) == "follower"
    session = await _behind_pgbouncer(ha_lab, bouncers["session"])
    assert await ha_lab.wait_leader() is session
    await ha_lab.finish()
    assert all(pooled.name not in s.leaders.get(0, ()) for s in ha_lab.scraper.rounds)


async def _behind_pgbouncer(lab: HaLab, bouncer: PgBouncer) -> Replica:
    """A replica whose state store is reached through `bouncer` (and a proxy of its own)."""
    name, port = f"r{len(lab.replicas)}", free_port()
    proxy = await PgProxy(bouncer.port).start()
    path = lab.dir / f"{name}.toml"
    path.write_text(lab.config_text(name, port, proxy.port, failover=FAILOVER))
    replica = Replica(name, 0, path, port, proxy, {})
    lab.replicas.append(replica)
    return await replica.start()


async def _refused(replica: Replica) -> bool:
    return "refusing to lead" in replica.log() and "pgbouncer in transaction mode" in replica.log()


async def test_depends_on_across_shards(ha_lab: HaLab) -> None:
    """11 (dependencies). `backend-api` (shard 1 of 2) depends on `database` (shard 0): both down
    page once, for the database, and backend-api shows `suppressed: "dependency"`; with shard 0
    dead, backend-api pages once its dependency's state is older than 2 x interval + failover."""
    db_shard, api_shard = await ha_lab.start(
        2, shards=2, failover=FAILOVER, checks=("database", CHECK), extra='depends_on = ["database"]'
    )
    assert (db_shard.shard, api_shard.shard) == (0, 1)  # the hashmod of these names
    await ha_lab.wait_leader(0)
    await ha_lab.wait_leader(1)
    ha_lab.target.down("database", CHECK)
    [page] = await ha_lab.pagerduty.wait_event("trigger", accepted=True)
    assert page.body["payload"]["component"] == "database"
    await until(lambda: _suppressed_by(api_shard, CHECK, "dependency"), "backend-api suppressed", 5)
    ha_lab.target.up("database", CHECK)
    await ha_lab.pagerduty.wait_event("resolve")
    await asyncio.sleep(1.5)  # backend-api's own alert resolved, never paged
    assert await api_shard.metric("monitor_cluster_dependency_stale_total") == 0.0
    db_shard.kill()
    ha_lab.target.down(CHECK)
    down = time.monotonic()
    triggers = await ha_lab.pagerduty.wait_event("trigger", 2, accepted=True, timeout_s=20)
    bound_s = 2 * 1.0 + 4.0  # database's interval and the failover
    assert triggers[1].body["payload"]["component"] == CHECK
    assert bound_s - 1.0 <= triggers[1].t - down <= bound_s + 4.0
    assert await api_shard.metric("monitor_cluster_dependency_stale_total") == 1.0  # only this page
    ha_lab.target.up(CHECK)
    await ha_lab.pagerduty.wait_event("resolve", 2)
    await ha_lab.finish()


async def _firing(replica: Replica, count: int) -> bool:
    return await replica.metric("monitor_alerts_firing", severity="critical") == count


async def _suppressed_by(replica: Replica, check: str, why: str) -> bool:
    body = await replica.get_json("/api/v1/alerts")
    return any(a["check"] == check and a["suppressed"] == why for a in body["alerts"])
