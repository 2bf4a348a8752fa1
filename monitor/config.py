"""monitor.toml: loading, validation of every table, cross-references; the checks kept as frozen copies.

`${VAR}` interpolation, key paths and the threshold table live in their own modules.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Hashable, Mapping
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
from monitor.interpolation import interpolate
from monitor.keypaths import key_path, render_errors
from monitor.models import (
    ConfigModel,
    Duration,
    Frozen,
    MaskedUrl,
    Secret,
    format_duration,
    freeze,
    parse_duration,
)
from monitor.plugins import ConfigModels
from monitor.thresholds import ThresholdRow, ThresholdRowConfig, ThresholdTables, resolve_tables

__all__ = [
    "Config",
    "ConfigError",
    "MonitorError",
    "ThresholdRow",
    "ThresholdRowConfig",
    "config_schema",
    "dependency_order",
    "load_config",
    "parse_config",
]


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
    uplink: list[str] = []  # check names: when every one is down, the monitor is blind (SPEC 12)
    history: Duration = Field(default=30 * 86400.0, ge=0)  # hourly run rollups kept; 0 keeps none

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


MIN_FAILOVER_S = 3.0
SHARD_ENV = "MONITOR_SHARD"


class ClusterConfig(ConfigModel):
    """`[cluster]`: an HA pair (`mode = "ha"`) and shards (SPEC 9). `MONITOR_SHARD=i/N` in the
    environment overrides `shard` and `shards` (see `parse_config`)."""

    mode: Literal["single", "ha"] = "single"
    failover: Duration = 15.0  # seconds
    shards: int = Field(default=1, ge=1)
    shard: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _shard_in_range(self) -> ClusterConfig:
        if self.shard >= self.shards:
            raise ValueError(f"shard {self.shard} must be below shards ({self.shards})")
        return self

    @field_validator("failover")
    @classmethod
    def _budget(cls, value: float) -> float:
        # HA.md's budget: a leader that cannot renew stops sending 0.4 x failover - 1s after its
        # last renew began; under 3s that leaves no time for a renew (every failover / 7) between.
        if value < MIN_FAILOVER_S:
            raise ValueError(
                f"{format_duration(value)} is too short: at least {format_duration(MIN_FAILOVER_S)}"
                " (a leader cut off from PostgreSQL stops 0.4 x failover - 1s after its last renew)"
            )
        return value

    @property
    def shared(self) -> bool:
        """Several replicas share the state store: an HA pair, or shards."""
        return self.mode == "ha" or self.shards > 1


def _shard_from_env(data: dict[str, Any], env: Mapping[str, str], errors: dict[str, str]) -> None:
    """`MONITOR_SHARD=i/N` wins over `[cluster] shard` and `shards` (one config for every replica)."""
    value = env.get(SHARD_ENV)
    if value is None:
        return
    index, sep, count = value.strip().partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        errors[SHARD_ENV] = f"expected i/N with 0 <= i < N (e.g. 0/2), got {value!r}"
        return
    cluster = data.setdefault("cluster", {})
    if isinstance(cluster, dict):  # else the table's own error says so
        cluster.update(shard=int(index), shards=int(count))


def _cluster_errors(config: Config) -> dict[str, str]:
    """Replicas coordinate through the state store, so they need one they all reach."""
    cluster = config.cluster
    if not cluster.shared or config.monitor.state.startswith(("postgresql://", "postgres://")):
        return {}
    what = 'mode = "ha"' if cluster.mode == "ha" else f"shards = {cluster.shards}"
    return {"monitor.state": f'[cluster] {what} needs a shared state store: state = "postgresql://..."'}


class StatusPageConfig(ConfigModel):
    """`[status_page]`: what `GET /` is called and how its checks are grouped (SPEC 15)."""

    title: str = Field(default="monitor", min_length=1, max_length=200)
    group_by: str = Field(default="team", min_length=1)  # a label name; checks without it: "other"


class Config(ConfigModel):
    """The whole monitor.toml, validated. Build it with `load_config` / `parse_config`."""

    monitor: MonitorSection = MonitorSection()
    business_hours: BusinessHoursConfig = BusinessHoursConfig()
    thresholds: dict[str, ThresholdRowConfig] = {}
    checks: tuple[Frozen, ...] = ()  # each check's run-time config (models.freeze), in file order
    notifiers: dict[str, SerializeAsAny[NotifierConfig]] = {}
    routes: list[RouteConfig] = []
    maintenance: list[MaintenanceConfig] = []
    alerts: AlertsConfig = AlertsConfig()
    cluster: ClusterConfig = ClusterConfig()
    status_page: StatusPageConfig = StatusPageConfig()

    _tables: ThresholdTables = PrivateAttr(default_factory=ThresholdTables)

    def rows_for(self, check: str) -> dict[str, ThresholdRow]:
        """The threshold rows of one check after built-in, global and per-check merging."""
        return self._tables.rows_for(check)

    def check(self, name: str) -> Frozen:
        """One check's config (a scan: callers that need many build their own index)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(name)


# ---------------------------------------------------------------- loading


def _validate_typed(
    raw: Any,
    where: tuple[Any, ...],
    models: Mapping[str, type[ConfigModel]],
    kind: str,
    errors: dict[str, str],
) -> ConfigModel | None:
    """Two-step validation of a table selected by `type`, keeping the error path rooted at `where`."""
    if not isinstance(raw, dict):
        errors[key_path(where)] = "expected a table"
        return None
    type_name = raw.get("type")
    if type_name is None:
        errors[key_path((*where, "type"))] = "required key missing"
        return None
    model = models.get(type_name) if isinstance(type_name, str) else None
    if model is None:
        known = ", ".join(sorted(models))
        errors[key_path((*where, "type"))] = f"unknown {kind} type {type_name!r} (known: {known})"
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors.update(render_errors(exc, where))
        return None


def parse_config(text: str, env: Mapping[str, str] | None = None) -> Config:
    """Validate monitor.toml's text; raise ConfigError listing every problem with its key path."""
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"TOML syntax: {exc}"]) from None

    errors: dict[str, str] = {}
    data = interpolate(data, env, (), errors)
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
    checks: list[Frozen] = []
    if not isinstance(checks_raw, list):
        errors["checks"] = "expected an array of tables ([[checks]])"
        checks_raw = []
    check_models = ConfigModels(check_types())
    shared: dict[Hashable, Any] = {}  # models.freeze's, for this load only: a reload frees the old values
    raw_names: list[Any] = []  # each table's name as written, for the duplicate-name errors
    for i, raw in enumerate(checks_raw):
        raw_names.append(raw.get("name") if isinstance(raw, dict) else None)
        inherited: tuple[str, ...] = ()
        if isinstance(raw, dict):
            # A type may derive these itself (heartbeat: its interval from its period).
            type_name = raw.get("type")
            model = check_models.get(type_name) if isinstance(type_name, str) else None
            own = getattr(model, "own_defaults", ())
            inherited = tuple(k for k in _DEFAULTED if k not in raw and k not in own)
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
            checks.append(freeze(check, shared))  # the validated model is not kept

    notifiers: dict[str, NotifierConfig] = {}
    if not isinstance(notifiers_raw, dict):
        errors["notifiers"] = "expected a table of notifiers ([notifiers.NAME])"
        notifiers_raw = {}
    models = notifier_config_models()
    for name, raw in notifiers_raw.items():
        notifier = _validate_typed(raw, ("notifiers", name), models, "notifier", errors)
        if notifier is not None:
            notifiers[name] = notifier  # type: ignore[assignment]

    _shard_from_env(data, env, errors)
    config: Config | None = None
    try:
        config = Config.model_validate({**data, "checks": checks, "notifiers": notifiers})
    except ValidationError as exc:
        errors.update(render_errors(exc, ()))

    if config is not None:
        errors.update(_window_order(config))
        errors.update(_cluster_errors(config))
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
    """References between tables, and the merged threshold table of each check (monitor.thresholds)."""
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

    for i, name in enumerate(config.monitor.uplink):
        if name not in names:
            errors[f"monitor.uplink[{i}]"] = f'unknown check "{name}"'

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

    config._tables, row_errors = resolve_tables(config.thresholds, config.checks)
    errors.update(row_errors)
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
