"""Config models of routes, maintenance windows, business hours and alert behaviour."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from monitor.models import ConfigModel, Duration
from monitor.plugins import optional_module

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


class BusinessHoursConfig(ConfigModel):
    """When routes with `when = "business_hours"` deliver, in `monitor.timezone`."""

    days: list[Weekday] = ["mon", "tue", "wed", "thu", "fri"]
    start: str = "09:00"
    end: str = "18:00"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.fullmatch(value):  # match() would let "09:00\n" through
            raise ValueError(f'invalid time {value!r}: use "HH:MM"')
        return value

    @model_validator(mode="after")
    def _ordered(self) -> BusinessHoursConfig:
        # A start after the end is a night shift (22:00-06:00): only an empty span is an error.
        if self.start == self.end:
            raise ValueError("start and end must differ")
        return self


class RouteMatch(ConfigModel):
    """All given conditions must hold; an empty match matches every alert."""

    severity: Literal["warning", "critical"] | None = None
    check: str | None = None  # glob on the check name
    labels: dict[str, str] = {}


class EscalationStep(ConfigModel):
    after: Duration
    notify: list[str] = Field(min_length=1)


class RouteConfig(ConfigModel):
    """One row of the alert policy: which alerts go to which notifiers, how often."""

    name: str | None = None  # its identity across reloads; else its match and notify are
    match: RouteMatch = RouteMatch()
    notify: list[str] = Field(min_length=1)
    repeat: Duration | None = None
    escalate: list[EscalationStep] = []
    when: Literal["always", "business_hours"] = "always"
    continue_: bool = Field(default=False, alias="continue")
    send_resolved: bool = True


class MaintenanceConfig(ConfigModel):
    """A window during which the matching checks' alerts are not notified."""

    name: str
    checks: list[str] = ["*"]
    cron: str | None = None
    duration: Duration | None = None
    start: datetime | None = None  # without an offset: read in monitor.timezone
    end: datetime | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not optional_module("croniter").croniter.is_valid(value):
            raise ValueError(f"invalid cron expression {value!r}")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> MaintenanceConfig:
        recurring = self.cron is not None or self.duration is not None
        one_off = self.start is not None or self.end is not None
        if recurring and one_off:
            raise ValueError("use either cron + duration or start + end, not both")
        if recurring and (self.cron is None or not self.duration):
            raise ValueError("a recurring window needs both cron and a non-zero duration")
        # Whether end is after start needs monitor.timezone for a time without an offset: the
        # config loader checks it (alerts.windows.one_off_bounds).
        if one_off and (self.start is None or self.end is None):
            raise ValueError("a one-off window needs both start and end")
        if not recurring and not one_off:
            raise ValueError("give cron + duration or start + end")
        return self


class FlappingConfig(ConfigModel):
    changes: int = Field(default=6, ge=1)
    window: Duration = 1800.0


class StormConfig(ConfigModel):
    """More than `checks` checks' `up` alerts begun within `window`: one storm page, not one each."""

    checks: int = Field(default=10, ge=1)
    window: Duration = Field(default=60.0, gt=0)


class AlertsConfig(ConfigModel):
    flapping: FlappingConfig = FlappingConfig()
    storm: StormConfig | None = StormConfig()  # `storm = false`: None, the guard is off

    @field_validator("storm", mode="before")
    @classmethod
    def _storm_switch(cls, value: object) -> object:
        if value is False:
            return None
        if value is True:
            return {}
        if value is None:
            raise ValueError("use storm = false to turn the storm guard off")
        return value
