"""TcpCheck against real loopback listeners (the connect-error wording is tests/test_neterrors.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from pydantic import ValidationError

from checks.base import CheckDeps
from checks.tcp import TcpCheck, TcpCheckConfig
from monitor.runner import run_check
from tests.fakes.servers import HOST, LoopbackServers, refused_port

MakeCheck = Callable[..., TcpCheck]


@pytest.fixture
def make_check(http_session: aiohttp.ClientSession) -> MakeCheck:
    """Builds a check with the deps the daemon gives every check (its one session)."""
    deps = CheckDeps(http=http_session)

    def make(host: str, port: int, **options: Any) -> TcpCheck:
        table = {"name": "collab-tcp", "type": "tcp", "host": host, "port": port, **options}
        return TcpCheck(TcpCheckConfig.model_validate(table), deps)

    return make


async def test_connect_succeeds_and_measures_connect_ms(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    port = await servers.tcp()

    result = await run_check(make_check(HOST, port))

    assert (result.up, result.reason) == (True, None)
    assert 0 < result.samples["connect_ms"] <= result.latency_ms


async def test_connection_is_closed_after_the_run(servers: LoopbackServers, make_check: MakeCheck) -> None:
    closed = asyncio.Event()

    async def wait_for_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # returns b"" once the check closes its side
        closed.set()
        writer.close()

    port = await servers.tcp(wait_for_eof)

    result = await run_check(make_check(HOST, port))

    assert result.up
    await asyncio.wait_for(closed.wait(), timeout=2)


async def test_refused_port(make_check: MakeCheck) -> None:
    with refused_port() as port:
        result = await run_check(make_check(HOST, port))

    assert (result.up, result.reason, result.outcome) == (False, "connection refused", "failure")
    assert "connect_ms" not in result.samples


async def test_target_is_host_and_port(make_check: MakeCheck) -> None:
    assert make_check("collab.example.com", 8081).target() == "collab.example.com:8081"
    assert make_check("::1", 5432).target() == "[::1]:5432"


@pytest.mark.parametrize(
    ("options", "field"),
    [({"port": 0}, "port"), ({"port": 65536}, "port"), ({"host": ""}, "host"), ({"host": "a b"}, "host")],
    ids=["port-0", "port-too-big", "empty-host", "space-in-host"],
)
def test_invalid_config(options: dict[str, Any], field: str) -> None:
    table = {"name": "t", "type": "tcp", "host": "example.com", "port": 80, **options}

    with pytest.raises(ValidationError) as caught:
        TcpCheckConfig.model_validate(table)

    assert caught.value.errors()[0]["loc"] == (field,)
