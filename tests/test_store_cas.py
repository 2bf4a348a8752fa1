"""Compare-and-set on alert documents (HA.md (b) Fencing 2): every update of an alert row is
`where key = $k and version = $v`, a new row an insert that must find none; on a Conflict the
alert is read again and decided again. Two stores on one database are two leaders whose shards
overlap for a moment (a rolling reshard)."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from alerts.model import alert_id
from monitor.config import parse_config
from monitor.store import AlertRecord, Conflict, MemoryStore, Store, Write
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import SqliteStore
from tests.alerts.harness import Harness, down, up, utc
from tests.fakes.clock import FakeClock
from tests.fakes.postgres import PostgresCluster

KEY = "db-up:100.000"


def record(state: str, active: bool = True, at: float = 100.0) -> AlertRecord:
    return AlertRecord(KEY, "db-up", active, at, {"id": "db-up", "state": state})


async def test_a_stale_update_conflicts_and_writes_nothing_of_its_round(stores: Callable[[], Store]) -> None:
    a, b = stores(), stores()
    await a.open()
    await b.open()
    try:
        await a.commit(record("firing"), [("oncall", {"event": "firing", "alert_id": "db-up"})], 100.0)
        assert await b.load_alerts(active=True) == [{"id": "db-up", "state": "firing"}]  # b knows v1
        await a.commit(record("resolved", active=False), [("oncall", {"event": "resolved"})], 101.0)
        other = AlertRecord("web-up:1.000", "web-up", True, 101.0, {"id": "web-up"})
        with pytest.raises(Conflict) as raised:  # b's resolve of v1: a moved it to v2
            await b.apply(
                [
                    Write("commit", (other, [("oncall", {"event": "firing", "alert_id": "web-up"})], 101.0)),
                    Write("commit", (record("resolved", active=False), [("oncall", {"event": "x"})], 101.0)),
                ]
            )
        assert raised.value.keys == (KEY,)
        # Nothing of b's round: one trigger and one resolve, both a's; no web-up.
        assert [i.payload["event"] for i in await a.pending()] == ["firing", "resolved"]
        assert await a.load_alerts(active=True) == []
        # Read again, b sees the episode ended, and goes on from the version it read.
        assert await b.load_alert(KEY) == (False, {"id": "db-up", "state": "resolved"})
        assert await b.load_alert("nothing:0") is None
        await b.commit(other, [], 102.0)
        await b.commit(AlertRecord(other.key, "web-up", True, 103.0, {"id": "web-up", "n": 2}), [], 103.0)
        assert await a.load_alerts(active=True) == [{"id": "web-up", "n": 2}]
    finally:
        await a.close()
        await b.close()


async def test_a_second_insert_of_one_episode_conflicts(stores: Callable[[], Store]) -> None:
    a, b = stores(), stores()
    await a.open()
    await b.open()
    try:
        await a.commit(record("firing"), [], 100.0)
        with pytest.raises(Conflict):  # b never read it: its insert finds a's row
            await b.commit(record("firing"), [("oncall", {"event": "firing"})], 100.0)
        assert await a.pending() == []
    finally:
        await a.close()
        await b.close()


async def test_memory_store_keeps_the_same_interface() -> None:
    store = MemoryStore()
    await store.commit(record("firing"), [], 100.0)
    await store.commit(record("firing", at=101.0), [], 101.0)  # its own write: the version it knows
    store.versions.known[KEY] = 1  # as if read before another writer's update
    with pytest.raises(Conflict):
        await store.commit(record("resolved", active=False), [], 102.0)
    assert await store.load_alert(KEY) == (True, {"id": "db-up", "state": "firing"})
    await store.commit(record("resolved", active=False), [], 102.0)
    assert await store.load_alerts(active=True) == []


POLICY = """
[notifiers.oncall]
type = "webhook"
url = "http://127.0.0.1:1/pagerduty"
[[routes]]
notify = ["oncall"]
repeat = "1h"
[[checks]]
name = "database"
type = "tcp"
host = "db"
port = 5432
"""


async def test_overlapping_leaders_page_and_resolve_once(pg_cluster: PostgresCluster) -> None:
    """The old owner pages and later resolves; the new owner (same check, for a moment) loaded the
    firing alert, so it does not page, and its resolve conflicts: read again, it is over."""
    config = parse_config(textwrap.dedent(POLICY), {})
    clock = FakeClock(utc(2026, 11, 23, 10, 0).timestamp())
    async with pg_cluster.database("cas_overlap") as db:
        old = Harness(config, clock, store=PostgresStore(pg_cluster.dsn(database=db)))
        new = Harness(config, clock, store=PostgresStore(pg_cluster.dsn(database=db)))
        await old.store.open()
        await new.store.open()
        try:
            await old.run("database", down())
            await old.run("database", down())
            assert old.events() == [("oncall", "firing", "database", "critical")]
            await new.manager.load()
            await new.outbox.load()
            await new.run("database", down())
            await old.run("database", up())
            await new.run("database", up())  # its resolve: Conflict, read again, nothing to send
            await new.advance(120)
            await old.advance(120)
            assert [e[1] for e in old.events()] == ["firing", "resolved"]
            assert new.events() == []
            assert alert_id("database", "up") not in new.manager.active
            assert await new.store.pending() == []
        finally:
            await old.store.close()
            await new.store.close()


async def test_an_sqlite_file_from_before_versions_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the alerts table as it was before compare-and-set
        db.execute(
            "create table alerts (key text primary key, alert_id text not null, active integer not null, "
            "updated_at real not null, doc text not null)"
        )
        db.execute("insert into alerts values (?, 'db-up', 1, 100.0, '{\"state\": \"firing\"}')", (KEY,))
    store = SqliteStore(str(path))
    await store.open()
    try:
        assert await store.load_alerts(active=True) == [{"state": "firing"}]
        await store.commit(record("resolved", active=False), [], 101.0)  # version 0 -> 1
        assert await store.load_alert(KEY) == (False, {"id": "db-up", "state": "resolved"})
    finally:
        await store.close()
