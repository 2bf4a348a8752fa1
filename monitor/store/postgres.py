"""The PostgreSQL state store: shared state for replicas (tables prefixed `monitor_`)."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import asyncpg

from monitor.models import MASK, mask_url
from monitor.store.base import (
    AckRequest,
    AlertRecord,
    ChangedAlerts,
    CheckState,
    Conflict,
    DayTotal,
    Fenced,
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
create table if not exists monitor_heartbeats (
  name text primary key, configured_at double precision not null, last_at double precision,
  ok boolean not null default true, reason text);
create table if not exists monitor_acks (
  alert_id text primary key, by text, comment text, at timestamptz not null default now());
alter table monitor_outbox add column if not exists claimed_epoch bigint not null default 0;
alter table monitor_alerts add column if not exists version bigint not null default 0;
create table if not exists monitor_check_state (
  check_name text primary key, up boolean not null, breaching boolean not null,
  evaluated_at double precision not null);
create table if not exists monitor_history (
  hour integer not null, name text not null, runs integer not null, failures integer not null,
  p50_us bigint, p95_us bigint, max_us bigint, closed boolean not null, primary key (hour, name))
  with (autovacuum_vacuum_scale_factor = 0.01);
create index if not exists monitor_history_open on monitor_history (hour) where not closed;
create table if not exists monitor_history_days (
  day integer not null, name text not null, runs bigint not null, failures bigint not null,
  primary key (day, name));
"""
# An HA leader's round begins here; FOR SHARE: a takeover's epoch bump waits for a round in flight.
# (monitor_cluster is monitor.cluster's: the elector makes it.)
_FENCE = "select 1 from monitor_cluster where shard = $1 and epoch = $2 and expires_at > now() for share"
_CLAIM = """
update monitor_outbox o set claimed_epoch = $3 from monitor_cluster c
where o.id = $1 and o.status = 'pending' and c.shard = $2 and c.epoch = $3 and c.expires_at > now()
returning o.id
"""
# Every batch rewrites the open hour's rows: vacuumed after 1 % of the table is dead row versions
# (the default 20 % would let a 30-day table carry hours of them); the closed hours' pages are
# all-visible, so a vacuum reads little more than the open hour's.
_HISTORY_COLUMNS = "hour, name, runs, failures, p50_us, p95_us, max_us"
# Keyed by hour first (see the SQLite store): one check's hours are one index seek per hour.
_HOURS_OF_ONE = (
    f"select {_HISTORY_COLUMNS} from generate_series($1::integer, $2::integer - 1) as h(at) "
    "join monitor_history on hour = h.at and name = $3 order by hour"
)


class PostgresStore(Writes):
    """Shared state in PostgreSQL; each round of writes is one transaction on one connection."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.name = mask_url(dsn)
        parts = urlsplit(dsn)
        given = [parts.password, *(v for k, v in parse_qsl(parts.query) if k == "password")]
        self._secrets = [s for s in given if s]  # kept out of every message, whatever the driver says
        self._pool: asyncpg.Pool | None = None
        self.versions = Versions()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store not open")
        return self._pool

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4, timeout=10)
        except Exception as exc:
            if (message := self.fault(exc)) is None:
                raise
            raise StoreError(message) from exc
        try:
            async with pool.acquire() as conn, conn.transaction():
                # Replicas starting together would race on `create table if not exists`.
                await conn.execute("select pg_advisory_xact_lock(hashtext('monitor/schema'))")
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
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            return None  # a bug in what was asked, not the store failing
        if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError | TimeoutError):
            return None
        why = reason(exc)
        for secret in self._secrets:
            why = why.replace(secret, MASK)
        return f"{self.name}: {why}"

    async def ping(self) -> bool:
        async with self.pool.acquire(timeout=2) as conn:
            await conn.fetchval("select 1")
        return True

    async def apply(self, writes: Sequence[Write]) -> list[Any]:
        round_: dict[str, int | None] = {}  # the alert rows' new versions, kept once committed
        async with self.pool.acquire() as conn, conn.transaction():
            results = [await _run(conn, write, self.versions, round_) for write in writes]
        self.versions.committed(round_)
        return results

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "select doc::text, key, version from monitor_alerts where active = $1 and updated_at >= $2 "
            "order by updated_at",
            active,
            since,
        )
        if active:
            self.versions.loaded(((r[1], r[2]) for r in rows), every=since == 0.0)
        return [json.loads(r[0]) for r in rows]

    async def load_alerts_changed(self, known: Mapping[str, int]) -> ChangedAlerts:
        rows = await self.pool.fetch("select key, version from monitor_alerts where active")
        versions: dict[str, int] = {r[0]: r[1] for r in rows}
        changed = changed_keys(versions, known)
        query = "select key, version, doc::text from monitor_alerts where active and key = any($1::text[])"
        found = await self.pool.fetch(query, changed) if changed else []
        return changed_alerts(versions, changed, found, self.versions)

    async def load_alert(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        row = await self.pool.fetchrow(
            "select active, doc::text, version from monitor_alerts where key = $1", key
        )
        if row is None:
            return None
        self.versions.committed({key: row[2] if row[0] else None})
        return row[0], json.loads(row[1])

    async def pending(self) -> list[OutboxItem]:
        rows = await self.pool.fetch(
            "select id, notifier, payload::text, created_at, next_at, attempts, last_error, claimed_epoch "
            "from monitor_outbox where status = 'pending' order by id"
        )
        return [OutboxItem(r[0], r[1], json.loads(r[2]), r[3], r[4], r[5], r[6], r[7]) for r in rows]

    async def load_silences(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in await self.pool.fetch("select doc::text from monitor_silences")]

    async def load_heartbeats(self, names: Collection[str] | None = None) -> list[Heartbeat]:
        query = "select name, configured_at, last_at, ok, reason from monitor_heartbeats"
        if names is None:
            rows = await self.pool.fetch(query)
        else:
            rows = await self.pool.fetch(query + " where name = any($1::text[])", list(names))
        return [Heartbeat(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    async def load_check_states(self, names: Collection[str]) -> list[CheckState]:
        rows = await self.pool.fetch(
            "select check_name, up, breaching, evaluated_at from monitor_check_state "
            "where check_name = any($1::text[])",
            list(names),
        )
        return [CheckState(r[0], r[1], r[2], r[3]) for r in rows]

    async def load_acks(self) -> list[AckRequest]:
        rows = await self.pool.fetch("select alert_id, by, comment from monitor_acks order by at")
        return [AckRequest(r[0], r[1], r[2]) for r in rows]

    async def load_hours(
        self, since_hour: int, before_hour: int | None = None, check: str | None = None
    ) -> list[HourRow]:
        if check is not None:
            # The hours walked are bounded by those stored: a `since` of year 1 walks none.
            first = await self.pool.fetchval("select min(hour) from monitor_history")
            last = await self.pool.fetchval("select max(hour) from monitor_history")
            if first is None or last is None:
                return []
            since_hour = max(since_hour, first)
            before_hour = last + 1 if before_hour is None else min(before_hour, last + 1)
            rows = await self.pool.fetch(_HOURS_OF_ONE, since_hour, before_hour, check)
        elif before_hour is None:
            rows = await self.pool.fetch(
                f"select {_HISTORY_COLUMNS} from monitor_history where hour >= $1", since_hour
            )
        else:
            rows = await self.pool.fetch(
                f"select {_HISTORY_COLUMNS} from monitor_history where hour >= $1 and hour < $2",
                since_hour,
                before_hour,
            )
        return [_hour_row(r) for r in rows]

    async def load_days(self, since_day: int) -> list[DayTotal]:
        rows = await self.pool.fetch(
            "select name, day, runs, failures from monitor_history_days where day >= $1", since_day
        )
        return [DayTotal(r[0], r[1], r[2], r[3]) for r in rows]

    async def load_open_hours(self, before_hour: int) -> list[HourRow]:
        rows = await self.pool.fetch(
            f"select {_HISTORY_COLUMNS} from monitor_history where not closed and hour < $1", before_hour
        )
        return [_hour_row(r) for r in rows]


def _hour_row(r: Any) -> HourRow:
    return HourRow(r[1], r[0], r[2], r[3], to_ms(r[4]), to_ms(r[5]), to_ms(r[6]))


async def _run(
    conn: asyncpg.Connection, write: Write, versions: Versions, round_: dict[str, int | None]
) -> Any:
    args = write.args
    match write.operation:
        case "commit":
            return await _commit(conn, versions, round_, *args)
        case "reschedule":
            (item,) = args
            await conn.execute(
                # A refused send is not in doubt: the next leader need not count it as a redelivery.
                "update monitor_outbox set next_at = $1, attempts = $2, last_error = $3, "
                "claimed_epoch = 0 where id = $4",
                item.next_at,
                item.attempts,
                item.last_error,
                item.id,
            )
        case "finish":
            item, status = args
            if status == "sent":
                await conn.execute("delete from monitor_outbox where id = $1", item.id)
            else:
                await conn.execute(
                    "update monitor_outbox set status = $1, attempts = $2, last_error = $3 where id = $4",
                    status,
                    item.attempts,
                    item.last_error,
                    item.id,
                )
        case "save_silence":
            silence_id, doc = args
            await conn.execute(
                "insert into monitor_silences (id, doc) values ($1, $2) "
                "on conflict (id) do update set doc = excluded.doc",
                silence_id,
                json.dumps(doc),
            )
        case "delete_silence":
            result = await conn.execute("delete from monitor_silences where id = $1", *args)
            return result.endswith(" 1")
        case "save_ping":
            name, at, ok, why = args
            await conn.execute(
                "insert into monitor_heartbeats (name, configured_at, last_at, ok, reason) "
                "values ($1, $2, $2, $3, $4) on conflict (name) do update set last_at = excluded.last_at, "
                "ok = excluded.ok, reason = excluded.reason where monitor_heartbeats.last_at is null "
                "or excluded.last_at >= monitor_heartbeats.last_at",
                name,
                at,
                ok,
                why,
            )
        case "add_heartbeat":
            await conn.execute(
                "insert into monitor_heartbeats (name, configured_at) values ($1, $2) "
                "on conflict (name) do nothing",
                *args,
            )
        case "fence":
            shard, epoch = args
            if await conn.fetchval(_FENCE, shard, epoch) is None:
                raise Fenced(f"shard {shard}: epoch {epoch} is no longer current or its lease ended")
        case "claim":
            return await conn.fetchval(_CLAIM, *args) is not None
        case "request_ack":
            (request,) = args
            await conn.execute(
                "insert into monitor_acks (alert_id, by, comment) values ($1, $2, $3) "
                "on conflict (alert_id) do nothing",
                request.alert_id,
                request.by,
                request.comment,
            )
        case "publish_state":
            (state,) = args
            await conn.execute(
                "insert into monitor_check_state (check_name, up, breaching, evaluated_at) "
                "values ($1, $2, $3, $4) on conflict (check_name) do update set up = excluded.up, "
                "breaching = excluded.breaching, evaluated_at = excluded.evaluated_at",
                state.check,
                state.up,
                state.breaching,
                state.evaluated_at,
            )
        case "clear_ack":
            await conn.execute("delete from monitor_acks where alert_id = $1", *args)
        case "save_hours":
            rows, closed, keep_from_hour = args
            both = [*rows, *closed]
            # One statement for the whole batch: the rows as arrays, unnested on the server.
            await conn.execute(
                f"insert into monitor_history ({_HISTORY_COLUMNS}, closed) select * from unnest("
                "$1::integer[], $2::text[], $3::integer[], $4::integer[], $5::bigint[], $6::bigint[], "
                "$7::bigint[], $8::boolean[]) on conflict (hour, name) do update set runs = excluded.runs, "
                "failures = excluded.failures, p50_us = excluded.p50_us, p95_us = excluded.p95_us, "
                "max_us = excluded.max_us, closed = excluded.closed",
                [r.hour for r in both],
                [r.check for r in both],
                [r.runs for r in both],
                [r.failures for r in both],
                [to_us(r.p50_ms) for r in both],
                [to_us(r.p95_ms) for r in both],
                [to_us(r.max_ms) for r in both],
                [False] * len(rows) + [True] * len(closed),
            )
            days = day_totals(closed)
            await conn.execute(
                "insert into monitor_history_days select * from unnest("
                "$1::integer[], $2::text[], $3::bigint[], $4::bigint[]) on conflict (day, name) do update "
                "set runs = monitor_history_days.runs + excluded.runs, "
                "failures = monitor_history_days.failures + excluded.failures",
                [t.day for t in days],
                [t.check for t in days],
                [t.runs for t in days],
                [t.failures for t in days],
            )
            await conn.execute("delete from monitor_history where hour < $1", keep_from_hour)
            await conn.execute("delete from monitor_history_days where day < $1", keep_from_hour // 24)
        case "probe":
            await conn.execute(
                "insert into monitor_store_probe (id, at) values (1, extract(epoch from now())) "
                "on conflict (id) do update set at = excluded.at"
            )
    return None


_INSERT_ALERT = """
insert into monitor_alerts (key, alert_id, active, updated_at, doc, version)
values ($1, $2, $3, $4, $5, 1) on conflict (key) do nothing returning version
"""
_UPDATE_ALERT = """
update monitor_alerts set active = $3, updated_at = $4, doc = $5, version = version + 1
where key = $1 and version = $6 and alert_id = $2 returning version
"""


async def _commit(
    conn: asyncpg.Connection,
    versions: Versions,
    round_: dict[str, int | None],
    alert: AlertRecord | None,
    outgoing: list[tuple[str, dict[str, Any]]],
    now: float,
) -> list[OutboxItem]:
    if alert is not None:
        # Compare-and-set: the row as last read or written here, else a Conflict (and a rollback).
        expected = versions.expected(alert.key, round_)
        row = (alert.key, alert.alert_id, alert.active, alert.updated_at, json.dumps(alert.doc))
        if expected is None:
            version = await conn.fetchval(_INSERT_ALERT, *row)
        else:
            version = await conn.fetchval(_UPDATE_ALERT, *row, expected)
        if version is None:
            raise Conflict([alert.key])
        round_[alert.key] = version if alert.active else None
    items = []
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
