"""Sharding: a check's shard is Prometheus' hashmod of its name, and a replica runs only its own.

The golden table `data/hashmod.json` was written by Prometheus itself (2.42, `hashmod`
relabeling of a `check` label, read back from /api/v1/targets): `python -m tests.ha.test_shards`
writes it again; `test_golden_table_is_prometheus_hashmod` checks it against the binary.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from monitor.config import parse_config
from monitor.sharding import members, ownership, shard_of
from tests.fakes.prometheus import PrometheusServer
from tests.ha.harness import HaLab, Replica

GOLDEN = Path(__file__).parent / "data" / "hashmod.json"
MODULI = (2, 3, 7)
NAMES = [
    "backend-api", "collab-tcp", "collab-ws", "database", "frontend", "supabase-memory",
    "supabase-disk", "nightly-backup", "fly-machines", "fly-edge-5xx", "gateway", "public-dns",
    "storage-s3", "auth", "search", "billing-webhook", "queue-consumer", "a", "b.c", "0",
    "check.with.dots", "under_score", "api-v2.eu-west-1", "x" * 200,
]  # fmt: skip


def golden() -> dict[int, dict[str, int]]:
    table = json.loads(GOLDEN.read_text())["shards"]
    return {int(n): shards for n, shards in table.items()}


def prometheus_hashmod(names: list[str], moduli: tuple[int, ...]) -> dict[int, dict[str, int]]:
    """What Prometheus' `hashmod` gives each name, one scrape job per modulus."""
    jobs = [
        {
            "job_name": f"hashmod-{n}",
            "static_configs": [
                {"targets": [f"127.0.0.1:{20000 + i}"], "labels": {"check": name}}
                for i, name in enumerate(names)
            ],
            "relabel_configs": [
                {"source_labels": ["check"], "modulus": n, "target_label": "shard", "action": "hashmod"}
            ],
        }
        for n in moduli
    ]
    config = {"global": {"scrape_interval": "1h", "scrape_timeout": "1s"}, "scrape_configs": jobs}
    with PrometheusServer(config) as prometheus:
        deadline = time.monotonic() + 30
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:  # targets appear after the first discovery sync
            targets = prometheus.api("targets", state="active")["activeTargets"]
            if len(targets) == len(names) * len(moduli):
                break
            time.sleep(0.2)
    table: dict[int, dict[str, int]] = {n: {} for n in moduli}
    for target in targets:
        n = int(target["scrapePool"].removeprefix("hashmod-"))
        table[n][target["labels"]["check"]] = int(target["labels"]["shard"])
    return table


def test_shard_of_matches_the_golden_table() -> None:
    table = golden()
    assert sorted(table) == list(MODULI)
    for n, shards in table.items():
        assert set(shards) == set(NAMES)
        assert {name: shard_of(name, n) for name in NAMES} == shards, f"modulus {n}"
    assert len(set(table[7].values())) > 3  # the table spreads: not every name on one shard


def test_golden_table_is_prometheus_hashmod() -> None:
    assert prometheus_hashmod(NAMES, MODULI) == golden()


def config_with(names: list[str], shards: int, shard: int) -> str:
    checks = "".join(
        f'\n[[checks]]\nname = "{name}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 9\n' for name in names
    )
    cluster = f"[cluster]\nshards = {shards}\nshard = {shard}\n"
    return f'[monitor]\nstate = "postgresql://m@db.example.com/m"\n{cluster}{checks}'


def test_members_partition_the_checks_by_the_table() -> None:
    table = golden()
    for n in MODULI:
        parts = [members(parse_config(config_with(NAMES, n, i), {})) for i in range(n)]
        assert [{name for name in NAMES if table[n][name] == i} for i in range(n)] == parts
    assert members(parse_config(config_with(NAMES, 1, 0), {})) == set(NAMES)


async def test_two_shards_each_run_only_their_checks(ha_lab: HaLab) -> None:
    """One machine, one replica per core: `MONITOR_SHARD=0/2` and `1/2`, `mode = "single"`."""
    checks = NAMES[:6]
    table = golden()[2]
    assert set(table[c] for c in checks) == {0, 1}  # both shards have work
    replicas = await ha_lab.start(2, shards=2, shard_env=True, mode="single", checks=checks)
    for replica in replicas:
        listed = {c["name"] for c in (await replica.get_json("/api/v1/checks"))["checks"]}
        assert listed == {c for c in checks if table[c] == replica.shard}, replica
    # Every check has run (interval 1s) on exactly the replica of its shard.
    await ha_lab.scraper.wait(lambda _: all(ha_lab.target.runners(c) for c in checks), 15, "every check run")
    assert {c: ha_lab.target.runners(c) for c in checks} == {c: {f"r{table[c]}"} for c in checks}
    await ha_lab.stop_all()
    assert ha_lab.exit_codes == {"r0": 0, "r1": 0}


def test_ownership_keeps_a_shard_to_its_checks_and_its_storm() -> None:
    config = parse_config(config_with(["database", "backend-api"], 2, 0), {})  # database: shard 0
    owns = ownership(config)
    assert owns is not None
    assert owns({"check": "database"}) and not owns({"check": "backend-api"})
    assert owns({"kind": "storm", "shard": 0}) and not owns({"kind": "storm", "shard": 1})
    assert owns({"check": "storm", "check_type": "storm", "alert_id": "storm-0-2026-01-01T00:00:00Z"})
    assert not owns({"check": "storm", "check_type": "storm", "alert_id": "storm-1-2026-01-01T00:00:00Z"})
    assert ownership(parse_config(config_with(["database"], 1, 0), {})) is None


def test_a_removed_checks_leftovers_belong_to_the_shard_its_name_hashes_to() -> None:
    """A check taken out of the config may leave an undelivered page or an open alert behind:
    exactly one shard takes them up (before, none did, and its rows stayed pending for good)."""
    removed = {shard_of(name, 2): name for name in ("gone-1", "gone-2", "gone-3", "gone-4")}
    assert set(removed) == {0, 1}  # one removed check of each shard
    owners = [ownership(parse_config(config_with(["database", "backend-api"], 2, i), {})) for i in (0, 1)]
    for shard, name in removed.items():
        claims = [owns is not None and owns({"check": name}) for owns in owners]
        assert claims == [i == shard for i in (0, 1)], (name, claims)


FAILOVER = "4s"


async def _sent(replica: Replica) -> float:
    return await replica.metric("monitor_notifications_total", notifier="oncall", outcome="sent") or 0.0


async def _alerted_checks(replica: Replica) -> set[str]:
    return {a["check"] for a in (await replica.get_json("/api/v1/alerts"))["alerts"]}


async def test_each_shard_keeps_to_its_own_alerts_and_outbox(ha_lab: HaLab) -> None:
    """2 x 1: both shards have a check down while PagerDuty refuses, so both triggers wait in the
    outbox; shard 1's leader restarts (a promotion, which loads alerts and pending rows). Each
    alert pages exactly once, by its own shard's leader, and each lists only its own alert."""
    checks = ("database", "backend-api")
    db_shard, api_shard = await ha_lab.start(2, shards=2, failover=FAILOVER, checks=checks)
    assert (db_shard.shard, api_shard.shard) == (0, 1)  # the hashmod of these names
    await ha_lab.wait_leader(0)
    await ha_lab.wait_leader(1)
    ha_lab.pagerduty.fail(503)
    ha_lab.target.down("database", "backend-api")
    await ha_lab.pagerduty.wait_event("trigger", 2)  # both refused: both rows pending in the store
    api_shard.terminate()
    assert await api_shard.wait_exit() == 0
    await api_shard.start()
    await ha_lab.wait_leader(1)
    ha_lab.pagerduty.accept()
    await ha_lab.pagerduty.wait_event("trigger", 2, accepted=True, timeout_s=20)
    assert await _alerted_checks(db_shard) == {"database"}
    assert await _alerted_checks(api_shard) == {"backend-api"}
    for replica in (db_shard, api_shard):  # each its own shard's alerts: summed over shards, 2
        assert await replica.metric("monitor_alerts_firing", severity="critical") == 1.0, replica
    ha_lab.target.up("database", "backend-api")
    await ha_lab.pagerduty.wait_event("resolve", 2, timeout_s=20)
    # Trigger and resolve each, sent by the leader of the check's own shard (counters since start).
    # (counted once the reply is read: polled, another process)
    end = time.monotonic() + 5
    while (sent := (await _sent(db_shard), await _sent(api_shard))) != (2.0, 2.0):
        assert time.monotonic() < end, f"sent by shard 0, shard 1: {sent}"
        await asyncio.sleep(0.1)
    components = sorted(e.body["payload"]["component"] for e in ha_lab.pagerduty.of(accepted=True))
    assert components == ["backend-api", "backend-api", "database", "database"]
    await ha_lab.finish()


async def _restart_as(replica: Replica, shard: int, shards: int) -> None:
    replica.terminate()
    assert await replica.wait_exit() == 0
    replica.env["MONITOR_SHARD"], replica.shard = f"{shard}/{shards}", shard
    await replica.start()


async def test_rolling_reshard_from_two_to_three_pages_once(ha_lab: HaLab) -> None:
    """11 (reshard). Two shards, both checks down and paged; a third replica joins as 2/3, then
    the two restart one by one as 0/3 and 1/3. `backend-api` moves from 1/2 to 2/3 while both
    lead (the overlap: its resolve is sent once); `database` moves from 0/2 to 1/3 by the
    restarts. One trigger and one resolve per check, with one leader per shard all along."""
    checks = ("backend-api", "database")
    assert [(shard_of(c, 2), shard_of(c, 3)) for c in checks] == [(1, 2), (0, 1)]
    r0, r1 = await ha_lab.start(2, shards=2, shard_env=True, failover=FAILOVER, checks=checks)
    await ha_lab.wait_leader(0)
    await ha_lab.wait_leader(1)
    ha_lab.target.down(*checks)
    await ha_lab.pagerduty.wait_event("trigger", 2, accepted=True)
    [r2] = await ha_lab.start(1, shards=3, placement=[2], shard_env=True, failover=FAILOVER, checks=checks)
    await ha_lab.wait_leader(2)
    end = time.monotonic() + 5
    while await _alerted_checks(r2) != {"backend-api"}:  # loaded when it took over shard 2/3
        assert time.monotonic() < end, "the new shard's leader has not loaded backend-api's alert"
        await asyncio.sleep(0.1)
    ha_lab.target.up("backend-api")  # both 1/2 and 2/3 own it now: one resolve
    await ha_lab.pagerduty.wait_event("resolve")
    await _restart_as(r0, 0, 3)
    await _restart_as(r1, 1, 3)
    await ha_lab.wait_leader(1, not_=None)
    ha_lab.target.up("database")
    await ha_lab.pagerduty.wait_event("resolve", 2)
    assert sorted((e.event_action, e.body["payload"]["component"]) for e in ha_lab.pagerduty.events) == [
        ("resolve", "backend-api"),
        ("resolve", "database"),
        ("trigger", "backend-api"),
        ("trigger", "database"),
    ]
    await ha_lab.finish()


if __name__ == "__main__":
    table = prometheus_hashmod(NAMES, MODULI)
    source = "prometheus hashmod relabeling, read back from /api/v1/targets (tests/ha/test_shards.py)"
    text = json.dumps({"source": source, "shards": table}, indent=1, sort_keys=True)
    GOLDEN.write_text(text + "\n")
