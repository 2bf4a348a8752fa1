"""`${VAR}` and `${VAR:-default}` in monitor.toml's strings, filled from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from monitor.keypaths import key_path

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, env: Mapping[str, str], where: tuple[Any, ...], errors: dict[str, str]) -> Any:
    """Replace `${VAR}` / `${VAR:-default}` in every string; a missing VAR is an error at its key.

    Copy on change: `value` itself comes back when nothing in it changed, and it is never mutated.
    """
    if isinstance(value, str):
        if "${" not in value:
            return value

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            errors[key_path(where)] = f"environment variable {name} is not set"
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict | list):
        copied: Any = None
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            new = interpolate(item, env, (*where, key), errors)
            if new is not item:
                if copied is None:
                    copied = value.copy()
                copied[key] = new
        return value if copied is None else copied
    return value
