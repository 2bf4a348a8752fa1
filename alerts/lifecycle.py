"""The alert state machine: pending -> firing -> resolved, counted in this one place.

Evaluation says how bad each row's value is now (its level); only here do trigger_after and
resolve_after turn those levels into an alert's state.
"""

from __future__ import annotations

import enum

from alerts.model import Alert, AlertState, CheckInfo, alert_id
from monitor.models import Level, RowEvaluation


class Transition(enum.Enum):
    NONE = "none"  # same state and severity (the value or the counts may have moved)
    OPENED = "opened"  # a first breach: pending (or firing at once with trigger_after 1)
    FIRED = "fired"  # pending -> firing
    SEVERITY = "severity"  # firing, with another severity
    RESOLVED = "resolved"  # firing -> resolved, after resolve_after clean evaluations
    DROPPED = "dropped"  # pending -> ok: it never fired, nobody is told


def open_alert(info: CheckInfo, row: RowEvaluation, reason: str | None, now: float) -> Alert:
    """A new episode, before its first breach is counted."""
    return Alert(
        id=alert_id(info.name, row.metric),
        check=info.name,
        metric=row.metric,
        check_type=info.type,
        target=info.target,
        state=AlertState.PENDING,
        severity=_severity(row.level),
        value=row.value,
        threshold=row.threshold,
        direction=row.direction,
        started_at=now,
        reason=reason,
        labels=dict(info.labels),
        runbook=info.runbook,
    )


def count(alert: Alert, row: RowEvaluation, reason: str | None, now: float) -> Transition:
    """Fold one evaluation of the alert's row into it."""
    before_state, before_severity = alert.state, alert.severity
    alert.value, alert.reason = row.value, reason
    if row.level > Level.OK:
        alert.clean = 0
        alert.breaching += 1
        alert.threshold = row.threshold
        alert.severity = _severity(row.level)
        if alert.state is AlertState.FIRING or alert.breaching >= row.trigger_after:
            alert.state = AlertState.FIRING
    else:
        alert.breaching = 0
        if alert.state is AlertState.PENDING:
            return Transition.DROPPED
        alert.clean += 1
        if alert.clean >= row.resolve_after:
            alert.state, alert.resolved_at = AlertState.RESOLVED, now
            return Transition.RESOLVED
        alert.severity = before_severity  # a clean run while firing changes no severity
    if alert.state is AlertState.FIRING and before_state is AlertState.PENDING:
        return Transition.FIRED if alert.breaching > 1 else Transition.OPENED
    if alert.state is AlertState.FIRING and alert.severity != before_severity:
        return Transition.SEVERITY
    if alert.breaching == 1 and alert.state is AlertState.PENDING:
        return Transition.OPENED
    return Transition.NONE


def _severity(level: Level) -> str:
    return "critical" if level is Level.CRITICAL else "warning"
