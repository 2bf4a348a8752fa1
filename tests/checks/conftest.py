"""Fixtures for check tests: the loopback servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.fakes.servers import LoopbackServers


@pytest.fixture
async def servers() -> AsyncIterator[LoopbackServers]:
    async with LoopbackServers() as started:
        yield started
