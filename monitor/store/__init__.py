"""The state store: alerts, acknowledgements, silences, the notification outbox, heartbeat pings
and hourly run history.

Embedded SQLite is the default (`sqlite:///monitor-state.db`); `postgresql://...` shares state
between replicas; `memory` keeps nothing across a restart. Records are JSON documents: the
alerting layer owns their shape, the store owns durability.

The daemon uses every store through a `StoreWriter` over a `WatchedStore`: one task writes,
a round of writes at a time in one transaction; a fault is a `StoreError` naming the store and
the problem in one line, counted, and logged when the store starts failing and when it recovers.
"""

from monitor.store.base import (
    OPERATIONS,
    WRITES,
    AckRequest,
    AlertRecord,
    CheckState,
    Conflict,
    DayTotal,
    Fenced,
    Heartbeat,
    HourRow,
    OutboxItem,
    Outgoing,
    Store,
    StoreError,
    Write,
)
from monitor.store.heartbeats import HeartbeatBook
from monitor.store.memory import MemoryStore
from monitor.store.watched import OPERATION_TIMEOUT_S, WatchedStore
from monitor.store.writer import StoreWriter


def make_store(url: str) -> Store:
    """`memory`, `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...`.

    A backend's module, and with it its driver, is imported only when the URL selects it."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        from monitor.store.sqlite import SqliteStore

        return SqliteStore(url.removeprefix("sqlite:///") or ":memory:")
    from monitor.store.postgres import PostgresStore

    return PostgresStore(url)


__all__ = [
    "OPERATIONS",
    "OPERATION_TIMEOUT_S",
    "WRITES",
    "AckRequest",
    "AlertRecord",
    "CheckState",
    "Conflict",
    "DayTotal",
    "Fenced",
    "Heartbeat",
    "HeartbeatBook",
    "HourRow",
    "MemoryStore",
    "OutboxItem",
    "Outgoing",
    "Store",
    "StoreError",
    "StoreWriter",
    "WatchedStore",
    "Write",
    "make_store",
]
