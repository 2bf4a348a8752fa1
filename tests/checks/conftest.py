"""Fixtures for check tests: loopback servers, a test CA, sessions built like the daemon's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import trustme

from tests.fakes.servers import LoopbackServers, client_session, trusting_client_context


@pytest.fixture
async def servers() -> AsyncIterator[LoopbackServers]:
    async with LoopbackServers() as started:
        yield started


@pytest.fixture
async def trusting_session(tls_ca: trustme.CA) -> AsyncIterator[aiohttp.ClientSession]:
    """A session whose default TLS context trusts `tls_ca`, as a daemon configured with it would."""
    async with client_session(trusting_client_context(tls_ca)) as session:
        yield session
