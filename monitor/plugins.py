"""The type registry: check and notifier types, built in or plugins, imported when a config uses them.

This is the one place optional libraries are loaded from: a type's module imports the libraries it
needs at its top (asyncpg, websockets, aiosmtplib), and the registry imports that module only when a
config names its type; a library that only some configs of a type need is `optional_module`'s.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any


class TypeRegistry(MutableMapping[str, Any]):
    """`{type name: class}`: the built-ins (`"module:Class"`), then the group's entry points, each
    imported on first lookup. Names are known without importing anything. A plugin cannot take a
    built-in name (a typo'd package must not replace the PagerDuty notifier)."""

    def __init__(self, builtin: Mapping[str, str], group: str) -> None:
        self._specs: dict[str, str | EntryPoint] = dict(builtin)
        for ep in entry_points(group=group):
            self._specs.setdefault(ep.name, ep)
        self._types: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        found = self._types.get(name)
        if found is None:
            spec = self._specs[name]
            if isinstance(spec, str):
                module, _, attr = spec.partition(":")
                found = getattr(importlib.import_module(module), attr)
            else:
                found = spec.load()
            self._types[name] = found
        return found

    def __setitem__(self, name: str, cls: Any) -> None:  # a test's own type
        self._specs[name] = f"{cls.__module__}:{cls.__qualname__}"
        self._types[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._specs[name]
        self._types.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


class ConfigModels(Mapping[str, Any]):
    """`{type name: config model}` of a registry: looking a model up imports its type alone."""

    def __init__(self, types: Mapping[str, Any]) -> None:
        self._types = types

    def __getitem__(self, name: str) -> Any:
        return self._types[name].config_model

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)


def optional_module(name: str) -> ModuleType:
    """A library that only some configs of a type need, imported on first use: cryptography for
    an https check's certificate, croniter for a cron maintenance window."""
    return importlib.import_module(name)
