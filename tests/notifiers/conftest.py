"""Fixtures for notifier tests: fake receivers, an HTTP session built like the daemon's, a test CA."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest
import trustme

from tests.fakes.receivers import Receivers
from tests.fakes.servers import tls_server_context, trusting_client_context


@pytest.fixture
async def receivers() -> AsyncIterator[Receivers]:
    """`await receivers.start(script=[...], validate=...)`: loopback receivers, closed after the test."""
    started = Receivers()
    try:
        yield started
    finally:
        await started.aclose()


@pytest.fixture
def server_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A server context for 127.0.0.1, issued by the test CA."""
    return tls_server_context(tls_ca)


@pytest.fixture
def client_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    """A verifying client context that trusts the test CA only."""
    return trusting_client_context(tls_ca)
