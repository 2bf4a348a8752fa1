"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
import trustme

from monitor.proxies import proxy_environment
from monitor.store import Store
from monitor.store.postgres import PostgresStore
from monitor.store.sqlite import SqliteStore
from tests.fakes.postgres import PostgresCluster
from tests.fakes.servers import client_session


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One real PostgreSQL server for the whole session; fails (never skips) when not installed."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A session built as the daemon builds its own: a fresh connection per request."""
    async with client_session() as session:
        yield session


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A certificate authority made for the test session."""
    return trustme.CA()


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(
    request: pytest.FixtureRequest, tmp_path: Path, pg_cluster: PostgresCluster
) -> AsyncIterator[Callable[[], Store]]:
    """A factory of real stores over one state, once per backend: each call is another
    process's store on it (or the same store after a restart)."""
    if request.param == "sqlite":
        path = str(tmp_path / "state.db")
        yield lambda: SqliteStore(path)
        return
    async with pg_cluster.database(f"stores_{abs(hash(request.node.nodeid)) % 10**8}") as db:
        yield lambda: PostgresStore(pg_cluster.dsn(database=db))


@pytest.fixture
def tls_ca_file(tmp_path: Path, tls_ca: trustme.CA) -> str:
    """The session CA's certificate as a PEM file (what `tls_ca` names)."""
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture
def fresh_proxy_environment() -> Iterator[None]:
    """The proxy environment (read once per process) read again after the test's own."""
    proxy_environment.cache_clear()
    yield
    proxy_environment.cache_clear()
