"""The state store: alerts, acknowledgements, silences and the notification outbox.

Embedded SQLite is the default (`sqlite:///monitor-state.db`); `postgresql://...` shares state
between replicas; `memory` keeps nothing across a restart. Records are JSON documents: the
alerting layer owns their shape, the store owns durability.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg


@dataclass(slots=True)
class OutboxItem:
    """One notification waiting for (or done with) delivery through one notifier."""

    id: int
    notifier: str
    payload: dict[str, Any]
    created_at: float
    next_at: float
    attempts: int = 0
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert document as the store keeps it; `key` names one episode of one alert."""

    key: str
    alert_id: str
    active: bool
    updated_at: float
    doc: dict[str, Any]


Outgoing = list[tuple[str, dict[str, Any]]]  # (notifier, notification payload)


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool:
        """True when the store answers; `/readyz` depends on it."""
        ...

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        """One transaction: the alert's new state and the notifications it decided on. A crash
        can then neither lose a page (state saved, notification not) nor repeat one (the reverse)."""
        ...

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]: ...
    async def pending(self) -> list[OutboxItem]: ...
    async def reschedule(self, item: OutboxItem) -> None: ...
    async def finish(self, item: OutboxItem, status: str) -> None: ...
    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None: ...
    async def delete_silence(self, silence_id: str) -> bool: ...
    async def load_silences(self) -> list[dict[str, Any]]: ...


class MemoryStore:
    """Throwaway state: nothing survives a restart."""

    def __init__(self) -> None:
        self._alerts: dict[str, tuple[bool, float, dict[str, Any]]] = {}
        self._outbox: dict[int, OutboxItem] = {}
        self._silences: dict[str, dict[str, Any]] = {}
        self._next_id = 1

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        if alert is not None:
            self._alerts[alert.key] = (alert.active, alert.updated_at, json.loads(json.dumps(alert.doc)))
        items = []
        for notifier, payload in outgoing:
            item = OutboxItem(self._next_id, notifier, payload, now, now)
            self._outbox[item.id] = item
            self._next_id += 1
            items.append(item)
        return items

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        return [
            json.loads(json.dumps(doc))
            for is_active, updated, doc in self._alerts.values()
            if is_active == active and updated >= since
        ]

    async def pending(self) -> list[OutboxItem]:
        return sorted(self._outbox.values(), key=lambda i: i.id)

    async def reschedule(self, item: OutboxItem) -> None:
        return None  # the worker's item is the stored item

    async def finish(self, item: OutboxItem, status: str) -> None:
        self._outbox.pop(item.id, None)

    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None:
        self._silences[silence_id] = doc

    async def delete_silence(self, silence_id: str) -> bool:
        return self._silences.pop(silence_id, None) is not None

    async def load_silences(self) -> list[dict[str, Any]]:
        return list(self._silences.values())


_SCHEMA = """
create table if not exists alerts (
  key text primary key, alert_id text not null, active integer not null,
  updated_at real not null, doc text not null);
create index if not exists alerts_active on alerts (active, updated_at);
create table if not exists outbox (
  id integer primary key autoincrement, notifier text not null, payload text not null,
  created_at real not null, next_at real not null, attempts integer not null default 0,
  last_error text, status text not null default 'pending');
create index if not exists outbox_pending on outbox (status, id);
create table if not exists silences (id text primary key, doc text not null);
"""


class SqliteStore:
    """One file next to the daemon; aiosqlite keeps its I/O off the event loop. Every write is
    committed before it returns: the outbox is written before any send."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store not open")
        return self._db

    async def open(self) -> None:
        import aiosqlite  # only a daemon whose state is SQLite loads it

        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        # WAL + synchronous=NORMAL: a committed row survives a process kill (not a power cut).
        await self._db.execute("pragma journal_mode=wal")
        await self._db.execute("pragma synchronous=normal")
        await self._db.executescript(_SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        if self._db is None:
            return False
        try:
            await self._db.execute("select 1")
        except Exception:
            return False
        return True

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        db = self.db
        items = []
        try:
            if alert is not None:
                await db.execute(
                    "insert into alerts (key, alert_id, active, updated_at, doc) values (?, ?, ?, ?, ?) "
                    "on conflict(key) do update set active = excluded.active, "
                    "updated_at = excluded.updated_at, doc = excluded.doc",
                    (alert.key, alert.alert_id, int(alert.active), alert.updated_at, json.dumps(alert.doc)),
                )
            for notifier, payload in outgoing:
                cursor = await db.execute(
                    "insert into outbox (notifier, payload, created_at, next_at) values (?, ?, ?, ?)",
                    (notifier, json.dumps(payload), now, now),
                )
                assert cursor.lastrowid is not None
                items.append(OutboxItem(cursor.lastrowid, notifier, payload, now, now))
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
        return items

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        async with self.db.execute(
            "select doc from alerts where active = ? and updated_at >= ? order by updated_at",
            (int(active), since),
        ) as cursor:
            return [json.loads(row[0]) for row in await cursor.fetchall()]

    async def pending(self) -> list[OutboxItem]:
        async with self.db.execute(
            "select id, notifier, payload, created_at, next_at, attempts, last_error "
            "from outbox where status = 'pending' order by id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    async def reschedule(self, item: OutboxItem) -> None:
        await self.db.execute(
            "update outbox set next_at = ?, attempts = ?, last_error = ? where id = ?",
            (item.next_at, item.attempts, item.last_error, item.id),
        )
        await self.db.commit()

    async def finish(self, item: OutboxItem, status: str) -> None:
        # Sent rows are deleted; failed rows stay, with their reason, for people to inspect.
        if status == "sent":
            await self.db.execute("delete from outbox where id = ?", (item.id,))
        else:
            await self.db.execute(
                "update outbox set status = ?, attempts = ?, last_error = ? where id = ?",
                (status, item.attempts, item.last_error, item.id),
            )
        await self.db.commit()

    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None:
        await self.db.execute(
            "insert into silences (id, doc) values (?, ?) on conflict(id) do update set doc = excluded.doc",
            (silence_id, json.dumps(doc)),
        )
        await self.db.commit()

    async def delete_silence(self, silence_id: str) -> bool:
        cursor = await self.db.execute("delete from silences where id = ?", (silence_id,))
        await self.db.commit()
        return cursor.rowcount > 0

    async def load_silences(self) -> list[dict[str, Any]]:
        async with self.db.execute("select doc from silences") as cursor:
            return [json.loads(row[0]) for row in await cursor.fetchall()]


_PG_SCHEMA = """
create table if not exists monitor_alerts (
  key text primary key, alert_id text not null, active boolean not null,
  updated_at double precision not null, doc jsonb not null);
create index if not exists monitor_alerts_active on monitor_alerts (active, updated_at);
create table if not exists monitor_outbox (
  id bigserial primary key, notifier text not null, payload jsonb not null,
  created_at double precision not null, next_at double precision not null,
  attempts integer not null default 0, last_error text, status text not null default 'pending');
create index if not exists monitor_outbox_pending on monitor_outbox (status, id);
create table if not exists monitor_silences (id text primary key, doc jsonb not null);
"""


class PostgresStore:
    """Shared state in PostgreSQL, for replicas that share alerts (tables prefixed `monitor_`)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store not open")
        return self._pool

    async def open(self) -> None:
        import asyncpg  # ~3.5 MB resident: only a daemon whose state is PostgreSQL loads it

        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4, timeout=10)
        async with self._pool.acquire() as conn:
            await conn.execute(_PG_SCHEMA)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                await conn.fetchval("select 1")
        except Exception:
            return False
        return True

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        items = []
        async with self.pool.acquire() as conn, conn.transaction():
            if alert is not None:
                await conn.execute(
                    "insert into monitor_alerts (key, alert_id, active, updated_at, doc) "
                    "values ($1, $2, $3, $4, $5) on conflict (key) do update set active = excluded.active, "
                    "updated_at = excluded.updated_at, doc = excluded.doc",
                    alert.key,
                    alert.alert_id,
                    alert.active,
                    alert.updated_at,
                    json.dumps(alert.doc),
                )
            for notifier, payload in outgoing:
                item_id = await conn.fetchval(
                    "insert into monitor_outbox (notifier, payload, created_at, next_at) "
                    "values ($1, $2, $3, $3) returning id",
                    notifier,
                    json.dumps(payload),
                    now,
                )
                items.append(OutboxItem(item_id, notifier, payload, now, now))
        return items

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "select doc::text from monitor_alerts where active = $1 and updated_at >= $2 order by updated_at",
            active,
            since,
        )
        return [json.loads(r[0]) for r in rows]

    async def pending(self) -> list[OutboxItem]:
        rows = await self.pool.fetch(
            "select id, notifier, payload::text, created_at, next_at, attempts, last_error "
            "from monitor_outbox where status = 'pending' order by id"
        )
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    async def reschedule(self, item: OutboxItem) -> None:
        await self.pool.execute(
            "update monitor_outbox set next_at = $1, attempts = $2, last_error = $3 where id = $4",
            item.next_at,
            item.attempts,
            item.last_error,
            item.id,
        )

    async def finish(self, item: OutboxItem, status: str) -> None:
        if status == "sent":
            await self.pool.execute("delete from monitor_outbox where id = $1", item.id)
        else:
            await self.pool.execute(
                "update monitor_outbox set status = $1, attempts = $2, last_error = $3 where id = $4",
                status,
                item.attempts,
                item.last_error,
                item.id,
            )

    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None:
        await self.pool.execute(
            "insert into monitor_silences (id, doc) values ($1, $2) "
            "on conflict (id) do update set doc = excluded.doc",
            silence_id,
            json.dumps(doc),
        )

    async def delete_silence(self, silence_id: str) -> bool:
        result = await self.pool.execute("delete from monitor_silences where id = $1", silence_id)
        return result.endswith(" 1")

    async def load_silences(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self.pool.fetch("select doc::text from monitor_silences")]


def make_store(url: str) -> Store:
    """`memory`, `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...`."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///") or ":memory:")
    return PostgresStore(url)
