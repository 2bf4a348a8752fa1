"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
import trustme

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
