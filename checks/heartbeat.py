"""Heartbeat check (a dead man's switch): a job pings the API; silence, or a reported failure, is down."""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

from pydantic import Field, SecretStr, model_validator

from checks.base import Check, CheckConfig
from monitor.models import CheckResult, Duration, format_duration, iso, parse_duration

__all__ = ["HeartbeatCheck", "HeartbeatCheckConfig"]

_MAX_INTERVAL_S = 60.0
_STORE_READ_SHARE = 0.5  # of the run's timeout, for re-reading the stored ping; the rest judges


def _seconds(value: Any) -> float | None:
    try:
        return None if value is None else parse_duration(value)
    except ValueError:
        return None  # the field's own error says why


def _span(seconds: float) -> str:
    """A time since, as people say it: `1d 2h`, `5m 3s`, `42s` (two units at most)."""
    left = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
        if len(parts) == 2 or (parts and left == 0):
            break
    return " ".join(parts)


class HeartbeatCheckConfig(CheckConfig):
    """`type = "heartbeat"`: the job calls `/api/v1/heartbeats/{name}` at least every `period`
    (plus `grace`), with `token` as a bearer header or `?token=`. `grace` defaults to 0.

    `interval` defaults to the smaller of period / 10 and 1m, not monitor.default_interval; the
    run only reads the latest ping, so `timeout` is kept within the interval."""

    # Keys the config loader must not fill from monitor.default_*: this type derives them.
    own_defaults: ClassVar[frozenset[str]] = frozenset({"interval", "timeout"})

    type: Literal["heartbeat"]
    period: Duration = Field(gt=0)
    grace: Duration = Field(default=0.0, ge=0)
    token: SecretStr = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _derived_interval(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        interval = _seconds(data.get("interval"))
        if "interval" not in data and (period := _seconds(data.get("period"))) and period > 0:
            interval = min(period / 10, _MAX_INTERVAL_S)
            data = {**data, "interval": interval}
        timeout = _seconds(data.get("timeout", cls.model_fields["timeout"].default))
        if interval and interval > 0 and timeout is not None and timeout > interval:
            data = {**data, "timeout": interval}
        return data


class HeartbeatCheck(Check):
    """Judges from the latest ping in the heartbeat book (`deps.heartbeats`).

    A heartbeat never pinged is up, with no `since_last_s` and a reason saying it waits, until one
    period + grace after it was first configured; then it is down."""

    __slots__ = ()

    type: ClassVar[str] = "heartbeat"
    config_model: ClassVar[type[CheckConfig]] = HeartbeatCheckConfig
    config: HeartbeatCheckConfig

    def target(self) -> str:
        return f"/api/v1/heartbeats/{self.config.name}"

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        cfg = self.config
        book = self.deps.heartbeats
        beat = await book.current(cfg.name, cfg.timeout * _STORE_READ_SHARE)
        now = book.clock.now()
        allowed = cfg.period + cfg.grace

        def ms() -> float:
            return (time.perf_counter() - started) * 1000

        if beat is None or beat.last_at is None:
            configured_at = now if beat is None else beat.configured_at
            due = configured_at + allowed
            if now <= due:
                return CheckResult(True, ms(), {}, f"waiting for the first ping (down after {iso(due)})")
            return CheckResult.failure(f"no ping since configured {_span(now - configured_at)} ago", ms())
        since = max(0.0, now - beat.last_at)
        if not beat.ok:
            reported = f"failure reported: {beat.reason}" if beat.reason else "failure reported"
            return CheckResult.failure(reported, ms(), since_last_s=since)
        if since > allowed:
            limit = format_duration(cfg.period) + (
                f" + grace {format_duration(cfg.grace)}" if cfg.grace else ""
            )
            return CheckResult.failure(
                f"no ping for {_span(since)} (period {limit})", ms(), since_last_s=since
            )
        return CheckResult.success(ms(), since_last_s=since)
