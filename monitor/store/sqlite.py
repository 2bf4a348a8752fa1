"""The SQLite state store (the default): one file next to the daemon, through aiosqlite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from monitor.store.base import (
    AckRequest,
    AlertRecord,
    ChangedAlerts,
    CheckState,
    Conflict,
    DayTotal,
    Heartbeat,
    HourRow,
    OutboxItem,
    StoreError,
    Versions,
    Write,
    Writes,
    changed_alerts,
    changed_keys,
    day_totals,
    reason,
    to_ms,
    to_us,
)

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
create table if not exists heartbeats (
  name text primary key, configured_at real not null, last_at real,
  ok integer not null default 1, reason text);
create table if not exists history (
  hour integer not null, name text not null, runs integer not null, failures integer not null,
  p50_us integer, p95_us integer, max_us integer, closed integer not null,
  primary key (hour, name)) without rowid;
create index if not exists history_open on history (hour) where closed = 0;
create table if not exists history_days (
  day integer not null, name text not null, runs integer not null, failures integer not null,
  primary key (day, name)) without rowid;
"""
_HISTORY_COLUMNS = "hour, name, runs, failures, p50_us, p95_us, max_us"
# Keyed by hour first: pruning and the load at start are ranges; one check's hours are seeks,
# one per hour (a second index by name would cost a third more space).
_HOURS_OF_ONE = (
    "with recursive h(hour) as (select ? union all select hour + 1 from h where hour + 1 < ?) "
    "select history.hour, name, runs, failures, p50_us, p95_us, max_us "
    "from h join history on history.hour = h.hour and history.name = ? order by h.hour"
)

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
        return f"{path}: {reason(exc)}"
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
        return f"{path}: {reason(exc)}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path} was replaced by a directory"
    if (st.st_dev, st.st_ino) != opened:
        return f"{path} was replaced by another file"
    return None


class SqliteStore(Writes):
    """One file next to the daemon; aiosqlite keeps its I/O off the event loop. A round of writes
    is committed before `apply` returns: the outbox is written before any send.

    One connection and one lock: a read never runs while a round's transaction is open, so it
    neither sees nor ends one (a second connection would be another database for `:memory:`).

    SQLite goes on writing to a file that was removed or replaced (the rows are lost with the
    process), so every operation first checks that the file at the path is the one open; when
    it is not, the store fails until a `probe` write has reopened the path."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = path
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file open
        self._checked_at = 0.0
        self._broken: str | None = None  # why the store cannot be used until reopened
        self.versions = Versions()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store not open")
        return self._db

    async def open(self) -> None:
        in_memory = self.path == ":memory:"
        if not in_memory and (problem := await asyncio.to_thread(_path_problem, self.path)):
            raise StoreError(problem)
        db = await aiosqlite.connect(self.path)
        try:
            # WAL + synchronous=NORMAL: a committed row survives a process kill (not a power cut).
            await db.execute("pragma journal_mode=wal")
            await db.execute("pragma synchronous=normal")
            await db.executescript(_SCHEMA)
            async with db.execute("select 1 from pragma_table_info('alerts') where name = 'version'") as cur:
                if await cur.fetchone() is None:  # a file from before compare-and-set
                    await db.execute("alter table alerts add column version integer not null default 0")
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
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            return None  # a bug in what was asked, not the store failing
        if not isinstance(exc, sqlite3.DatabaseError | OSError | TimeoutError):
            return None
        why = reason(exc)
        return self.path + _SQLITE_PROBLEMS.get(why, f": {why}")

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

    async def _reopen(self) -> None:
        """The file open was removed or replaced: writes from now on go to the path again."""
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self.close()
        try:
            await self.open()
        except StoreError as exc:
            self._broken = str(exc)
            raise

    async def ping(self) -> bool:
        async with self._lock:
            db = await self._checked()
            async with db.execute("select count(*) from sqlite_master") as cursor:
                await cursor.fetchone()  # reads the file, where "select 1" would not
        return True

    async def apply(self, writes: Sequence[Write]) -> list[Any]:
        async with self._lock:
            if self._broken is not None and any(w.operation == "probe" for w in writes):
                await self._reopen()
            db = await self._checked()
            round_: dict[str, int | None] = {}  # the alert rows' new versions, kept once committed
            try:
                # A round's alert states in two statements (new rows, changed rows): each statement
                # is a trip to the connection's thread and back through the loop, and a storm's
                # round holds hundreds. (Only commits write the alerts table: storing them first
                # keeps every result.)
                records = [w.args[0] for w in writes if w.operation == "commit" and w.args[0] is not None]
                if records:
                    await _store_alerts(db, self.versions, round_, records)
                results = [await self._run(db, write) for write in writes]
                await db.commit()
            except BaseException:
                with contextlib.suppress(Exception):  # the error that matters is the first one
                    await db.rollback()
                raise
        self.versions.committed(round_)
        return results

    async def _run(self, db: aiosqlite.Connection, write: Write) -> Any:
        args = write.args
        match write.operation:
            case "commit":
                return await _commit(db, *args)
            case "reschedule":
                (item,) = args
                await db.execute(
                    "update outbox set next_at = ?, attempts = ?, last_error = ? where id = ?",
                    (item.next_at, item.attempts, item.last_error, item.id),
                )
            case "finish":
                item, status = args
                # Sent rows are deleted; failed rows stay, with their reason, for people to inspect.
                if status == "sent":
                    await db.execute("delete from outbox where id = ?", (item.id,))
                else:
                    await db.execute(
                        "update outbox set status = ?, attempts = ?, last_error = ? where id = ?",
                        (status, item.attempts, item.last_error, item.id),
                    )
            case "save_silence":
                silence_id, doc = args
                await db.execute(
                    "insert into silences (id, doc) values (?, ?) "
                    "on conflict(id) do update set doc = excluded.doc",
                    (silence_id, json.dumps(doc)),
                )
            case "delete_silence":
                cursor = await db.execute("delete from silences where id = ?", args)
                return cursor.rowcount > 0
            case "save_ping":
                name, at, ok, why = args
                await db.execute(
                    "insert into heartbeats (name, configured_at, last_at, ok, reason) "
                    "values (?, ?, ?, ?, ?) "
                    "on conflict(name) do update set last_at = excluded.last_at, ok = excluded.ok, "
                    "reason = excluded.reason "
                    "where heartbeats.last_at is null or excluded.last_at >= heartbeats.last_at",
                    (name, at, at, int(ok), why),
                )
            case "add_heartbeat":
                await db.execute(
                    "insert into heartbeats (name, configured_at) values (?, ?) on conflict(name) do nothing",
                    args,
                )
            case "save_hours":
                rows, closed, keep_from_hour = args
                await db.executemany(
                    "insert or replace into history values (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*_history_values(r), done) for done, part in ((0, rows), (1, closed)) for r in part],
                )
                await db.executemany(
                    "insert into history_days values (?, ?, ?, ?) on conflict (day, name) do update "
                    "set runs = runs + excluded.runs, failures = failures + excluded.failures",
                    [(t.day, t.check, t.runs, t.failures) for t in day_totals(closed)],
                )
                await db.execute("delete from history where hour < ?", (keep_from_hour,))
                await db.execute("delete from history_days where day < ?", (keep_from_hour // 24,))
            case "probe":
                await db.execute("insert or replace into probe (id, at) values (1, ?)", (time.time(),))
        return None

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        async with self._lock:
            db = await self._checked()
            async with db.execute(
                "select doc, key, version from alerts where active = ? and updated_at >= ? "
                "order by updated_at",
                (int(active), since),
            ) as cursor:
                rows = list(await cursor.fetchall())
        if active:
            self.versions.loaded(((r[1], r[2]) for r in rows), every=since == 0.0)
        return [json.loads(row[0]) for row in rows]

    async def load_alerts_changed(self, known: Mapping[str, int]) -> ChangedAlerts:
        async with self._lock:
            db = await self._checked()
            async with db.execute("select key, version from alerts where active = 1") as cursor:
                versions: dict[str, int] = {row[0]: row[1] for row in await cursor.fetchall()}
            rows: list[Any] = []
            changed = changed_keys(versions, known)
            for start in range(0, len(changed), _KEYS_PER_QUERY):
                keys = changed[start : start + _KEYS_PER_QUERY]
                async with db.execute(_CHANGED_ROWS.format(",".join("?" * len(keys))), keys) as cursor:
                    rows += await cursor.fetchall()
        return changed_alerts(versions, changed, rows, self.versions)

    async def load_alert(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        async with self._lock:
            db = await self._checked()
            async with db.execute("select active, doc, version from alerts where key = ?", (key,)) as cursor:
                row = await cursor.fetchone()
        if row is None:
            return None
        self.versions.committed({key: row[2] if row[0] else None})
        return bool(row[0]), json.loads(row[1])

    async def pending(self) -> list[OutboxItem]:
        async with self._lock:
            db = await self._checked()
            async with db.execute(
                "select id, notifier, payload, created_at, next_at, attempts, last_error "
                "from outbox where status = 'pending' order by id"
            ) as cursor:
                rows = await cursor.fetchall()
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6]) for r in rows]

    async def load_silences(self) -> list[dict[str, Any]]:
        async with self._lock:
            db = await self._checked()
            async with db.execute("select doc from silences") as cursor:
                return [json.loads(row[0]) for row in await cursor.fetchall()]

    async def load_heartbeats(self, names: Collection[str] | None = None) -> list[Heartbeat]:
        query = "select name, configured_at, last_at, ok, reason from heartbeats"
        params: tuple[str, ...] = ()
        if names is not None:
            params = tuple(names)
            if not params:
                return []
            query += f" where name in ({', '.join('?' * len(params))})"
        async with self._lock:
            db = await self._checked()
            async with db.execute(query, params) as cursor:
                rows = await cursor.fetchall()
        return [Heartbeat(r[0], r[1], r[2], bool(r[3]), r[4]) for r in rows]

    async def load_acks(self) -> list[AckRequest]:
        return []  # acks posted to a follower: only an HA pair (PostgreSQL) has followers

    async def load_check_states(self, names: Collection[str]) -> list[CheckState]:
        return []  # published by other shards: only shards (PostgreSQL) have them

    async def load_hours(
        self, since_hour: int, before_hour: int | None = None, check: str | None = None
    ) -> list[HourRow]:
        async with self._lock:
            db = await self._checked()
            if check is not None:
                # The hours walked are bounded by those stored: a `since` of year 1 walks none.
                first, last = (
                    await _one(db, "select min(hour) from history"),
                    await _one(db, "select max(hour) from history"),
                )
                if first is None or last is None:
                    return []
                since_hour = max(since_hour, first)
                before_hour = last + 1 if before_hour is None else min(before_hour, last + 1)
                if before_hour <= since_hour:
                    return []
                query, params = _HOURS_OF_ONE, (since_hour, before_hour, check)
            elif before_hour is None:
                query, params = f"select {_HISTORY_COLUMNS} from history where hour >= ?", (since_hour,)
            else:
                query = f"select {_HISTORY_COLUMNS} from history where hour >= ? and hour < ?"
                params = (since_hour, before_hour)
            async with db.execute(query, params) as cursor:
                rows = await cursor.fetchall()
        return [_hour_row(r) for r in rows]

    async def load_days(self, since_day: int) -> list[DayTotal]:
        async with self._lock:
            db = await self._checked()
            async with db.execute(
                "select name, day, runs, failures from history_days where day >= ?", (since_day,)
            ) as cursor:
                rows = await cursor.fetchall()
        return [DayTotal(*r) for r in rows]

    async def load_open_hours(self, before_hour: int) -> list[HourRow]:
        async with self._lock:
            db = await self._checked()
            async with db.execute(
                f"select {_HISTORY_COLUMNS} from history where closed = 0 and hour < ?", (before_hour,)
            ) as cursor:
                rows = await cursor.fetchall()
        return [_hour_row(r) for r in rows]


def _history_values(r: HourRow) -> tuple[Any, ...]:
    return (r.hour, r.check, r.runs, r.failures, to_us(r.p50_ms), to_us(r.p95_ms), to_us(r.max_ms))


def _hour_row(r: Any) -> HourRow:
    return HourRow(r[1], r[0], r[2], r[3], to_ms(r[4]), to_ms(r[5]), to_ms(r[6]))


async def _one(db: aiosqlite.Connection, query: str) -> Any:
    async with db.execute(query) as cursor:
        row = await cursor.fetchone()
    return None if row is None else row[0]


_INSERT_ALERT = (
    "insert into alerts (active, updated_at, doc, key, alert_id, version) "
    "values (?, ?, ?, ?, ?, 1) on conflict(key) do nothing"
)
_UPDATE_ALERT = (
    "update alerts set active = ?, updated_at = ?, doc = ?, version = version + 1 "
    "where key = ? and alert_id = ? and version = ?"
)


_KEYS_PER_QUERY = 500  # under SQLite's limit of bound parameters
_CHANGED_ROWS = "select key, version, doc from alerts where active = 1 and key in ({})"


async def _store_alerts(
    db: aiosqlite.Connection, versions: Versions, round_: dict[str, int | None], records: list[AlertRecord]
) -> None:
    """Compare-and-set, as PostgreSQL's (one writer here, so a Conflict means a second process).
    A statement that falls short is a Conflict naming all its keys: the writer then tries the
    round's writes one by one, and the write alone names its own."""
    inserts: list[tuple[Any, ...]] = []
    updates: list[tuple[Any, ...]] = []
    for alert in records:  # in order: a row new in this round is inserted before it is updated
        expected = versions.expected(alert.key, round_)
        row = (int(alert.active), alert.updated_at, json.dumps(alert.doc), alert.key, alert.alert_id)
        if expected is None:
            inserts.append(row)
        else:
            updates.append((*row, expected))
        round_[alert.key] = (1 if expected is None else expected + 1) if alert.active else None
    for query, rows in ((_INSERT_ALERT, inserts), (_UPDATE_ALERT, updates)):
        if rows:
            cursor = await db.executemany(query, rows)
            if cursor.rowcount != len(rows):
                raise Conflict([row[3] for row in rows])


async def _commit(
    db: aiosqlite.Connection,
    _alert: AlertRecord | None,  # stored with the round's others, by `apply`
    outgoing: list[tuple[str, dict[str, Any]]],
    now: float,
) -> list[OutboxItem]:
    items = []
    for notifier, payload in outgoing:
        cursor = await db.execute(
            "insert into outbox (notifier, payload, created_at, next_at) values (?, ?, ?, ?)",
            (notifier, json.dumps(payload), now, now),
        )
        assert cursor.lastrowid is not None
        items.append(OutboxItem(cursor.lastrowid, notifier, payload, now, now))
    return items
