"""The postgres check against a real PostgreSQL server, run the way the scheduler runs it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
from pydantic import ValidationError

from checks.base import CheckDeps
from checks.postgres import BUILTIN_METRICS, PostgresCheck, PostgresCheckConfig, database_name
from monitor.runner import run_check
from tests.fakes.postgres import PostgresCluster, free_port

MAX_CONNECTIONS = 20  # set by tests/fakes/postgres.py
SPEC_FAILED_LOGINS_SQL = (
    "select count(*) from failed_login_attempts where created_at > now() - interval '1 hour'"
)
CLIENT_BACKENDS_SQL = "select count(*) from pg_stat_activity where backend_type = 'client backend'"

MakeCheck = Callable[..., PostgresCheck]
OpenSession = Callable[[], Awaitable[asyncpg.Connection]]


@pytest.fixture
async def make_check(pg_cluster: PostgresCluster) -> AsyncIterator[MakeCheck]:
    """Builds a check on the test cluster; keyword arguments are config keys (dsn included)."""
    async with aiohttp.ClientSession() as http:  # CheckDeps needs one, the check never uses it
        deps = CheckDeps(http=http)

        def make(**keys: Any) -> PostgresCheck:
            table = {"name": "database", "type": "postgres", "dsn": pg_cluster.dsn(), **keys}
            return PostgresCheck(PostgresCheckConfig.model_validate(table), deps)

        yield make


@pytest.fixture
async def admin(pg_cluster: PostgresCluster) -> AsyncIterator[asyncpg.Connection]:
    """A superuser session for setting the scene and watching pg_stat_activity."""
    conn = await asyncpg.connect(pg_cluster.dsn())
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def sessions(pg_cluster: PostgresCluster) -> AsyncIterator[OpenSession]:
    """Opens extra sessions on demand; closes them all (rolling back) after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_session() -> asyncpg.Connection:
        conn = await asyncpg.connect(pg_cluster.dsn())
        opened.append(conn)
        return conn

    yield open_session
    for conn in reversed(opened):
        await conn.close()


async def wait_for(conn: asyncpg.Connection, sql: str, *args: Any, timeout_s: float = 10) -> None:
    """Polls a query until it returns true: server-side state changes are asynchronous."""
    deadline = time.monotonic() + timeout_s
    while not await conn.fetchval(sql, *args):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_s}s: {sql}")
        await asyncio.sleep(0.05)


async def settle(admin: asyncpg.Connection, client_backends: int) -> None:
    """Waits until backends of closed sessions have exited, so counts are exact."""
    await wait_for(admin, f"select ({CLIENT_BACKENDS_SQL}) = $1", client_backends)


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------- success and built-in samples


async def test_success_reports_every_builtin_sample(make_check: MakeCheck) -> None:
    check = make_check()

    result = await run_check(check)

    assert result.up, result.reason
    assert result.reason is None
    assert result.outcome == "success"
    assert result.latency_ms > 0
    # A primary has no replay lag to report.
    assert set(result.samples) == set(BUILTIN_METRICS) - {"replication_lag_s"}
    assert result.samples["connections"] >= 1  # the check's own session counts
    assert result.samples["connections_pct"] == pytest.approx(
        result.samples["connections"] / MAX_CONNECTIONS * 100
    )
    assert result.samples["in_recovery"] == 0
    assert result.samples["database_size_mb"] > 1
    assert check.target() == "postgres"


async def test_connections_pct_rises_with_open_connections(
    make_check: MakeCheck, admin: asyncpg.Connection, sessions: OpenSession
) -> None:
    check = make_check()
    await settle(admin, 1)
    before = await run_check(check)

    for _ in range(3):
        await sessions()
    await settle(admin, 4)  # the check's previous session has gone; admin + 3 remain
    after = await run_check(check)

    assert before.up and after.up
    assert before.samples["connections"] == 2  # admin + the check itself
    assert after.samples["connections"] == 5
    assert after.samples["connections_pct"] == pytest.approx(5 / MAX_CONNECTIONS * 100)
    assert after.samples["connections_pct"] > before.samples["connections_pct"]


# ---------------------------------------------------------------- sessions in trouble


async def test_long_running_query_is_counted(
    make_check: MakeCheck, admin: asyncpg.Connection, sessions: OpenSession
) -> None:
    sleeper = await sessions()
    query = asyncio.create_task(sleeper.fetchval("select pg_sleep(5)"))
    try:
        await wait_for(
            admin,
            "select exists (select from pg_stat_activity where pid = $1 and state = 'active'"
            " and now() - query_start > interval '1 second')",
            sleeper.get_server_pid(),
        )
        strict = await run_check(make_check(long_query_after="1s"))
        lenient = await run_check(make_check())  # the default: 5 minutes
    finally:
        await cancel(query)

    assert strict.up, strict.reason
    assert strict.samples["long_running_queries"] == 1
    assert lenient.samples["long_running_queries"] == 0


async def test_blocked_query_is_counted(
    make_check: MakeCheck, admin: asyncpg.Connection, sessions: OpenSession
) -> None:
    await admin.execute("create table blocked_t (id int)")
    holder, waiter = await sessions(), await sessions()
    try:
        await holder.execute("begin; lock table blocked_t in access exclusive mode")
        blocked = asyncio.create_task(waiter.fetch("select * from blocked_t"))
        await wait_for(admin, "select cardinality(pg_blocking_pids($1)) > 0", waiter.get_server_pid())

        result = await run_check(make_check())

        await holder.execute("rollback")
        assert await blocked == []  # the waiter proceeds once the lock is released
    finally:
        if not holder.is_closed() and holder.is_in_transaction():
            await holder.execute("rollback")
        await admin.execute("drop table if exists blocked_t")

    assert result.up, result.reason
    assert result.samples["blocked_queries"] == 1
    assert result.samples["idle_in_transaction"] == 1  # the lock holder, waiting for its client


async def test_idle_in_transaction_is_counted(make_check: MakeCheck, sessions: OpenSession) -> None:
    idler = await sessions()
    check = make_check()

    await idler.execute("begin; select 1")
    during = await run_check(check)
    await idler.execute("rollback")
    after = await run_check(check)

    assert during.samples["idle_in_transaction"] == 1
    assert after.samples["idle_in_transaction"] == 0


# ---------------------------------------------------------------- custom queries


async def test_custom_query_metric(make_check: MakeCheck, admin: asyncpg.Connection) -> None:
    await admin.execute(
        "create table failed_login_attempts ("
        " id serial primary key, username text not null,"
        " created_at timestamptz not null default now())"
    )
    try:
        await admin.execute(
            "insert into failed_login_attempts (username, created_at) values"
            " ('alice', now() - interval '5 minutes'), ('bob', now() - interval '50 minutes'),"
            " ('carol', now() - interval '2 hours')"
        )
        check = make_check(queries=[{"metric": "failed_logins_1h", "sql": SPEC_FAILED_LOGINS_SQL}])

        result = await run_check(check)
    finally:
        await admin.execute("drop table failed_login_attempts")

    assert result.up, result.reason
    assert result.samples["failed_logins_1h"] == 2
    assert "connections" in result.samples


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (SPEC_FAILED_LOGINS_SQL, 'relation "failed_login_attempts" does not exist'),
        ("select count(*) frm pg_class", 'syntax error at or near "pg_class"'),
        ("select null::int", "returned NULL"),
        ("select 1 where false", "returned no rows"),
        ("select 'many'", "returned str, not a number"),
    ],
    ids=["missing-table", "syntax-error", "null", "no-rows", "text"],
)
async def test_bad_custom_query_fails_naming_the_metric(
    make_check: MakeCheck, sql: str, expected: str
) -> None:
    check = make_check(
        queries=[
            {"metric": "failed_logins_1h", "sql": sql},
            {"metric": "tables", "sql": "select count(*) from pg_class"},
        ]
    )

    result = await run_check(check)

    assert not result.up
    assert result.outcome == "failure"
    assert result.reason == f"query failed_logins_1h: {expected}"
    # What could be measured still is: the built-ins and the later query.
    assert result.samples["connections"] >= 1
    assert result.samples["tables"] > 0
    assert "failed_logins_1h" not in result.samples


async def test_interval_result_is_seconds(make_check: MakeCheck) -> None:
    check = make_check(queries=[{"metric": "age_s", "sql": "select interval '90 seconds'"}])

    result = await run_check(check)

    assert result.samples["age_s"] == 90


# ---------------------------------------------------------------- failing targets


async def test_bad_password_fails_without_leaking_it(
    make_check: MakeCheck, pg_cluster: PostgresCluster
) -> None:
    dsn = pg_cluster.dsn(password="wrong-pw-123")

    result = await run_check(make_check(dsn=dsn))

    assert not result.up
    assert result.outcome == "failure"
    assert result.reason == 'password authentication failed for user "postgres"'
    assert "wrong-pw-123" not in result.reason
    assert pg_cluster.password not in result.reason


async def test_unknown_database_fails(make_check: MakeCheck, pg_cluster: PostgresCluster) -> None:
    check = make_check(dsn=pg_cluster.dsn(database="nope"))

    result = await run_check(check)

    assert not result.up
    assert result.reason == 'database "nope" does not exist'
    assert check.target() == "nope"


async def test_unreachable_port_is_refused(make_check: MakeCheck, pg_cluster: PostgresCluster) -> None:
    result = await run_check(make_check(dsn=pg_cluster.dsn(port=free_port())))

    assert not result.up
    assert result.reason == "connection refused"
    assert result.samples == {}


async def test_timeout_cancels_the_query_on_the_server(
    make_check: MakeCheck, admin: asyncpg.Connection
) -> None:
    check = make_check(timeout="1s", queries=[{"metric": "slow", "sql": "select pg_sleep(30)"}])

    started = time.monotonic()
    result = await run_check(check)
    elapsed_s = time.monotonic() - started

    assert not result.up
    assert result.outcome == "timeout"
    assert result.reason == "timeout after 1s"
    assert elapsed_s < 5  # one timeout plus a bounded close, not the 30 s query
    # Closing asked the server to cancel it: no orphan keeps running there.
    await wait_for(
        admin,
        "select not exists (select from pg_stat_activity where query = 'select pg_sleep(30)'"
        " and state = 'active')",
    )


# ---------------------------------------------------------------- config and secrets


def test_config_never_shows_the_dsn_password() -> None:
    dsn = "postgresql://monitor:hunter2-secret@db.example.com:5432/app?sslmode=require"
    config = PostgresCheckConfig.model_validate(
        {"name": "database", "type": "postgres", "dsn": dsn, "long_query_after": "5m"}
    )

    shown = [repr(config), str(config), str(config.model_dump()), config.model_dump_json()]

    for text in shown:
        assert "hunter2-secret" not in text
        assert "db.example.com" not in text
    assert config.dsn.get_secret_value() == dsn
    assert config.long_query_after == 300


def test_config_rejects_a_non_postgres_dsn_without_echoing_it() -> None:
    with pytest.raises(ValidationError) as info:
        PostgresCheckConfig.model_validate(
            {"name": "database", "type": "postgres", "dsn": "mysql://root:hunter2-secret@db/app"}
        )

    assert "must be a postgresql:// or postgres:// URL" in str(info.value)
    assert "hunter2-secret" not in str(info.value)
    assert info.value.errors()[0]["loc"] == ("dsn",)


@pytest.mark.parametrize(
    ("queries", "loc", "message"),
    [
        ([{"metric": "Bad-Name", "sql": "select 1"}], ("queries", 0, "metric"), "pattern"),
        ([{"metric": "connections", "sql": "select 1"}], ("queries", 0, "metric"), "built-in"),
        (
            [{"metric": "a", "sql": "select 1"}, {"metric": "a", "sql": "select 2"}],
            ("queries",),
            'duplicate metric "a"',
        ),
        ([{"metric": "a", "sql": "select 1", "extra": 1}], ("queries", 0, "extra"), "extra"),
    ],
    ids=["pattern", "reserved", "duplicate", "unknown-key"],
)
def test_config_validates_queries(
    queries: list[dict[str, Any]], loc: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        PostgresCheckConfig.model_validate(
            {"name": "db", "type": "postgres", "dsn": "postgresql://h/db", "queries": queries}
        )

    error = info.value.errors()[0]
    assert error["loc"] == loc
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("dsn", "database"),
    [
        ("postgresql://u:p@db.example.com:5432/app", "app"),
        ("postgres://u@db.example.com/my%20db", "my db"),
        ("postgresql://alice:p@db.example.com", "alice"),
        ("postgresql:///app?host=/var/run/postgresql", "app"),
        ("postgresql://db.example.com/?dbname=reports&user=bob", "reports"),
        ("postgresql://db.example.com?user=bob", "bob"),
    ],
    ids=["path", "quoted", "default-to-user", "unix-socket", "dbname-param", "user-param"],
)
def test_target_is_the_database_name(dsn: str, database: str) -> None:
    assert database_name(dsn) == database


async def test_invalid_dsn_fails_without_leaking_the_password(make_check: MakeCheck) -> None:
    result = await run_check(make_check(dsn="postgresql://u:pw-8f3a@127.0.0.1:notaport/db"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("invalid DSN: ")
    assert "pw-8f3a" not in result.reason
