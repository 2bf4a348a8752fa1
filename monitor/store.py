"""The state store: alerts, acknowledgements, silences and the notification outbox.

Embedded SQLite is the default (`sqlite:///monitor-state.db`); `postgresql://...` shares state
between replicas; `memory` keeps nothing across a restart. Records are JSON documents: the
alerting layer owns their shape, the store owns durability.

The daemon uses every store through `WatchedStore`: a fault is a `StoreError` naming the store
and the problem in one line, counted, and logged when the store starts failing and when it
recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, urlsplit

from monitor.models import MASK, format_duration, mask_url

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg

log = logging.getLogger("monitor.store")
T = TypeVar("T")

OPERATION_TIMEOUT_S = 30.0  # a store that answers nothing (a black-holed server) fails, not hangs
# The `operation` label values of monitor_store_errors_total.
OPERATIONS = (
    "ping",
    "probe",
    "commit",
    "reschedule",
    "finish",
    "save_silence",
    "delete_silence",
    "load_alerts",
    "pending",
    "load_silences",
)
# A read that works does not clear a failed write: a locked or full store still reads.
_READS = frozenset({"ping", "load_alerts", "pending", "load_silences"})


class StoreError(Exception):
    """The state store cannot do what was asked; the message is one line naming the store and
    the problem (`/var/lib/monitor/monitor-state.db is not an SQLite database`), no secret."""


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
    name: str  # as messages show it: a path, or a DSN with its credentials masked

    async def open(self) -> None:
        """Raises StoreError when the store cannot be used, saying why."""
        ...

    async def close(self) -> None: ...
    async def ping(self) -> bool:
        """True when the store answers (raises otherwise); `/readyz` depends on it."""
        ...

    async def probe(self) -> None:
        """A real write, to see a failing store recover when nothing else is written."""
        ...

    def fault(self, exc: Exception) -> str | None:
        """The one-line message for `exc` when it is this store failing; None for a bug."""
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

    name = "memory"

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

    async def probe(self) -> None:
        return None

    def fault(self, exc: Exception) -> str | None:
        return None  # nothing here can fail but a bug

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
create table if not exists probe (id integer primary key, at real not null);
"""

# SQLite's own words for a file it cannot use, as an operator would put them.
_SQLITE_PROBLEMS = {
    "file is not a database": " is not an SQLite database",
    "database disk image is malformed": " is corrupt (database disk image is malformed)",
    "attempt to write a readonly database": " is read-only",
    "database is locked": " is locked by another process",
    "database or disk is full": ": disk full",
    "unable to open database file": " cannot be opened",
}
_FILE_CHECK_EVERY_S = 1.0  # how stale "the open file is still the one at the path" may be


def _reason(exc: BaseException) -> str:
    """One line for an exception from a driver or the OS, without "[Errno 111]" noise."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        text = os.strerror(exc.errno) if exc.errno > 0 else (exc.strerror or text)
    text = " ".join(text.split()) or type(exc).__name__
    return text[:1].lower() + text[1:]


def _path_problem(path: str) -> str | None:
    """Why `path` cannot hold an SQLite database, found before SQLite gives its vaguer answer
    (a directory is "unable to open database file"); None when it looks usable. Blocking."""
    file = Path(path)
    try:
        if file.parent.exists() and not file.parent.is_dir():
            return f"{path}: {file.parent} is not a directory"
        file.parent.mkdir(parents=True, exist_ok=True)
        if file.is_dir():
            return f"{path} is a directory"
        # The WAL and shared-memory files are made next to the database: the directory too.
        if (file.exists() and not os.access(file, os.R_OK | os.W_OK)) or not os.access(
            file.parent, os.W_OK | os.X_OK
        ):
            return f"{path}: permission denied"
    except OSError as exc:
        return f"{path}: {_reason(exc)}"
    return None


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _moved(path: str, opened: tuple[int, int]) -> str | None:
    """Why the file at `path` is no longer the one opened; None while it is. Blocking."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"{path} was removed"
    except OSError as exc:
        return f"{path}: {_reason(exc)}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} was replaced by a directory"
    if (st.st_dev, st.st_ino) != opened:
        return f"{path} was replaced by another file"
    return None


class SqliteStore:
    """One file next to the daemon; aiosqlite keeps its I/O off the event loop. Every write is
    committed before it returns: the outbox is written before any send.

    SQLite goes on writing to a file that was removed or replaced (the rows are lost with the
    process), so every operation first checks that the file at the path is the one open; when
    it is not, the store fails until `probe` has reopened the path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = path
        self._db: aiosqlite.Connection | None = None
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file open
        self._checked_at = 0.0
        self._broken: str | None = None  # why the store cannot be used until reopened

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store not open")
        return self._db

    async def open(self) -> None:
        import aiosqlite  # only a daemon whose state is SQLite loads it

        in_memory = self.path == ":memory:"
        if not in_memory and (problem := await asyncio.to_thread(_path_problem, self.path)):
            raise StoreError(problem)
        db = await aiosqlite.connect(self.path)
        try:
            # WAL + synchronous=NORMAL: a committed row survives a process kill (not a power cut).
            await db.execute("pragma journal_mode=wal")
            await db.execute("pragma synchronous=normal")
            await db.executescript(_SCHEMA)
            await db.commit()
            opened = None if in_memory else await asyncio.to_thread(_file_id, self.path)
        except BaseException as exc:
            # The connection is a thread that is no daemon: left running, the process never exits.
            await db.close()
            message = self.fault(exc) if isinstance(exc, Exception) else None
            if message is None:
                raise
            raise StoreError(message) from exc
        self._db, self._opened, self._broken = db, opened, None
        self._checked_at = time.monotonic()

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    def fault(self, exc: Exception) -> str | None:
        import sqlite3

        if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            return None  # a bug in what was asked, not the store failing
        if not isinstance(exc, sqlite3.DatabaseError | OSError | TimeoutError):
            return None
        reason = _reason(exc)
        return self.path + _SQLITE_PROBLEMS.get(reason, f": {reason}")

    async def _checked(self) -> aiosqlite.Connection:
        """The connection, once the file at the path is known to be the one it has open."""
        if self._broken is not None:
            raise StoreError(self._broken)
        db = self.db
        if self._opened is not None and time.monotonic() - self._checked_at >= _FILE_CHECK_EVERY_S:
            problem = await asyncio.to_thread(_moved, self.path, self._opened)
            self._checked_at = time.monotonic()
            if problem is not None:
                self._broken = problem
                raise StoreError(problem)
        return db

    async def ping(self) -> bool:
        db = await self._checked()
        async with db.execute("select count(*) from sqlite_master") as cursor:
            await cursor.fetchone()  # reads the file, where "select 1" would not
        return True

    async def probe(self) -> None:
        if self._broken is not None:
            # The file open was removed or replaced: writes from now on go to the path again.
            if self._db is not None:
                with contextlib.suppress(Exception):
                    await self.close()
            try:
                await self.open()
            except StoreError as exc:
                self._broken = str(exc)
                raise
        db = await self._checked()
        await db.execute("insert or replace into probe (id, at) values (1, ?)", (time.time(),))
        await db.commit()

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        db = await self._checked()
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
        db = await self._checked()
        async with db.execute(
            "select doc from alerts where active = ? and updated_at >= ? order by updated_at",
            (int(active), since),
        ) as cursor:
            return [json.loads(row[0]) for row in await cursor.fetchall()]

    async def pending(self) -> list[OutboxItem]:
        db = await self._checked()
        async with db.execute(
            "select id, notifier, payload, created_at, next_at, attempts, last_error "
            "from outbox where status = 'pending' order by id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    async def reschedule(self, item: OutboxItem) -> None:
        db = await self._checked()
        await db.execute(
            "update outbox set next_at = ?, attempts = ?, last_error = ? where id = ?",
            (item.next_at, item.attempts, item.last_error, item.id),
        )
        await db.commit()

    async def finish(self, item: OutboxItem, status: str) -> None:
        db = await self._checked()
        # Sent rows are deleted; failed rows stay, with their reason, for people to inspect.
        if status == "sent":
            await db.execute("delete from outbox where id = ?", (item.id,))
        else:
            await db.execute(
                "update outbox set status = ?, attempts = ?, last_error = ? where id = ?",
                (status, item.attempts, item.last_error, item.id),
            )
        await db.commit()

    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None:
        db = await self._checked()
        await db.execute(
            "insert into silences (id, doc) values (?, ?) on conflict(id) do update set doc = excluded.doc",
            (silence_id, json.dumps(doc)),
        )
        await db.commit()

    async def delete_silence(self, silence_id: str) -> bool:
        db = await self._checked()
        cursor = await db.execute("delete from silences where id = ?", (silence_id,))
        await db.commit()
        return cursor.rowcount > 0

    async def load_silences(self) -> list[dict[str, Any]]:
        db = await self._checked()
        async with db.execute("select doc from silences") as cursor:
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
create table if not exists monitor_store_probe (id integer primary key, at double precision not null);
"""


class PostgresStore:
    """Shared state in PostgreSQL, for replicas that share alerts (tables prefixed `monitor_`)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = mask_url(dsn)
        parts = urlsplit(dsn)
        given = [parts.password, *(v for k, v in parse_qsl(parts.query) if k == "password")]
        self._secrets = [s for s in given if s]  # kept out of every message, whatever the driver says
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store not open")
        return self._pool

    async def open(self) -> None:
        import asyncpg  # ~3.5 MB resident: only a daemon whose state is PostgreSQL loads it

        try:
            pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4, timeout=10)
        except Exception as exc:
            if (message := self.fault(exc)) is None:
                raise
            raise StoreError(message) from exc
        try:
            async with pool.acquire() as conn:
                await conn.execute(_PG_SCHEMA)
        except BaseException as exc:
            pool.terminate()
            message = self.fault(exc) if isinstance(exc, Exception) else None
            if message is None:
                raise
            raise StoreError(message) from exc
        self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def fault(self, exc: Exception) -> str | None:
        import asyncpg

        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return None  # a bug in what was asked, not the store failing
        if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError):
            return None
        reason = _reason(exc)
        for secret in self._secrets:
            reason = reason.replace(secret, MASK)
        return f"{self.name}: {reason}"

    async def ping(self) -> bool:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("select 1")
        return True

    async def probe(self) -> None:
        await self.pool.execute(
            "insert into monitor_store_probe (id, at) values (1, extract(epoch from now())) "
            "on conflict (id) do update set at = excluded.at"
        )

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


class WatchedStore:
    """A store as the daemon uses it: a fault is a StoreError, counted by operation and logged
    once per state change (when the store starts failing, when it recovers); `failing` holds the
    latest reason meanwhile. A failed write is only cleared by a write that works: a store that
    still reads may not take writes (locked, disk full)."""

    def __init__(self, store: Store, on_error: Callable[[str], None] = lambda operation: None) -> None:
        self.store = store
        self.name = store.name
        self.failing: str | None = None
        self._on_error = on_error
        self._writes_failed = False
        self._since = 0.0

    async def open(self) -> None:
        try:
            await self.store.open()
        except StoreError:
            raise
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            raise StoreError(message) from exc

    async def close(self) -> None:
        try:
            await self.store.close()
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            log.warning("state store did not close cleanly", extra={"reason": message})

    async def _do(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                result = await call()
        except StoreError as exc:
            self._failed(operation, exc)
            raise
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            if isinstance(exc, TimeoutError):
                message = f"{self.name}: no answer in {format_duration(OPERATION_TIMEOUT_S)}"
            error = StoreError(message)
            self._failed(operation, error)
            raise error from exc
        if self.failing is not None and (operation not in _READS or not self._writes_failed):
            log.info(
                "state store recovered",
                extra={"reason": f"failed for {format_duration(round(time.monotonic() - self._since))}"},
            )
            self.failing, self._writes_failed = None, False
        return result

    def _failed(self, operation: str, error: StoreError) -> None:
        self._on_error(operation)
        if self.failing is None:
            self._since = time.monotonic()
            log.error("state store failing", extra={"reason": f"{operation}: {error}"})
        self.failing = str(error)
        self._writes_failed |= operation not in _READS

    async def ping(self) -> bool:
        try:
            return await self._do("ping", self.store.ping)
        except StoreError:
            return False

    async def probe(self) -> None:
        await self._do("probe", self.store.probe)

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        return await self._do("commit", lambda: self.store.commit(alert, outgoing, now))

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        return await self._do("load_alerts", lambda: self.store.load_alerts(active, since))

    async def pending(self) -> list[OutboxItem]:
        return await self._do("pending", self.store.pending)

    async def reschedule(self, item: OutboxItem) -> None:
        await self._do("reschedule", lambda: self.store.reschedule(item))

    async def finish(self, item: OutboxItem, status: str) -> None:
        await self._do("finish", lambda: self.store.finish(item, status))

    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None:
        await self._do("save_silence", lambda: self.store.save_silence(silence_id, doc))

    async def delete_silence(self, silence_id: str) -> bool:
        return await self._do("delete_silence", lambda: self.store.delete_silence(silence_id))

    async def load_silences(self) -> list[dict[str, Any]]:
        return await self._do("load_silences", self.store.load_silences)

    def fault(self, exc: Exception) -> str | None:
        return str(exc) if isinstance(exc, StoreError) else self.store.fault(exc)
