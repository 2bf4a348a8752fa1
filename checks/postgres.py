"""The `postgres` check: connect, `select 1`, then server health and custom query metrics."""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import getpass
import math
import os
import time
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from pydantic import Field, SecretStr, field_validator

from checks.base import Check, CheckConfig, CheckDeps
from monitor.models import CheckResult, ConfigModel, Duration, Frozen, Secret, frozen_type
from monitor.neterrors import network_reason
from monitor.text import shorten

__all__ = ["BUILTIN_METRICS", "PostgresCheck", "PostgresCheckConfig", "QueryConfig"]

BUILTIN_METRICS = (
    "connections",
    "connections_pct",
    "long_running_queries",
    "idle_in_transaction",
    "blocked_queries",
    "in_recovery",
    "replication_lag_s",
    "database_size_mb",
)
# A custom metric must not shadow what every check or the evaluator already produces.
_RESERVED_METRICS = frozenset(
    {
        *BUILTIN_METRICS,
        "up",
        "latency_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "error_rate_pct",
        "availability_pct",
    }
)

# The runner owns the deadline (`config.timeout`); asyncpg's own connect timeout only has to be
# later than it, so that a slow connect is reported by the runner as `timeout after Ns`.
_MIN_CONNECT_TIMEOUT_S = 60.0
# Closing sends the server a CancelRequest for a query cut short by the deadline, so it does not
# keep running there; bounded because the server may be the thing that hangs.
_CLOSE_TIMEOUT_S = 1.0
_MAX_REASON_CHARS = 300

# What a failing or misconfigured target makes asyncpg raise: a result, not a bug. Anything else
# propagates to the runner, which reports it as an internal error. InternalClientError covers a
# peer that does not speak PostgreSQL (ProtocolError) and target_session_attrs mismatches.
_TARGET_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    ValueError,
    TimeoutError,
)


# One statement, one pass over pg_stat_activity. Sessions of other roles show a NULL state to a
# role without pg_read_all_stats, so the monitoring role should be granted `pg_monitor`.
# pg_blocking_pids() briefly locks the lock manager, so it is only asked about sessions that
# wait for a lock (CASE, because SQL does not promise AND short-circuits).
_BUILTIN_SQL = """
select
    count(*) filter (where backend_type = 'client backend') as connections,
    current_setting('max_connections')::int as max_connections,
    count(*) filter (
        where backend_type = 'client backend'
          and state = 'active'
          and pid <> pg_backend_pid()
          and now() - query_start > make_interval(secs => $1::float8)
    ) as long_running_queries,
    count(*) filter (
        where state in ('idle in transaction', 'idle in transaction (aborted)')
    ) as idle_in_transaction,
    count(*) filter (
        where case when wait_event_type = 'Lock'
                   then cardinality(pg_blocking_pids(pid)) > 0
                   else false end
    ) as blocked_queries,
    pg_is_in_recovery() as in_recovery,
    case when pg_is_in_recovery()
         then extract(epoch from now() - pg_last_xact_replay_timestamp())::float8
    end as replication_lag_s,
    pg_database_size(current_database()) as database_size_bytes
from pg_stat_activity
"""


class QueryConfig(ConfigModel):
    """A custom metric: the first column of the first row of `sql`, as a number."""

    metric: str = Field(pattern=r"^[a-z0-9_]+$", max_length=200)
    sql: str = Field(min_length=1)

    @field_validator("metric")
    @classmethod
    def _not_reserved(cls, metric: str) -> str:
        if metric in _RESERVED_METRICS:
            raise ValueError(f'"{metric}" is a built-in metric name')
        return metric


class PostgresCheckConfig(CheckConfig):
    """`type = "postgres"`: a DSN, when a query counts as long-running, and custom queries."""

    type: Literal["postgres"]
    dsn: Secret
    long_query_after: Duration = 300.0
    queries: list[QueryConfig] = []

    @field_validator("dsn")
    @classmethod
    def _postgres_url(cls, dsn: SecretStr) -> SecretStr:
        # The message must not echo the value: a DSN usually carries a password.
        scheme, sep, _ = dsn.get_secret_value().partition("://")
        if not sep or scheme.lower() not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// or postgres:// URL")
        return dsn

    @field_validator("queries")
    @classmethod
    def _unique_metrics(cls, queries: list[QueryConfig]) -> list[QueryConfig]:
        seen: set[str] = set()
        for query in queries:
            if query.metric in seen:
                raise ValueError(f'duplicate metric "{query.metric}"')
            seen.add(query.metric)
        return queries


class PostgresCheck(Check):
    """One fresh connection per run (a pool would hide connect and authentication failures)."""

    type: ClassVar[str] = "postgres"
    config_model: ClassVar[type[CheckConfig]] = PostgresCheckConfig
    config: PostgresCheckConfig

    def __init__(self, config: CheckConfig | Frozen, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        if not isinstance(self.config, frozen_type(PostgresCheckConfig)):
            raise TypeError(f"PostgresCheck needs a PostgresCheckConfig, not {type(config).__name__}")
        self._dsn = self.config.dsn.get_secret_value()
        self._database = database_name(self._dsn)

    def target(self) -> str:
        return self._database

    async def run(self) -> CheckResult:
        started = time.perf_counter()

        def elapsed_ms() -> float:
            return (time.perf_counter() - started) * 1000

        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=max(_MIN_CONNECT_TIMEOUT_S, 2 * self.config.timeout),
                # Named prepared statements break behind transaction-mode poolers (PgBouncer,
                # Supavisor), and a cache is pointless on a connection used once.
                statement_cache_size=0,
                server_settings={"application_name": "monitor"},
            )
        except _TARGET_ERRORS as exc:
            # Server and driver messages may quote the DSN: masked here too, for callers of run().
            return CheckResult.failure(self.secrets.redact(_connect_reason(exc)), elapsed_ms())
        try:
            try:
                await conn.execute("select 1")  # simple protocol: one round trip
            except _TARGET_ERRORS as exc:
                return CheckResult.failure(self.secrets.redact(f"select 1: {_short(exc)}"), elapsed_ms())
            samples, reasons = await self._measure(conn)
            if reasons:
                return CheckResult.failure(self.secrets.redact("; ".join(reasons)), elapsed_ms(), **samples)
            return CheckResult.success(elapsed_ms(), **samples)
        finally:
            # close() aborts the socket itself when it cannot finish; a failure here must not
            # replace the result or the CancelledError being propagated.
            with contextlib.suppress(Exception):
                await conn.close(timeout=_CLOSE_TIMEOUT_S)

    async def _measure(self, conn: asyncpg.Connection) -> tuple[dict[str, float], list[str]]:
        """Built-in samples, then each custom query; a failing query costs its metric only."""
        samples: dict[str, float] = {}
        reasons: list[str] = []
        try:
            row = await conn.fetchrow(_BUILTIN_SQL, self.config.long_query_after)
        except _TARGET_ERRORS as exc:
            reasons.append(f"built-in metrics: {_short(exc)}")
            if conn.is_closed():  # the connection died: every custom query would fail too
                return samples, reasons
        else:
            samples.update(_builtin_samples(row))
        for query in self.config.queries:
            try:
                row = await conn.fetchrow(query.sql)
            except _TARGET_ERRORS as exc:
                reasons.append(f"query {query.metric}: {_short(exc)}")
                if conn.is_closed():
                    break
                continue
            value, problem = _first_value_as_float(row)
            if problem is not None:
                reasons.append(f"query {query.metric}: {problem}")
            else:
                samples[query.metric] = value
        return samples, reasons


# ---------------------------------------------------------------- helpers


def database_name(dsn: str) -> str:
    """The database a DSN connects to, defaulted the way libpq and asyncpg do (to the user)."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    database = unquote(parts.path.lstrip("/")) or _first(query, "dbname", "database")
    if database:
        return database
    user = unquote(parts.username or "") or _first(query, "user")
    if user:
        return user
    if env := os.environ.get("PGDATABASE") or os.environ.get("PGUSER"):
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry and no $USER
        return "postgres"


def _first(query: dict[str, list[str]], *keys: str) -> str:
    for key in keys:
        if query.get(key):
            return query[key][0]
    return ""


def _builtin_samples(row: asyncpg.Record | None) -> dict[str, float]:
    if row is None:  # an aggregate always returns a row; guard against a proxy that does not
        return {}
    connections = float(row["connections"])
    max_connections = float(row["max_connections"])
    in_recovery = bool(row["in_recovery"])
    samples = {
        "connections": connections,
        "connections_pct": connections / max_connections * 100 if max_connections else 0.0,
        "long_running_queries": float(row["long_running_queries"]),
        "idle_in_transaction": float(row["idle_in_transaction"]),
        "blocked_queries": float(row["blocked_queries"]),
        "in_recovery": 1.0 if in_recovery else 0.0,
        "database_size_mb": float(row["database_size_bytes"]) / 1e6,
    }
    # A replica that has replayed nothing yet has no replay timestamp: no lag to report.
    if in_recovery and row["replication_lag_s"] is not None:
        samples["replication_lag_s"] = float(row["replication_lag_s"])
    return samples


def _first_value_as_float(row: asyncpg.Record | None) -> tuple[float, str | None]:
    """(value, None) or (0, why the result is not a number)."""
    if row is None:
        return 0.0, "returned no rows"
    if len(row) == 0:
        return 0.0, "returned no columns"
    value: Any = row[0]
    if value is None:
        return 0.0, "returned NULL"
    if isinstance(value, dt.timedelta):  # e.g. `now() - max(created_at)`: seconds
        number = value.total_seconds()
    elif isinstance(value, int | float | decimal.Decimal):  # bool is an int: true -> 1
        number = float(value)
    else:
        return 0.0, f"returned {type(value).__name__}, not a number"
    if not math.isfinite(number):
        return 0.0, f"returned {number}, not a finite number"
    return number, None


def _connect_reason(exc: Exception) -> str:
    """One line a person on call understands; never the DSN (the caller redacts it anyway)."""
    if isinstance(exc, asyncpg.PostgresError):  # authentication, unknown database, too many clients
        return _short(exc)
    if isinstance(exc, ValueError):  # asyncpg parses the DSN only when connecting
        return f"invalid DSN: {_short(exc)}"
    if isinstance(exc, OSError):  # refused, DNS, TLS, and asyncpg's own connect timeout
        return network_reason(exc)
    return _short(exc)


def _short(exc: BaseException) -> str:
    """The first line of an error message, bounded, for a one-line reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return shorten(lines[0] if lines else type(exc).__name__, _MAX_REASON_CHARS)
