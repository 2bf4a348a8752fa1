"""Every state store keeps alerts, silences and the outbox the same way; durable ones across reopen."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from monitor.store import AlertRecord, MemoryStore, Store, StoreError, Write
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import SqliteStore
from tests.fakes.postgres import PostgresCluster


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def make(
    request: pytest.FixtureRequest, tmp_path: Path, pg_cluster: PostgresCluster
) -> AsyncIterator[Callable[[], Store]]:
    """A factory of stores over the same underlying state (a reopen, as after a restart)."""
    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
        return
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        yield lambda: SqliteStore(path)
        return
    async with pg_cluster.database(f"state_{abs(hash(request.node.name)) % 10**8}") as db:
        yield lambda: PostgresStore(pg_cluster.dsn(database=db))


async def test_outbox_alerts_silences_survive_reopen(make: Callable[[], Store]) -> None:
    store = make()
    await store.open()
    alert = AlertRecord("a1:1", "a1", True, 100.0, {"id": "a1", "state": "firing"})
    [first] = await store.commit(alert, [("oncall", {"event": "firing", "alert_id": "a1"})], 100.0)
    [second] = await store.commit(None, [("oncall", {"event": "resolved", "alert_id": "a1"})], 101.0)
    first.attempts, first.next_at, first.last_error = 2, 130.0, "HTTP 500"
    await store.reschedule(first)
    await store.commit(AlertRecord("a2:1", "a2", False, 90.0, {"id": "a2", "state": "resolved"}), [], 90.0)
    await store.save_silence("s1", {"id": "s1", "checks": ["web*"], "start": 1.0, "end": 2.0, "comment": ""})
    assert await store.ping()
    await store.close()

    store = make()
    await store.open()
    try:
        pending = await store.pending()
        assert [(i.id, i.payload["event"]) for i in pending] == [
            (first.id, "firing"),
            (second.id, "resolved"),
        ]
        assert (pending[0].attempts, pending[0].next_at, pending[0].last_error) == (2, 130.0, "HTTP 500")
        assert await store.load_alerts(active=True) == [{"id": "a1", "state": "firing"}]
        assert await store.load_alerts(active=False, since=80.0) == [{"id": "a2", "state": "resolved"}]
        assert await store.load_alerts(active=False, since=95.0) == []
        assert [s["id"] for s in await store.load_silences()] == ["s1"]
        await store.finish(pending[0], "sent")
        pending[1].last_error = "HTTP 400"
        await store.finish(pending[1], "failed")
        assert await store.pending() == []
        assert await store.delete_silence("s1")
        assert not await store.delete_silence("s1")
    finally:
        await store.close()


async def test_apply_is_one_transaction_all_or_nothing(make: Callable[[], Store]) -> None:
    store = make()
    await store.open()
    try:
        [kept] = await store.commit(None, [("oncall", {"event": "firing", "alert_id": "a0"})], 1.0)
        kept.attempts = 1
        results = await store.apply(
            [
                Write(
                    "commit",
                    (AlertRecord("a1:1", "a1", True, 2.0, {"id": "a1"}), [("oncall", {"n": 1})], 2.0),
                ),
                Write("save_silence", ("s1", {"id": "s1"})),
                Write("reschedule", (kept,)),
                Write("delete_silence", ("s1",)),
                Write("probe"),
            ]
        )
        assert [type(r) for r in results] == [list, type(None), type(None), bool, type(None)]
        assert results[3] is True  # the silence saved earlier in the same transaction
        assert [i.payload for i in results[0]] == [{"n": 1}]

        bad = [("oncall", {"n": 2}), ("oncall", {"n": 3, "at": object()})]  # json cannot encode it
        with pytest.raises(TypeError):
            await store.apply(
                [
                    Write("save_silence", ("s2", {"id": "s2"})),
                    Write("commit", (AlertRecord("a2:1", "a2", True, 3.0, {"id": "a2"}), bad, 3.0)),
                ]
            )
        assert await store.load_silences() == []
        assert await store.load_alerts(active=True) == [{"id": "a1"}]
        assert [i.payload for i in await store.pending()] == [{"event": "firing", "alert_id": "a0"}, {"n": 1}]
    finally:
        await store.close()


def _garbage(path: Path) -> str:
    path.write_bytes(b"\x00not SQLite\xff" * 512)
    return f"{path} is not an SQLite database"


def _directory(path: Path) -> str:
    path.mkdir()
    return f"{path} is a directory"


def _under_a_file(path: Path) -> str:
    path.parent.write_text("a file, not a directory")
    return f"{path}: {path.parent} is not a directory"


@pytest.mark.parametrize(
    "make", [_garbage, _directory, _under_a_file], ids=["garbage", "directory", "parent-is-a-file"]
)
async def test_an_unusable_sqlite_file_is_a_store_error_and_leaves_no_thread(
    tmp_path: Path, make: Callable[[Path], str]
) -> None:
    path = tmp_path / ("data/state.db" if make is _under_a_file else "state.db")
    expected = make(path)
    before = set(threading.enumerate())
    store = SqliteStore(str(path))
    with pytest.raises(StoreError) as info:
        await store.open()
    assert str(info.value) == expected
    # aiosqlite's connection thread is no daemon: one left running keeps the process from exiting.
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" not in thread.name:
            continue  # asyncio's executor threads end with the loop
        thread.join(timeout=5)
        assert not thread.is_alive(), thread


async def test_load_alerts_changed_gives_every_version_and_only_the_changed_documents(
    make: Callable[[], Store],
) -> None:
    store = make()
    await store.open()
    try:
        # More than one query's worth of keys (SQLite binds at most 500 at a time here).
        records = [AlertRecord(f"a{i}:1", f"a{i}", True, 1.0, {"id": f"a{i}", "n": 0}) for i in range(1200)]
        await store.apply([Write("commit", (r, [], 1.0)) for r in records])
        versions, docs = await store.load_alerts_changed({})
        assert sorted(versions) == sorted(r.key for r in records)
        assert sorted(d["id"] for d in docs) == sorted(r.alert_id for r in records)
        assert await store.load_alerts_changed(versions) == (versions, [])  # nothing changed
        await store.commit(AlertRecord("a1:1", "a1", True, 2.0, {"id": "a1", "n": 1}), [], 2.0)
        await store.commit(AlertRecord("a2:1", "a2", False, 2.0, {"id": "a2", "n": 1}), [], 2.0)
        later, docs = await store.load_alerts_changed(versions)
        assert docs == [{"id": "a1", "n": 1}]
        assert later.keys() == versions.keys() - {"a2:1"}  # resolved: no longer active
        assert later["a1:1"] != versions["a1:1"] and later["a3:1"] == versions["a3:1"]
        # What it read is what a compare-and-set write expects next (as after load_alerts).
        await store.commit(AlertRecord("a1:1", "a1", True, 3.0, {"id": "a1", "n": 2}), [], 3.0)
        assert await store.load_alerts_changed(later) == (
            {**later, "a1:1": later["a1:1"] + 1},
            [{"id": "a1", "n": 2}],
        )
    finally:
        await store.close()
