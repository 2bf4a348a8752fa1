"""The threshold table: built-in, global and per-check rows merged into each check's resolved rows."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from monitor.keypaths import render_errors
from monitor.models import ConfigModel, Duration


class ThresholdRowConfig(ConfigModel):
    """One row of the threshold table as written; unset keys are taken from the row below it."""

    warning: float | None = None
    critical: float | None = None
    direction: Literal["above", "below"] | None = None
    window: Duration | None = None
    trigger_after: int | None = Field(default=None, ge=1)
    resolve_after: int | None = Field(default=None, ge=1)


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


@dataclass(frozen=True, slots=True)
class ThresholdTables:
    """Every check's resolved rows. Why shared: most checks have no overrides and the same rows,
    so they get one table (read-only), and equal rows are one object."""

    shared: dict[str, ThresholdRow] = field(default_factory=dict)  # every check without overrides
    own: dict[str, dict[str, ThresholdRow]] = field(default_factory=dict)  # checks with overrides

    def rows_for(self, check: str) -> dict[str, ThresholdRow]:
        return self.own.get(check, self.shared)


def resolve_tables(
    thresholds: Mapping[str, ThresholdRowConfig], checks: Iterable[Any]
) -> tuple[ThresholdTables, dict[str, str]]:
    """The tables of `[thresholds]` over the built-in rows, then each check's `thresholds`
    overrides (`metric = false` removes a row); and the errors, at their key paths."""
    errors: dict[str, str] = {}
    global_rows: dict[str, dict[str, Any]] = {k: dict(v) for k, v in BUILTIN_ROWS.items()}
    for metric, row in thresholds.items():
        given = row.model_dump(exclude_none=True)
        global_rows[metric] = {**global_rows.get(metric, {}), **given}
        if err := _row_error(global_rows[metric]):
            errors[f"thresholds.{metric}"] = err

    resolved: dict[ThresholdRow, ThresholdRow] = {}

    def table(merged: dict[str, dict[str, Any]]) -> dict[str, ThresholdRow]:
        return {
            metric: resolved.setdefault(row, row)
            for metric, spec in merged.items()
            if _row_error(spec) is None
            for row in (_resolve_row(metric, spec),)
        }

    shared = table(global_rows)
    own: dict[str, dict[str, ThresholdRow]] = {}
    for i, check in enumerate(checks):
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
                errors.update(render_errors(exc, ("checks", i, "thresholds", metric)))
                continue
            merged[metric] = {**merged.get(metric, {}), **given}
            if err := _row_error(merged[metric]):
                errors[where] = err
        own[check.name] = table(merged)
    return ThresholdTables(shared, own), errors


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
