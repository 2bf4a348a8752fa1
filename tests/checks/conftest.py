"""Fixtures for check tests: the loopback servers, and raw servers for hand-written answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.checks.raw_servers import RawServers
from tests.fakes.servers import LoopbackServers


@pytest.fixture
async def servers() -> AsyncIterator[LoopbackServers]:
    async with LoopbackServers() as started:
        yield started


@pytest.fixture
async def raw() -> AsyncIterator[RawServers]:
    async with RawServers() as started:
        yield started
