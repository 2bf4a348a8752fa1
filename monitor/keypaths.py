"""SPEC key paths (`checks[2].url`) and validation errors rendered at them, never echoing input."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key missing",
    "url_parsing": "invalid URL",
}


def key_path(parts: tuple[Any, ...]) -> str:
    """`("checks", 2, "url")` -> `checks[2].url`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def render_errors(exc: ValidationError, prefix: tuple[Any, ...]) -> dict[str, str]:
    """SPEC-style `checks[2].url: message` lines; input values are never echoed (secrets)."""
    out: dict[str, str] = {}
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = _MESSAGES.get(err["type"]) or err["msg"].removeprefix("Value error, ")
        if err["type"] == "greater_than":
            msg = f"must be greater than {err['ctx']['gt']:g}"
        out.setdefault(key_path((*prefix, *loc)), msg)
    return out
