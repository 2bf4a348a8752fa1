"""The one writer: concurrent writers do not mix their transactions, 1,000 commits are a handful of
rounds, and a failing store fails a round once, not once per write."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.store import (
    AlertRecord,
    MemoryStore,
    OutboxItem,
    Store,
    StoreError,
    StoreWriter,
    WatchedStore,
    Write,
)
from monitor.store.base import reason
from monitor.store.sqlite import SqliteStore

WRITERS = 200
BAD = 57  # the commit whose second notification cannot be encoded


async def running(store: Store) -> StoreWriter:
    """The store as the daemon writes to it: a started writer over the watched store."""
    writer = StoreWriter(WatchedStore(store))
    await writer.open()
    writer.start()
    return writer


async def stopped(writer: StoreWriter) -> None:
    await writer.stop()
    await writer.close()


def alert(i: int | str) -> AlertRecord:
    return AlertRecord(f"a{i}:1", f"a{i}", True, 10.0, {"id": f"a{i}", "state": "firing"})


# ---------------------------------------------------------------- the interleaving (shared with
# the demonstration against the old store: these helpers take any object with the write methods)


async def seed(store: Any) -> list[OutboxItem]:
    """Outbox rows for the concurrent reschedules to update."""
    items: list[OutboxItem] = await store.commit(None, [("oncall", {"seed": n}) for n in range(50)], 1.0)
    return items


async def interleave(store: Any, seeded: Sequence[OutboxItem]) -> list[Any]:
    """WRITERS concurrent writes: alert commits with two outbox rows each, silence saves and
    outbox reschedules, one commit failing between its alert and its second row."""

    def write(i: int) -> Any:
        if i == BAD:
            notes = [("oncall", {"alert_id": "abad"}), ("pager", {"alert_id": "abad", "at": object()})]
            return store.commit(alert("bad"), notes, 10.0)
        if i < 100:
            return store.commit(
                alert(i), [("oncall", {"alert_id": f"a{i}"}), ("pager", {"alert_id": f"a{i}"})], 10.0
            )
        if i < 150:
            return store.save_silence(f"s{i}", {"id": f"s{i}", "checks": ["web"]})
        item = seeded[i - 150]
        item.attempts, item.next_at, item.last_error = 3, 500.0 + i, "HTTP 503"
        return store.reschedule(item)

    return await asyncio.gather(*(write(i) for i in range(WRITERS)), return_exceptions=True)


async def assert_stored(store: Any) -> None:
    """Read back from a reopened store: every write but the bad one is there, and of the bad
    one neither its alert nor any of its outbox rows."""
    alerts = {doc["id"] for doc in await store.load_alerts(active=True)}
    assert alerts == {f"a{i}" for i in range(100) if i != BAD}
    rows = await store.pending()
    by_alert: dict[str, list[str]] = {}
    for row in rows:
        if "alert_id" in row.payload:
            by_alert.setdefault(row.payload["alert_id"], []).append(row.notifier)
    assert by_alert == {f"a{i}": ["oncall", "pager"] for i in range(100) if i != BAD}
    seeded = [row for row in rows if "seed" in row.payload]
    assert [(r.attempts, r.next_at, r.last_error) for r in seeded] == [
        (3, 500.0 + i, "HTTP 503") for i in range(150, 200)
    ]
    assert {s["id"] for s in await store.load_silences()} == {f"s{i}" for i in range(100, 150)}


# ---------------------------------------------------------------- the tests


async def test_concurrent_writers_each_get_their_own_transaction(stores: Callable[[], Store]) -> None:
    writer = await running(stores())
    seen_bad = False

    async def read_meanwhile(done: asyncio.Event) -> None:
        nonlocal seen_bad
        while not done.is_set():
            alerts = await writer.load_alerts(active=True)
            seen_bad |= any(doc["id"] == "abad" for doc in alerts)
            await asyncio.sleep(0)

    try:
        seeded = await seed(writer)
        done = asyncio.Event()
        reader = asyncio.create_task(read_meanwhile(done))
        results = await interleave(writer, seeded)
        done.set()
        await reader
    finally:
        await stopped(writer)
    assert isinstance(results[BAD], TypeError), results[BAD]
    assert [r for i, r in enumerate(results) if i != BAD and isinstance(r, BaseException)] == []
    assert not seen_bad  # a read never sees a round that is not committed

    reopened = stores()
    await reopened.open()
    try:
        await assert_stored(reopened)
    finally:
        await reopened.close()


async def test_a_thousand_concurrent_commits_are_a_handful_of_rounds(stores: Callable[[], Store]) -> None:
    writer = await running(stores())
    try:
        before = writer.rounds
        results = await asyncio.gather(
            *(writer.commit(alert(i), [("oncall", {"alert_id": f"a{i}"})], 10.0) for i in range(1000))
        )
        rounds = writer.rounds - before
        assert len({item.id for items in results for item in items}) == 1000
        assert len(await writer.pending()) == 1000
        assert len(await writer.load_alerts(active=True)) == 1000
    finally:
        await stopped(writer)
    assert 1 <= rounds <= 20, rounds


class FlakyStore(MemoryStore):
    """A memory store that refuses every transaction while `down`, as a server gone away."""

    name = "flaky"

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.transactions = 0

    async def apply(self, writes: Sequence[Write]) -> list[Any]:
        self.transactions += 1
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        return await super().apply(writes)

    def fault(self, exc: Exception) -> str | None:
        return f"flaky: {reason(exc)}" if isinstance(exc, OSError) else None


async def test_a_store_fault_fails_the_round_once_and_the_next_round_works() -> None:
    flaky, errors = FlakyStore(), []
    watched = WatchedStore(flaky, errors.append)
    writer = StoreWriter(watched)
    writer.start()
    try:
        seeded = await seed(writer)
        flaky.down, flaky.transactions = True, 0
        writes = [writer.commit(alert(i), [("oncall", {"alert_id": f"a{i}"})], 10.0) for i in range(10)]
        writes += [writer.save_silence(f"s{i}", {"id": f"s{i}"}) for i in range(5)]
        writes += [writer.reschedule(item) for item in seeded[:5]]
        results = await asyncio.gather(*writes, return_exceptions=True)

        assert {type(r) for r in results} == {StoreError}
        assert {str(r) for r in results} == {"flaky: connection refused"}
        assert flaky.transactions == 1  # the round failed once: no write was tried alone
        assert sorted(errors) == ["commit", "reschedule", "save_silence"]  # once per operation
        assert writer.failing == "flaky: connection refused"

        flaky.down = False
        rounds = writer.rounds
        [item] = await writer.commit(alert(1), [("oncall", {"alert_id": "a1"})], 11.0)
        assert writer.rounds == rounds + 1
        assert writer.failing is None
        assert await writer.load_alerts(active=True) == [{"id": "a1", "state": "firing"}]
        assert await writer.load_silences() == []
        assert item in await writer.pending()
    finally:
        await writer.stop()


async def test_a_bad_write_fails_alone_and_its_round_is_written_without_it() -> None:
    store = MemoryStore()
    writer = StoreWriter(store)
    writer.start()
    try:
        results = await asyncio.gather(
            writer.commit(alert(1), [("oncall", {"alert_id": "a1"})], 10.0),
            writer.commit(alert(2), [("oncall", {"alert_id": "a2", "at": object()})], 10.0),
            writer.save_silence("s1", {"id": "s1"}),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
    assert isinstance(results[1], TypeError)
    assert [type(r) for r in (results[0], results[2])] == [list, type(None)]
    assert [doc["id"] for doc in await store.load_alerts(active=True)] == ["a1"]
    assert [item.payload["alert_id"] for item in await store.pending()] == ["a1"]
    assert writer.rounds == 2  # the round failed, uncounted; then its two good writes, each alone


async def test_stop_writes_what_is_queued_first(tmp_path: Path) -> None:
    writer = await running(SqliteStore(str(tmp_path / "state.db")))
    writes = [asyncio.create_task(writer.save_silence(f"s{i}", {"id": f"s{i}"})) for i in range(20)]
    await asyncio.sleep(0)  # queued, not yet written
    await stopped(writer)
    await asyncio.gather(*writes)

    reopened = SqliteStore(str(tmp_path / "state.db"))
    await reopened.open()
    try:
        assert len(await reopened.load_silences()) == 20
    finally:
        await reopened.close()


async def test_a_write_cancelled_before_its_round_is_not_written() -> None:
    store = MemoryStore()
    writer = StoreWriter(store)
    writer.start()
    try:
        kept = asyncio.create_task(writer.save_silence("kept", {"id": "kept"}))
        dropped = asyncio.create_task(writer.save_silence("dropped", {"id": "dropped"}))
        await asyncio.sleep(0)  # both queued; the writer has not run yet
        dropped.cancel()
        await kept
    finally:
        await writer.stop()
    assert [s["id"] for s in await store.load_silences()] == ["kept"]


def test_a_write_names_a_store_operation() -> None:
    with pytest.raises(ValueError, match="not a store write: 'load_alerts'"):
        Write("load_alerts")


async def test_the_daemon_writes_through_one_writer(tmp_path: Path) -> None:
    toml = f"""\
        [monitor]
        listen = "127.0.0.1:0"
        state = "sqlite:///{tmp_path / "state.db"}"
        [[checks]]
        name = "self"
        type = "tcp"
        host = "127.0.0.1"
        port = 9
        interval = "1h"
        """
    registry = CollectorRegistry()
    daemon = Daemon(parse_config(textwrap.dedent(toml), {}), registry=registry)
    assert isinstance(daemon.store, StoreWriter)
    assert daemon.outbox.store is daemon.store and daemon.alerts.store is daemon.store
    await daemon.start()
    try:
        before = registry.get_sample_value("monitor_store_commits_total") or 0.0
        await daemon.add_silence(["self"], 0.0, 4.0e9, "")
        assert registry.get_sample_value("monitor_store_commits_total") == before + 1
    finally:
        await daemon.stop()

    reopened = SqliteStore(str(tmp_path / "state.db"))
    await reopened.open()
    try:
        assert [s["checks"] for s in await reopened.load_silences()] == [["self"]]
    finally:
        await reopened.close()
