"""Built-in types plus plugins found through an entry point group: one loader for checks and notifiers."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any


def load_types(builtin: dict[str, str], group: str) -> dict[str, Any]:
    """`{type name: class}`: the built-ins (`"module:Class"`), then the group's entry points.
    A plugin cannot take a built-in name (a typo'd package must not replace the PagerDuty notifier)."""
    types: dict[str, Any] = {}
    for name, spec in builtin.items():
        module, _, attr = spec.partition(":")
        types[name] = getattr(importlib.import_module(module), attr)
    for ep in entry_points(group=group):
        if ep.name not in types:
            types[ep.name] = ep.load()
    return types
