"""Check types: the four built in, plus plugins from the `monitor.checks` entry point group."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from checks.base import Check, CheckConfig, CheckDeps

__all__ = ["BUILTIN", "Check", "CheckConfig", "CheckDeps", "check_types"]

BUILTIN = {
    "http": "checks.http:HttpCheck",
    "tcp": "checks.tcp:TcpCheck",
    "websocket": "checks.websocket:WebSocketCheck",
    "postgres": "checks.postgres:PostgresCheck",
}


def _load(spec: str) -> type[Check]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def check_types() -> dict[str, type[Check]]:
    """Every known check type by its `type` name; a built-in name cannot be taken by a plugin."""
    types = {name: _load(spec) for name, spec in BUILTIN.items()}
    for ep in entry_points(group="monitor.checks"):
        if ep.name not in types:
            types[ep.name] = ep.load()
    return types
