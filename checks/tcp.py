"""TCP check: can a connection to host:port be opened, and how long does it take."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import ClassVar, Literal

from pydantic import Field

from checks.base import Check, CheckConfig
from monitor.models import CheckResult
from monitor.neterrors import network_reason

__all__ = ["TcpCheck", "TcpCheckConfig", "host_port"]


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
            return CheckResult.failure(network_reason(exc), (time.perf_counter() - started) * 1000)
        connect_ms = (time.perf_counter() - started) * 1000
        writer.close()
        # The peer may reset the connection as we close it: that is not a failed check.
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return CheckResult.success((time.perf_counter() - started) * 1000, connect_ms=connect_ms)
