"""monitor.toml: loading, `${VAR}` interpolation, validation with SPEC key paths, the threshold table."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from alerts.config import (
    AlertsConfig,
    BusinessHoursConfig,
    MaintenanceConfig,
    RouteConfig,
)
from alerts.notifiers import notifier_config_models
from alerts.notifiers.base import NotifierConfig
from alerts.windows import one_off_bounds
from checks import CheckConfig, check_types
from monitor.models import ConfigModel, Duration, MaskedUrl, Secret, format_duration, parse_duration


class MonitorError(Exception):
    """Base of the errors monitor raises on purpose."""


class ConfigError(MonitorError, ValueError):
    """An invalid config; `errors` holds one `key.path: message` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# ---------------------------------------------------------------- sections


class MonitorSection(ConfigModel):
    listen: str = "0.0.0.0:9100"
    timezone: str = "UTC"
    state: MaskedUrl = "sqlite:///monitor-state.db"
    default_interval: Duration = Field(default=30.0, gt=0)
    default_timeout: Duration = Field(default=10.0, gt=0)
    api_token: Secret = SecretStr("")
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f'invalid listen address {value!r}: use "host:port"')
        return value

    @field_validator("default_timeout")
    @classmethod
    def _default_timeout(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("default_interval")  # absent when it is invalid itself
        if interval is not None and value > interval:
            timeout_s, interval_s = format_duration(value), format_duration(interval)
            raise ValueError(f"{timeout_s} is longer than monitor.default_interval ({interval_s})")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as Europe/London") from None
        return value

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        if value == "memory" or value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            return value
        raise ValueError('state must be "memory", "sqlite:///path" or "postgresql://..."')

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ThresholdRowConfig(ConfigModel):
    """One row of the threshold table as written; unset keys are taken from the row below it."""

    warning: float | None = None
    critical: float | None = None
    direction: Literal["above", "below"] | None = None
    window: Duration | None = None
    trigger_after: int | None = Field(default=None, ge=1)
    resolve_after: int | None = Field(default=None, ge=1)


class ClusterConfig(ConfigModel):
    mode: Literal["single", "ha"] = "single"
    failover: Duration = Field(default=15.0, gt=0)
    shards: int = Field(default=1, ge=1)
    shard: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _shard_in_range(self) -> ClusterConfig:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} must be below shards ({self.shards})")
        return self


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    """A resolved row: what `metric` is compared with, and how often before it changes state."""

    metric: str
    warning: float | None
    critical: float | None
    direction: Literal["above", "below"] = "above"
    window_s: float = 300.0
    trigger_after: int = 1
    resolve_after: int = 1

    def breaches(self, value: float, threshold: float) -> bool:
        return value < threshold if self.direction == "below" else value > threshold


# Present even when [thresholds] is absent (SPEC section 3).
BUILTIN_ROWS: dict[str, dict[str, Any]] = {
    "up": {"critical": 1, "direction": "below", "trigger_after": 2},
    "tls_days_left": {"warning": 14, "critical": 3, "direction": "below"},
    "connections_pct": {"warning": 80, "critical": 95},
}


class Config(ConfigModel):
    """The whole monitor.toml, validated. Build it with `load_config` / `parse_config`."""

    monitor: MonitorSection = MonitorSection()
    business_hours: BusinessHoursConfig = BusinessHoursConfig()
    thresholds: dict[str, ThresholdRowConfig] = {}
    checks: list[SerializeAsAny[CheckConfig]] = []
    notifiers: dict[str, SerializeAsAny[NotifierConfig]] = {}
    routes: list[RouteConfig] = []
    maintenance: list[MaintenanceConfig] = []
    alerts: AlertsConfig = AlertsConfig()
    cluster: ClusterConfig = ClusterConfig()

    _rows: dict[str, dict[str, ThresholdRow]] = PrivateAttr(default_factory=dict)  # checks with overrides
    _shared_rows: dict[str, ThresholdRow] = PrivateAttr(default_factory=dict)  # every other check's

    def rows_for(self, check: str) -> dict[str, ThresholdRow]:
        """The threshold rows of one check after built-in, global and per-check merging."""
        return self._rows.get(check, self._shared_rows)

    def check(self, name: str) -> CheckConfig:
        """One check's config (a scan: callers that need many build their own index)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)


# ---------------------------------------------------------------- loading


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _path(parts: tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _interpolate(value: Any, env: Mapping[str, str], where: tuple[Any, ...], errors: dict[str, str]) -> Any:
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
            errors[_path(where)] = f"environment variable {name} is not set"
            return ""

        return _VAR.sub(sub, value)
    if isinstance(value, dict | list):
        copied: Any = None
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            new = _interpolate(item, env, (*where, key), errors)
            if new is not item:
                if copied is None:
                    copied = value.copy()
                copied[key] = new
        return value if copied is None else copied
    return value


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


def _share_values(model: ConfigModel, shared: dict[Hashable, Any]) -> None:
    """Replace each plain field value of `model` by the equal object first seen in `shared`, a
    copy that holds nothing of the TOML tree."""
    # Safe because config models are frozen and nothing mutates a loaded config.
    fields = model.__dict__
    for name, value in fields.items():
        key = _plain_key(value)
        if key is not None:
            found = shared.get(key)
            if found is None:
                found = shared[key] = _detached(value)
            fields[name] = found


def _detached(value: Any) -> Any:
    """An equal copy of a plain value, strings included."""
    if type(value) is str:
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if type(value) is list:
        return [_detached(v) for v in value]
    if type(value) is dict:
        return {_detached(k): _detached(v) for k, v in value.items()}
    return value


_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "required key missing",
    "url_parsing": "invalid URL",
}


def _render(exc: ValidationError, prefix: tuple[Any, ...]) -> dict[str, str]:
    """SPEC-style `checks[2].url: message` lines; input values are never echoed (secrets)."""
    out: dict[str, str] = {}
    for err in exc.errors(include_input=False, include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = _MESSAGES.get(err["type"]) or err["msg"].removeprefix("Value error, ")
        if err["type"] == "greater_than":
            msg = f"must be greater than {err['ctx']['gt']:g}"
        out.setdefault(_path((*prefix, *loc)), msg)
    return out


def _validate_typed(
    raw: Any,
    where: tuple[Any, ...],
    models: Mapping[str, type[ConfigModel]],
    kind: str,
    errors: dict[str, str],
) -> ConfigModel | None:
    """Two-step validation of a table selected by `type`, keeping the error path rooted at `where`."""
    if not isinstance(raw, dict):
        errors[_path(where)] = "expected a table"
        return None
    type_name = raw.get("type")
    if type_name is None:
        errors[_path((*where, "type"))] = "required key missing"
        return None
    model = models.get(type_name) if isinstance(type_name, str) else None
    if model is None:
        known = ", ".join(sorted(models))
        errors[_path((*where, "type"))] = f"unknown {kind} type {type_name!r} (known: {known})"
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors.update(_render(exc, where))
        return None


def parse_config(text: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate monitor.toml's text; raise ConfigError listing every problem with its key path."""
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"]) from None

    errors: dict[str, str] = {}
    data = _interpolate(data, env, (), errors)
    env_errors = dict(errors)

    monitor_raw = data.get("monitor", {})
    defaults: dict[str, Any] = {}  # valid monitor.default_* values given; else the models' own
    bad_defaults: set[str] = set()  # invalid ones, reported at monitor.default_* alone
    for key in _DEFAULTED:
        value = monitor_raw.get(f"default_{key}") if isinstance(monitor_raw, dict) else None
        if value is not None:
            if (_seconds(value) or 0) > 0:
                defaults[key] = value
            else:
                bad_defaults.add(key)
    monitor_gives_timeout = "timeout" in defaults or "timeout" in bad_defaults

    checks_raw = data.pop("checks", [])
    notifiers_raw = data.pop("notifiers", {})
    checks: list[CheckConfig] = []
    if not isinstance(checks_raw, list):
        errors["checks"] = "expected an array of tables ([[checks]])"
        checks_raw = []
    check_models = {t: c.config_model for t, c in check_types().items()}
    # Equal values of different checks become one object: local, so a reload frees the old ones.
    shared: dict[Hashable, Any] = {}
    raw_names: list[Any] = []  # each table's name as written, for the duplicate-name errors
    for i in range(len(checks_raw)):
        # The TOML tree stays whole until it goes at once: what the models keep of it is copied
        # (`_share_values`), so its memory is returned to the system with it instead of staying
        # as holes around kept strings (18 MB at 20,000 checks).
        raw = checks_raw[i]
        raw_names.append(raw.get("name") if isinstance(raw, dict) else None)
        inherited: tuple[str, ...] = ()
        if isinstance(raw, dict):
            inherited = tuple(k for k in _DEFAULTED if k not in raw)
            missing = {k: defaults[k] for k in inherited if k in defaults}
            if "timeout" in inherited and not monitor_gives_timeout:
                # A timeout nobody wrote adapts to a short interval instead of being an error.
                interval_s = _seconds(raw.get("interval", defaults.get("interval")))
                if interval_s and interval_s < _BUILTIN_TIMEOUT_S:
                    missing["timeout"] = interval_s
            if missing:
                raw = {**raw, **missing}
        check = _validate_typed(raw, ("checks", i), check_models, "check", errors)
        if check is not None:
            if not bad_defaults.intersection(inherited) and (err := _timeout_error(check, inherited)):
                errors[f"checks[{i}].timeout"] = err
            _share_values(check, shared)
            checks.append(check)  # type: ignore[arg-type]

    notifiers: dict[str, NotifierConfig] = {}
    if not isinstance(notifiers_raw, dict):
        errors["notifiers"] = "expected a table of notifiers ([notifiers.NAME])"
        notifiers_raw = {}
    models = notifier_config_models()
    for name, raw in notifiers_raw.items():
        notifier = _validate_typed(raw, ("notifiers", name), models, "notifier", errors)
        if notifier is not None:
            notifiers[name] = notifier  # type: ignore[assignment]

    config: Config | None = None
    try:
        config = Config.model_validate({**data, "checks": checks, "notifiers": notifiers})
    except ValidationError as exc:
        errors.update(_render(exc, ()))

    if config is not None:
        errors.update(_window_order(config))
        # Cross-references need every check; with one check invalid they would only add noise.
        if len(checks) == len(raw_names):
            errors.update(_cross_check(config, raw_names, notifiers_raw))
        else:
            errors.update(_cross_check_names(raw_names))
    # A missing variable explains the value's own error: report it alone.
    for key in env_errors:
        errors.pop(key, None)
    errors.update(env_errors)
    if errors or config is None:
        raise ConfigError([f"{path}: {msg}" if path else msg for path, msg in errors.items()])
    return config


_DEFAULTED = ("interval", "timeout")  # check keys that monitor.default_<key> fills when absent


_BUILTIN_TIMEOUT_S: float = MonitorSection.model_fields["default_timeout"].default


def _seconds(value: Any) -> float | None:
    """A duration as written, in seconds; None when absent or invalid (its own error says why)."""
    try:
        return None if value is None else parse_duration(value)
    except ValueError:
        return None


def _timeout_error(check: CheckConfig, inherited: tuple[str, ...]) -> str | None:
    """A run never overlaps the next, so a timeout longer than the interval silently skips runs
    while the target hangs. Names the monitor.default_* key that gave a value the check lacks."""
    if check.timeout <= check.interval or len(inherited) == 2:  # both: monitor.default_timeout's error
        return None
    timeout, interval = format_duration(check.timeout), format_duration(check.interval)
    if "timeout" in inherited:
        timeout += " (monitor.default_timeout)"
    if "interval" in inherited:
        interval += " (monitor.default_interval)"
    return f"{timeout} is longer than the interval {interval}"


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file (blocking file read: call it off the event loop)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, env)


# ---------------------------------------------------------------- cross-references


def _cross_check_names(raw_names: list[Any]) -> dict[str, str]:
    errors: dict[str, str] = {}
    seen: set[str] = set()
    for i, name in enumerate(raw_names):
        if isinstance(name, str):
            if name in seen:
                errors[f"checks[{i}].name"] = f'duplicate name "{name}"'
            seen.add(name)
    return errors


def _cross_check(config: Config, raw_names: list[Any], notifiers_raw: dict[str, Any]) -> dict[str, str]:
    """References between tables, and the merged threshold table of each check."""
    errors = _cross_check_names(raw_names)
    names = {c.name for c in config.checks}
    for i, check in enumerate(config.checks):
        for j, dep in enumerate(check.depends_on):
            if dep == check.name:
                errors[f"checks[{i}].depends_on[{j}]"] = "a check cannot depend on itself"
            elif dep not in names:
                errors[f"checks[{i}].depends_on[{j}]"] = f'unknown check "{dep}"'
    if cycle := _dependency_cycle(config):
        i = next(i for i, c in enumerate(config.checks) if c.name == cycle[0])
        errors[f"checks[{i}].depends_on"] = "dependency cycle: " + " -> ".join(cycle)

    for i, route in enumerate(config.routes):
        for j, target in enumerate(route.notify):
            if target not in notifiers_raw:
                errors[f"routes[{i}].notify[{j}]"] = f'unknown notifier "{target}"'
        for k, step in enumerate(route.escalate):
            for j, target in enumerate(step.notify):
                if target not in notifiers_raw:
                    errors[f"routes[{i}].escalate[{k}].notify[{j}]"] = f'unknown notifier "{target}"'
        if route.when == "business_hours" and not config.business_hours.days:
            errors[f"routes[{i}].when"] = "business_hours has no days"

    global_rows: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN_ROWS.items()}
    for metric, row in config.thresholds.items():
        given = row.model_dump(exclude_none=True)
        global_rows[metric] = {**global_rows.get(metric, {}), **given}
        if err := _row_error(global_rows[metric]):
            errors[f"thresholds.{metric}"] = err

    rows: dict[str, dict[str, ThresholdRow]] = {}
    resolved: dict[ThresholdRow, ThresholdRow] = {}  # equal rows shared: 5 rows x 20,000 checks is 9 MB

    def table(merged: dict[str, dict[str, Any]]) -> dict[str, ThresholdRow]:
        return {
            metric: resolved.setdefault(row, row)
            for metric, spec in merged.items()
            if _row_error(spec) is None
            for row in (_resolve_row(metric, spec),)
        }

    config._shared_rows = table(global_rows)  # one object for every check without overrides (read-only)
    for i, check in enumerate(config.checks):
        if not check.thresholds:
            continue
        merged = dict(global_rows)
        for metric, override in check.thresholds.items():
            where = f"checks[{i}].thresholds.{metric}"
            if override is False:
                if metric not in merged:
                    errors[where] = f'no threshold row "{metric}" to remove'
                merged.pop(metric, None)
                continue
            try:
                given = ThresholdRowConfig.model_validate(override).model_dump(exclude_none=True)
            except ValidationError as exc:
                errors.update(_render(exc, ("checks", i, "thresholds", metric)))
                continue
            merged[metric] = {**merged.get(metric, {}), **given}
            if err := _row_error(merged[metric]):
                errors[where] = err
        rows[check.name] = table(merged)
    config._rows = rows
    return errors


def _window_order(config: Config) -> dict[str, str]:
    """One-off maintenance windows end after they start, each time read on its own (SPEC 3)."""
    errors: dict[str, str] = {}
    tz = ZoneInfo(config.monitor.timezone)
    for i, window in enumerate(config.maintenance):
        if window.start is not None and window.end is not None:
            start, end = one_off_bounds(window, tz)
            if end <= start:
                # Both shown in monitor.timezone, with their offsets: how each was read.
                shown_end, shown_start = (datetime.fromtimestamp(t, tz).isoformat() for t in (end, start))
                errors[f"maintenance[{i}].end"] = f"{shown_end} is not after start {shown_start}"
    return errors


def _row_error(spec: dict[str, Any]) -> str | None:
    warning, critical = spec.get("warning"), spec.get("critical")
    if warning is None and critical is None:
        return "a threshold row needs warning, critical or both"
    if warning is not None and critical is not None:
        below = spec.get("direction") == "below"
        if below and not warning > critical:
            return f"with direction below, warning ({warning:g}) must be higher than critical ({critical:g})"
        if not below and not warning < critical:
            return f"with direction above, warning ({warning:g}) must be lower than critical ({critical:g})"
    return None


def _resolve_row(metric: str, spec: dict[str, Any]) -> ThresholdRow:
    return ThresholdRow(
        metric=metric,
        warning=spec.get("warning"),
        critical=spec.get("critical"),
        direction=spec.get("direction") or "above",
        window_s=spec.get("window") or 300.0,
        trigger_after=spec.get("trigger_after") or 1,
        resolve_after=spec.get("resolve_after") or 1,
    )


def _dependency_cycle(config: Config) -> list[str] | None:
    deps = {c.name: [d for d in c.depends_on if d != c.name] for c in config.checks}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done or name not in deps:
            return None
        for dep in deps[name]:
            if found := visit(dep, [*path, name]):
                return found
        done.add(name)
        return None

    for name in deps:
        if found := visit(name, []):
            return found
    return None


def dependency_order(config: Config) -> list[str]:
    """Check names, every check after the checks it depends on (SPEC section 5)."""
    order: list[str] = []
    placed: set[str] = set()
    by_name = {c.name: c for c in config.checks}

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)
        for dep in by_name[name].depends_on:
            if dep in by_name:
                place(dep)
        order.append(name)

    for check in config.checks:
        place(check.name)
    return order


# ---------------------------------------------------------------- schema


def config_schema() -> dict[str, Any]:
    """JSON Schema of monitor.toml; `checks` and `notifiers` list every known type."""
    schema = Config.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})

    def one_of(models: list[type[ConfigModel]]) -> dict[str, Any]:
        refs = []
        for model in models:
            sub = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            defs[model.__name__] = sub
            refs.append({"$ref": f"#/$defs/{model.__name__}"})
        return {"oneOf": refs}

    props = schema["properties"]
    props["checks"] = {
        "type": "array",
        "items": one_of([c.config_model for c in check_types().values()]),
    }
    props["notifiers"] = {
        "type": "object",
        "additionalProperties": one_of(list(notifier_config_models().values())),
    }
    schema["title"] = "monitor.toml"
    return schema
