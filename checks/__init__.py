"""Check types: the four built in, plus plugins from the `monitor.checks` entry point group."""

from __future__ import annotations

import functools

from checks.base import Check, CheckConfig, CheckDeps
from monitor.plugins import TypeRegistry

__all__ = ["BUILTIN", "Check", "CheckConfig", "CheckDeps", "check_types"]

BUILTIN = {
    "http": "checks.http:HttpCheck",
    "tcp": "checks.tcp:TcpCheck",
    "websocket": "checks.websocket:WebSocketCheck",
    "postgres": "checks.postgres:PostgresCheck",
    "prometheus": "checks.prometheus:PrometheusCheck",
    "heartbeat": "checks.heartbeat:HeartbeatCheck",
}


@functools.cache
def check_types() -> TypeRegistry:
    """Every known check type by its `type` name; a type's module is imported when looked up."""
    return TypeRegistry(BUILTIN, "monitor.checks")
