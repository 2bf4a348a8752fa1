"""TcpCheck against real loopback listeners, and the connect-error wording the network checks share."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from typing import Any

import pytest
from pydantic import ValidationError

from checks.base import CheckDeps
from checks.tcp import TcpCheck, TcpCheckConfig, describe_connect_error
from monitor.runner import run_check
from tests.fakes.servers import HOST, LoopbackServers, refused_port


def make_check(host: str, port: int, **options: Any) -> TcpCheck:
    table = {"name": "collab-tcp", "type": "tcp", "host": host, "port": port, **options}
    return TcpCheck(TcpCheckConfig.model_validate(table), CheckDeps(http=None))  # type: ignore[arg-type]


async def test_connect_succeeds_and_measures_connect_ms(servers: LoopbackServers) -> None:
    port = await servers.tcp()

    result = await run_check(make_check(HOST, port))

    assert (result.up, result.reason) == (True, None)
    assert 0 < result.samples["connect_ms"] <= result.latency_ms


async def test_connection_is_closed_after_the_run(servers: LoopbackServers) -> None:
    closed = asyncio.Event()

    async def wait_for_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # returns b"" once the check closes its side
        closed.set()
        writer.close()

    port = await servers.tcp(wait_for_eof)

    result = await run_check(make_check(HOST, port))

    assert result.up
    await asyncio.wait_for(closed.wait(), timeout=2)


async def test_refused_port() -> None:
    with refused_port() as port:
        result = await run_check(make_check(HOST, port))

    assert (result.up, result.reason, result.outcome) == (False, "connection refused", "failure")
    assert "connect_ms" not in result.samples


def test_target_is_host_and_port() -> None:
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


def _cert_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 81, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 81)"
            ),
            "connection refused",
        ),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable: No route to host"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable: Network is unreachable"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "DNS: Name or service not known"),
        (_cert_error(), "TLS verify failed: self-signed certificate"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "connection reset"),
        (OSError(errno.EACCES, "Permission denied"), "connect: Permission denied"),
    ],
    ids=[
        "refused",
        "refused-every-address",
        "host-unreachable",
        "net-unreachable",
        "dns",
        "tls",
        "reset",
        "other",
    ],
)
def test_connect_error_reasons(error: OSError, reason: str) -> None:
    assert describe_connect_error(error) == reason
