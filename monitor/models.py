"""Value types shared by every layer: results, states, config field types, run-time configs. No I/O."""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    SecretStr,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

MASK = "***"


class Level(enum.IntEnum):
    """Severity of one evaluation; the value is `monitor_alert_state`'s."""

    OK = 0
    WARNING = 1
    CRITICAL = 2


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


class ConfigModel(BaseModel):
    """Base of every config table: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)


# ---------------------------------------------------------------- run-time configs


class Frozen:
    """Base of a config model's run-time copy: the model's fields as read-only slots, no pydantic.

    `freeze(model)` makes it once a table is validated; `frozen_type(Model)` is its class, one per
    model class, built-in or a plugin's. Equal copies compare equal (a reload keeps a check whose
    config did not change). Fields come along, and a model's properties; not its validators, methods
    or private attributes.
    """

    __slots__ = ()
    _model: ClassVar[type[BaseModel]]  # what the copy was made from: its dump and schema

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        # A config field holding copies (`Config.checks`) takes them as they are and dumps each as
        # its model would, secrets and URL credentials masked.
        return core_schema.is_instance_schema(
            cls, serialization=core_schema.plain_serializer_function_ser_schema(thaw)
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "object"}  # the config schema lists each type's own model instead


@functools.cache
def frozen_type(model: type[BaseModel]) -> type[Frozen]:
    """The frozen slotted dataclass with the fields of `model`; a field the model's repr leaves out
    (a URL that may carry credentials) is left out of this repr too."""
    fields = [
        (name, info.annotation, dataclasses.field(repr=info.repr))
        for name, info in model.model_fields.items()
    ]
    namespace: dict[str, Any] = {"_model": model}
    for cls in reversed(model.__mro__):
        if issubclass(cls, ConfigModel) and cls is not ConfigModel:
            namespace.update((k, v) for k, v in vars(cls).items() if isinstance(v, property))
    kind = dataclasses.make_dataclass(
        model.__name__, fields, bases=(Frozen,), namespace=namespace, frozen=True, slots=True
    )
    kind.__module__, kind.__qualname__ = model.__module__, model.__qualname__
    return kind


def freeze(model: BaseModel | Frozen, shared: dict[Hashable, Any] | None = None) -> Frozen:
    """The run-time copy of a validated model, nested models copied too (a copy comes back as is).

    With `shared` (one dict per config load), equal plain values are one object across checks,
    copied out of the TOML tree so that the tree is freed whole: see `_shared`.
    """
    if isinstance(model, Frozen):
        return model
    values = (_frozen(getattr(model, name), shared) for name in type(model).model_fields)
    return frozen_type(type(model))(*values)


def _frozen(value: Any, shared: dict[Hashable, Any] | None) -> Any:
    if isinstance(value, BaseModel):
        return freeze(value, shared)
    if shared is not None and (key := _plain_key(value)) is not None:
        return _shared(value, key, shared)
    if type(value) is list or type(value) is tuple:
        return type(value)(_frozen(item, shared) for item in value)
    if type(value) is dict:
        return {_frozen(k, shared): _frozen(v, shared) for k, v in value.items()}
    return value


def thaw(value: Any) -> Any:
    """The model a run-time copy was made from, nested copies included (for dumps)."""
    if isinstance(value, Frozen):
        model = type(value)._model
        return model.model_construct(**{name: thaw(getattr(value, name)) for name in model.model_fields})
    if type(value) is list or type(value) is tuple:
        return type(value)(thaw(item) for item in value)
    if type(value) is dict:
        return {k: thaw(v) for k, v in value.items()}
    return value


# Why shared: most values repeat across checks, and a value kept from the TOML tree would pin its memory.
def _shared(value: Any, key: Hashable, shared: dict[Hashable, Any]) -> Any:
    """The object for `value` first seen in `shared`: an equal copy holding nothing of the tree.
    Safe because nothing mutates a loaded config."""
    found = shared.get(key)
    if found is None:
        found = shared[key] = _copied(value)
    return found


def _plain_key(value: Any) -> Hashable | None:
    """A key equal only for equal plain values of the same types (and key order); None for others.

    Plain: str, int, float, bool, None, and lists and dicts of plain values. Anything else (a
    SecretStr above all: two different secrets look alike) makes the whole value unshareable.
    """
    kind = type(value)
    if kind is str:
        return value
    if value is None or kind is int or kind is bool:
        return (kind, value)
    if kind is float:
        return None if value != value else (kind, value.hex())  # NaN equals nothing; hex() keeps -0.0 apart
    if kind is list:
        parts = [_plain_key(v) for v in value]
    elif kind is dict:
        parts = [_plain_key(part) for item in value.items() for part in item]
    else:
        return None
    return None if None in parts else (kind, *parts)


def _copied(value: Any) -> Any:
    """An equal copy of a plain value, strings included."""
    if type(value) is str:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if type(value) is list:
        return [_copied(v) for v in value]
    if type(value) is dict:
        return {_copied(k): _copied(v) for k, v in value.items()}
    return value
