"""Alerting's value types: an alert, its state machine's states, what alerting knows of checks."""

from __future__ import annotations

import enum
import functools
import hashlib
import itertools
import json
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo

from alerts.config import AlertsConfig, BusinessHoursConfig, MaintenanceConfig, RouteConfig
from alerts.notifiers.base import STORM_NAMED, Event, Notification
from monitor.models import iso


class AlertState(enum.StrEnum):
    PENDING = "pending"  # breaching, fewer than trigger_after times in a row
    FIRING = "firing"
    RESOLVED = "resolved"


class Suppression(enum.StrEnum):
    """Why an alert is listed but not notified (the API's `suppressed`)."""

    FLAPPING = "flapping"
    MAINTENANCE = "maintenance"
    SILENCE = "silence"
    DEPENDENCY = "dependency"  # a check it depends on is down
    DOWN = "down"  # its own check is down
    UPLINK = "uplink"  # every uplink check is down: the monitor is blind
    STORM = "storm"  # it began firing during a storm: the storm notification tells of it


# Suppressions decided when a breach begins that stay until it resolves (one outage, one page).
STICKY = (Suppression.DEPENDENCY, Suppression.DOWN, Suppression.UPLINK, Suppression.STORM)


@functools.cache
def alert_id(check: str, metric: str) -> str:
    """Stable across restarts and config reloads: PagerDuty's dedup_key."""
    return hashlib.sha256(f"{check}\0{metric}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CheckInfo:
    """What alerting knows of a check (it never imports checks/)."""

    name: str
    type: str
    target: str
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Route:
    """A route of the policy with its stable identity: progress is kept by `key`, so a reload
    that reorders or edits other routes hands no route another's repeat and escalation state."""

    key: str
    config: RouteConfig

    @classmethod
    def of(cls, config: RouteConfig) -> Route:
        if config.name is not None:
            return cls(f"name:{config.name}", config)
        identity = json.dumps([config.match.model_dump(), list(config.notify)], sort_keys=True)
        return cls(hashlib.sha256(identity.encode()).hexdigest()[:12], config)


@dataclass(frozen=True)
class AlertPolicy:
    """The alerting part of the config, as the daemon hands it over."""

    checks: Mapping[str, CheckInfo]  # in dependency order
    routes: tuple[Route, ...]
    maintenance: tuple[MaintenanceConfig, ...]
    business_hours: BusinessHoursConfig
    timezone: ZoneInfo
    alerts: AlertsConfig
    uplink: tuple[str, ...] = ()  # [monitor] uplink: check names
    shard: int = 0  # [cluster] shard: names the storm's PagerDuty incident

    @functools.cached_property
    def _dependencies(self) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
        """(check -> the checks it depends on, check -> the checks depending on it), only for
        checks that have any: asked on every decision, so not looked up in `checks` each time."""
        depends: dict[str, tuple[str, ...]] = {}
        found: dict[str, list[str]] = {}
        for c in self.checks.values():
            if c.depends_on:
                depends[c.name] = c.depends_on
            for dep in c.depends_on:
                found.setdefault(dep, []).append(c.name)
        return depends, {k: tuple(v) for k, v in found.items()}

    def depends_on(self, check: str) -> tuple[str, ...]:
        return self._dependencies[0].get(check, ())

    def dependents(self, check: str) -> tuple[str, ...]:
        return self._dependencies[1].get(check, ())

    @functools.cached_property
    def routes_by_key(self) -> dict[str, Route]:
        return {r.key: r for r in self.routes}


@dataclass(slots=True)
class RouteProgress:
    """How far one route has got with one alert episode."""

    first_at: float | None = None  # first delivery (escalation counts from here)
    last_at: float | None = None  # last delivery (repeat counts from here)
    escalated: int = 0  # escalation steps done
    held: bool = False  # waiting for business hours
    notifiers: list[str] = field(default_factory=list)  # who got the firing


@dataclass(slots=True)
class Alert:
    """One episode of one (check, metric) alert: from its first breach to its resolve."""

    id: str
    check: str
    metric: str
    check_type: str
    target: str
    state: AlertState
    severity: str  # "warning" | "critical"
    value: float | None
    threshold: float | None
    direction: str
    started_at: float
    resolved_at: float | None = None
    reason: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str | None = None
    breaching: int = 0  # consecutive breaching evaluations
    clean: int = 0  # consecutive clean evaluations while firing
    acknowledged: bool = False
    acknowledged_by: str | None = None
    ack_comment: str | None = None
    sticky: Suppression | None = None  # an outage it belongs to, decided while never notified
    suppressed: Suppression | None = None  # why it is not notified now
    notified_severity: str | None = None  # the severity last announced as firing
    progress: dict[str, RouteProgress] = field(default_factory=dict)  # by Route.key
    flapping: bool = False
    resolve_sent: bool = False

    @property
    def key(self) -> str:
        """One episode of this alert, as the store keeps it."""
        return f"{self.id}:{self.started_at:.3f}"

    @property
    def level(self) -> int:
        """monitor_alert_state: 0 unless firing, then 1 warning, 2 critical."""
        if self.state is not AlertState.FIRING:
            return 0
        return 2 if self.severity == "critical" else 1

    def to_doc(self) -> dict[str, Any]:
        """The alert as stored: plain JSON values, nothing shared with the live alert."""
        doc = dict(zip(_ALERT_FIELDS, _alert_values(self), strict=True))
        doc["labels"] = dict(self.labels)
        doc["progress"] = {key: _progress_doc(p) for key, p in self.progress.items()}
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        doc = {k: v for k, v in doc.items() if k in _ALERT_FIELDS}
        doc["state"] = AlertState(doc["state"])
        for key in ("sticky", "suppressed"):
            doc[key] = Suppression(doc[key]) if doc.get(key) else None
        doc["progress"] = {k: RouteProgress(**v) for k, v in doc.get("progress", {}).items()}
        return cls(**doc)

    def copy(self) -> Alert:
        """Nothing mutable shared with this alert (a decision is tried on the copy first)."""
        new = Alert(*_alert_values(self))
        new.labels = dict(self.labels)
        new.progress = {
            key: RouteProgress(p.first_at, p.last_at, p.escalated, p.held, list(p.notifiers))
            for key, p in self.progress.items()
        }
        return new

    def notification(self, event: Event, now: float, note: str | None = None) -> Notification:
        return Notification(
            event=event,
            alert_id=self.id,
            check=self.check,
            check_type=self.check_type,
            target=self.target,
            metric=self.metric,
            severity="critical" if self.severity == "critical" else "warning",
            value=self.value,
            threshold=self.threshold,
            direction="below" if self.direction == "below" else "above",
            started_at=self.started_at,
            created_at=now,
            resolved_at=self.resolved_at,
            reason=self.reason,
            labels=dict(self.labels),
            runbook=self.runbook,
            acknowledged_by=self.acknowledged_by,
            note=note,
        )


STORM_KIND = "storm"  # the `kind` of a stored storm document (alert documents have none)


@dataclass(slots=True)
class Storm:
    """A storm in progress (SPEC section 12). `members`: checks whose `up` alert it swallowed, in
    the order they joined (rebuilt from the alerts on load, so never stored); `notified`: each
    notifier told of it, with when it was last told (repeats count from there)."""

    shard: int
    started_at: float
    members: dict[str, None] = field(default_factory=dict)
    notified: dict[str, float] = field(default_factory=dict)
    over_at: float | None = None

    @property
    def id(self) -> str:
        """PagerDuty's dedup_key: one incident per storm."""
        return f"storm-{self.shard}-{iso(self.started_at)}"

    @property
    def key(self) -> str:
        return f"storm:{self.shard}:{self.started_at:.3f}"

    def to_doc(self) -> dict[str, Any]:
        return {
            "kind": STORM_KIND,
            "shard": self.shard,
            "started_at": self.started_at,
            "notified": dict(self.notified),
            "over_at": self.over_at,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Storm:
        notified = {str(k): float(v) for k, v in doc.get("notified", {}).items()}
        return cls(int(doc["shard"]), float(doc["started_at"]), notified=notified, over_at=doc.get("over_at"))

    def notification(self, event: Event, now: float, window_s: float) -> Notification:
        """The storm's one notification: `storm` (its start, and each repeat) or `storm_over`."""
        names = list(itertools.islice(self.members, STORM_NAMED))
        return Notification(
            event=event,
            alert_id=self.id,
            check="storm",
            check_type="storm",
            target="",
            metric="up",
            severity="critical",
            value=None,
            threshold=None,
            direction="below",
            started_at=self.started_at,
            created_at=now,
            resolved_at=self.over_at,
            storm_count=len(self.members),
            storm_checks=names,
            storm_window_s=window_s,
        )


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))
_PROGRESS_FIELDS = tuple(f.name for f in fields(RouteProgress))
# Every field at once, in field order: a storm copies and stores 20,000 alerts in seconds.
_alert_values = operator.attrgetter(*_ALERT_FIELDS)
_progress_values = operator.attrgetter(*_PROGRESS_FIELDS)


def _progress_doc(progress: RouteProgress) -> dict[str, Any]:
    doc = dict(zip(_PROGRESS_FIELDS, _progress_values(progress), strict=True))
    doc["notifiers"] = list(progress.notifiers)
    return doc
