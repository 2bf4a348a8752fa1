"""Happy Eyeballs (RFC 8305) and `ip_family`: a name whose first address black-holes SYNs costs
the 250 ms head start, not the timeout. The black hole is a loopback listener whose accept queue
is full: the kernel drops further SYNs, as a firewall would."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from checks import netopts
from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.prometheus import PrometheusCheck, PrometheusCheckConfig
from checks.tcp import TcpCheck, TcpCheckConfig
from checks.websocket import WebSocketCheck, WebSocketCheckConfig
from monitor.runner import run_check
from tests.fakes.servers import LoopbackServers, json_handler

TIMEOUT_S = 5.0


@pytest.fixture
def black_hole() -> Iterator[tuple[str, int]]:
    """An address on loopback where a connect hangs (SYNs dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.2", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(3):  # fills the accept queue (backlog 0 holds one, the SYN queue the rest)
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    yield address
    for sock in (*fillers, listener):
        sock.close()


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """`resolver["answer"]` is what every lookup returns; `resolver["families"]` what was asked."""
    state: dict[str, Any] = {"answer": [], "families": []}

    async def resolve(host: str, port: int, family: int) -> list[netopts.AddrInfo]:
        state["families"].append(family)
        return state["answer"]

    monkeypatch.setattr(netopts, "resolve", resolve)
    return state


def addrinfo(address: tuple[str, int]) -> netopts.AddrInfo:
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)


async def test_http_black_holed_first_address_costs_the_head_start(
    servers: LoopbackServers,
    black_hole: tuple[str, int],
    resolver: dict[str, Any],
    http_session: aiohttp.ClientSession,
) -> None:
    base = await servers.http({"/": json_handler({})})
    port = int(base.rsplit(":", 1)[1])
    resolver["answer"] = [addrinfo(black_hole), addrinfo(("127.0.0.1", port))]
    config = HttpCheckConfig.model_validate(
        {"name": "dual", "type": "http", "url": f"http://dual.test:{port}/", "timeout": TIMEOUT_S}
    )

    result = await run_check(HttpCheck(config, CheckDeps(http=http_session)))

    assert result.reason is None
    assert 200 <= result.samples["connect_ms"] < 1500  # the 250 ms head start, not the 5s timeout
    assert result.latency_ms < 2000
    assert "dns_ms" in result.samples and "ttfb_ms" in result.samples
    assert resolver["families"] == [socket.AF_UNSPEC]


async def test_tcp_black_holed_first_address_costs_the_head_start(
    servers: LoopbackServers,
    black_hole: tuple[str, int],
    resolver: dict[str, Any],
    http_session: aiohttp.ClientSession,
) -> None:
    port = await servers.tcp()
    resolver["answer"] = [addrinfo(black_hole), addrinfo(("127.0.0.1", port))]
    config = TcpCheckConfig.model_validate(
        {
            "name": "dual",
            "type": "tcp",
            "host": "dual.test",
            "port": port,
            "ip_family": "ipv4",
            "timeout": TIMEOUT_S,
        }
    )

    result = await run_check(TcpCheck(config, CheckDeps(http=http_session)))

    assert result.reason is None
    assert 200 <= result.samples["connect_ms"] < 1500
    assert resolver["families"] == [socket.AF_INET]


async def test_websocket_black_holed_first_address_costs_the_head_start(
    servers: LoopbackServers,
    black_hole: tuple[str, int],
    resolver: dict[str, Any],
    http_session: aiohttp.ClientSession,
) -> None:
    async def quiet(connection: Any) -> None:
        await connection.wait_closed()

    url = await servers.websocket(quiet)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    resolver["answer"] = [addrinfo(black_hole), addrinfo(("127.0.0.1", port))]
    config = WebSocketCheckConfig.model_validate(
        {
            "name": "dual",
            "type": "websocket",
            "url": f"ws://dual.test:{port}/",
            "ip_family": "ipv6",
            "timeout": TIMEOUT_S,
        }
    )

    result = await run_check(WebSocketCheck(config, CheckDeps(http=http_session)))

    assert result.reason is None
    assert 200 <= result.samples["connect_ms"] < 1500
    assert resolver["families"] == [socket.AF_INET6]


async def test_every_address_black_holed_is_the_timeout(
    black_hole: tuple[str, int], resolver: dict[str, Any], http_session: aiohttp.ClientSession
) -> None:
    resolver["answer"] = [addrinfo(black_hole)]
    config = TcpCheckConfig.model_validate(
        {"name": "gone", "type": "tcp", "host": "gone.test", "port": 1, "timeout": 0.5}
    )
    result = await run_check(TcpCheck(config, CheckDeps(http=http_session)))
    assert result.reason == "timeout after 500ms"


async def test_an_address_literal_of_the_other_family_fails_at_once(
    http_session: aiohttp.ClientSession,
) -> None:
    config = HttpCheckConfig.model_validate(
        {"name": "v6", "type": "http", "url": "http://127.0.0.1:1/", "ip_family": "ipv6"}
    )
    result = await run_check(HttpCheck(config, CheckDeps(http=http_session)))
    assert result.reason == "DNS lookup failed: address family does not match ip_family"


async def test_prometheus_ip_family_is_its_connectors(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    answer = {"status": "success", "data": {"resultType": "scalar", "result": [0, "3"]}}
    base = await servers.http({"/api/v1/query": json_handler(answer)})
    queries = [{"metric": "n", "promql": "up"}]

    def check(family: str) -> PrometheusCheck:
        table = {"name": "p", "type": "prometheus", "url": base, "ip_family": family, "queries": queries}
        return PrometheusCheck(PrometheusCheckConfig.model_validate(table), CheckDeps(http=http_session))

    ipv4 = await run_check(check("ipv4"))
    ipv6 = await run_check(check("ipv6"))  # 127.0.0.1 has no IPv6 address

    assert ipv4.samples["n"] == 3
    assert ipv6.reason == "DNS lookup failed: address family does not match ip_family"
