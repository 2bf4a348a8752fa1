"""TCP check: can a connection to host:port be opened, and how long does it take."""

from __future__ import annotations

import time
from typing import ClassVar, Literal

from pydantic import Field

from checks.base import Check, CheckConfig, CheckDeps
from checks.netopts import FAMILIES, IpFamily, numeric_addrinfo, open_socket
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
    ip_family: IpFamily = "any"


class TcpCheck(Check):
    """Opens one TCP connection (both families raced, checks.netopts); `connect_ms` includes
    name resolution."""

    __slots__ = ("_family", "_known")

    type: ClassVar[str] = "tcp"
    config_model: ClassVar[type[CheckConfig]] = TcpCheckConfig
    config: TcpCheckConfig

    def __init__(self, config: TcpCheckConfig, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        self._family = FAMILIES[self.config.ip_family]
        self._known = numeric_addrinfo(self.config.host, self.config.port)

    def target(self) -> str:
        return host_port(self.config.host, self.config.port)

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        try:
            sock = await open_socket(self.config.host, self.config.port, self._family, None, self._known)
        except OSError as exc:
            return CheckResult.failure(network_reason(exc), (time.perf_counter() - started) * 1000)
        connect_ms = (time.perf_counter() - started) * 1000
        sock.close()  # connected is all this check asks: nothing is sent
        return CheckResult.success(connect_ms, connect_ms=connect_ms)
