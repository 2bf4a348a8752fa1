"""Value types shared by every layer: check results, states, config field types. No I/O."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, SecretStr

MASK = "***"


class Level(enum.IntEnum):
    """Severity of one evaluation; the value is `monitor_alert_state`'s."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


class RowState(enum.StrEnum):
    """State of one (check, threshold row), as `states` in the API reports it."""

    OK = "ok"
    PENDING = "pending"
    WARNING = "warning"
    CRITICAL = "critical"


class Status(enum.StrEnum):
    """Nagios-style overall status; the order of `WORST_FIRST` decides aggregation."""

    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


# A critical or warning is more actionable than "could not run", which beats ok (check_multi's order).
STATUS_RANK = {Status.OK: 0, Status.UNKNOWN: 1, Status.WARNING: 2, Status.CRITICAL: 3}
EXIT_CODES = {Status.OK: 0, Status.WARNING: 1, Status.CRITICAL: 2, Status.UNKNOWN: 3}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one run of one check measured. A failing target is a result, not an exception."""

    up: bool
    latency_ms: float
    samples: dict[str, float] = field(default_factory=dict)  # type-specific metrics
    reason: str | None = None  # one line, set when up is False
    outcome: str = "success"  # success|failure|timeout|error: the runs_total `result` label

    @classmethod
    def success(cls, latency_ms: float, **samples: float) -> CheckResult:
        return cls(True, latency_ms, samples)

    @classmethod
    def failure(
        cls, reason: str, latency_ms: float, outcome: str = "failure", **samples: float
    ) -> CheckResult:
        return cls(False, latency_ms, samples, reason, outcome)

    def sample(self, metric: str) -> float | None:
        """One of `all_samples()`, without building the dict."""
        if metric == "up":
            return 1.0 if self.up else 0.0
        if metric == "latency_ms":
            return self.latency_ms
        return self.samples.get(metric)

    def all_samples(self) -> dict[str, float]:
        """`up` and `latency_ms` plus the type-specific samples."""
        return {"up": 1.0 if self.up else 0.0, "latency_ms": self.latency_ms, **self.samples}


def iso(ts: float | None) -> str | None:
    """RFC 3339 UTC with `Z`, to the millisecond, as the API and payloads show times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class RowEvaluation:
    """One (check, threshold row) on a check's latest run: what evaluation hands to alerting."""

    metric: str
    level: Level  # how bad the value is now
    value: float
    threshold: float | None  # the one it crossed, None while ok
    direction: str
    trigger_after: int  # alerting counts these two
    resolve_after: int


# ---------------------------------------------------------------- config field types

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    None: 1,
}


def parse_duration(value: Any) -> float:
    """`"250ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError('expected a duration like "30s"')
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError(f'invalid duration {value!r}: use a number of seconds or e.g. "30s", "5m"')
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("duration must be a non-negative number of seconds")
    return seconds


def parse_size(value: Any) -> int:
    """`"512KB"` = 512,000 bytes, `"1MiB"` = 1,048,576, or a number of bytes."""
    if isinstance(value, bool):
        raise ValueError('expected a size like "1MB"')
    if isinstance(value, int | float):
        size = float(value)
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        unit = m.group(2).lower() if m.group(2) else None
        size = float(m.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f'invalid size {value!r}: use bytes or e.g. "512KB", "1MiB"')
    if size < 0:
        raise ValueError("size must not be negative")
    return int(size)


def format_duration(seconds: float) -> str:
    """The shortest natural spelling: 2 -> "2s", 0.25 -> "250ms", 300 -> "5m"."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""Seconds, written in TOML as "30s" or a number."""
ByteSize = Annotated[int, BeforeValidator(parse_size)]
"""Bytes, written in TOML as "1MB" or a number."""


def mask_url(url: str) -> str:
    """Hide a URL's userinfo and query string, which may carry credentials."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if "@" not in parts.netloc and not parts.query:
        return url  # nothing to hide; urlunsplit would also rewrite "sqlite:///x" as "sqlite:/x"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


MaskedUrl = Annotated[str, PlainSerializer(mask_url, return_type=str), Field(repr=False)]
"""A URL shown with its userinfo and query string masked in every dump."""


Secret = Annotated[SecretStr, PlainSerializer(lambda _: MASK, return_type=str)]
"""A secret: `get_secret_value()` gives it to the code that needs it; every dump shows `***`."""


_FIELD_SETS: dict[frozenset[str], set[str]] = {}
# Per model class, a plain class whose instances' attribute dicts share one key table.
_KEY_SHARING: dict[type, type] = {}


def _key_sharing_dict(model: type, values: dict[str, Any]) -> dict[str, Any]:
    """An equal dict that shares its key table with every other of the same model class.

    CPython keeps a plain object's attributes as values against its class's key table; the dict
    made from such an object keeps that split form: 0.3 KB where pydantic's own dict of 17
    fields is 0.5 KB. Any CPython that does not split is merely not smaller.
    """
    holder_type = _KEY_SHARING.get(model)
    if holder_type is None:
        holder_type = _KEY_SHARING[model] = type(f"{model.__name__}Fields", (), {"__module__": __name__})
    holder = holder_type()
    for key, value in values.items():
        setattr(holder, key, value)
    return holder.__dict__


class ConfigModel(BaseModel):
    """Base of every config table: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    def model_post_init(self, context: Any, /) -> None:
        # Frozen models never change their set of given keys: equal sets are shared, which saves
        # ~0.7 KB per check (15 MB at 20,000 checks).
        given = self.__pydantic_fields_set__
        object.__setattr__(self, "__pydantic_fields_set__", _FIELD_SETS.setdefault(frozenset(given), given))
        object.__setattr__(self, "__dict__", _key_sharing_dict(type(self), self.__dict__))
