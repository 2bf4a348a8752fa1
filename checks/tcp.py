"""TCP check: can a connection to host:port be opened, and how long does it take."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import ssl
import time
from typing import ClassVar, Literal

from pydantic import Field

from checks.base import Check, CheckConfig
from monitor.models import CheckResult

__all__ = ["TcpCheck", "TcpCheckConfig", "describe_connect_error", "host_port"]

_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")


def _errno_of(exc: OSError) -> int | None:
    """The errno of `exc`, also when asyncio merged one error per address into one message.

    Python 3.11's `create_connection` raises a bare `OSError("Multiple exceptions: ...")` (errno
    None) when every address of the host failed: "localhost" refused on ::1 and on 127.0.0.1 is
    still "connection refused".
    """
    if exc.errno is not None:
        return exc.errno
    codes = {int(code) for code in _ERRNO_IN_TEXT.findall(str(exc))}
    return codes.pop() if len(codes) == 1 else None


def describe_connect_error(exc: OSError) -> str:
    """One line for a failed connect (DNS, TCP or TLS), shared by the network checks."""
    if isinstance(exc, socket.gaierror):
        return f"DNS: {exc.strerror or exc}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS verify failed: {exc.verify_message or exc.reason or exc}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    code = _errno_of(exc)
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code in _UNREACHABLE:
        return f"unreachable: {os.strerror(code)}"
    if code == errno.ECONNRESET:
        return "connection reset"
    if code == errno.ETIMEDOUT:
        return "connect: timed out"
    return f"connect: {exc.strerror or str(exc) or type(exc).__name__}"


def host_port(host: str, port: int | None) -> str:
    """`host:port` as people write it, with an IPv6 address in brackets."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


class TcpCheckConfig(CheckConfig):
    """`type = "tcp"`: connect to `host:port`, then close."""

    type: Literal["tcp"]
    host: str = Field(min_length=1, max_length=253, pattern=r"^[^\s/]+$")
    port: int = Field(ge=1, le=65535)


class TcpCheck(Check):
    """Opens one TCP connection; `connect_ms` includes name resolution."""

    __slots__ = ()

    type: ClassVar[str] = "tcp"
    config_model: ClassVar[type[CheckConfig]] = TcpCheckConfig
    config: TcpCheckConfig

    def target(self) -> str:
        return host_port(self.config.host, self.config.port)

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        try:
            _reader, writer = await asyncio.open_connection(self.config.host, self.config.port)
        except OSError as exc:
            return CheckResult.failure(describe_connect_error(exc), (time.perf_counter() - started) * 1000)
        connect_ms = (time.perf_counter() - started) * 1000
        writer.close()
        # The peer may reset the connection as we close it: that is not a failed check.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return CheckResult.success((time.perf_counter() - started) * 1000, connect_ms=connect_ms)
