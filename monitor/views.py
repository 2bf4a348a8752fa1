"""Alerts and silences as the API shows them (SPEC section 6)."""

from __future__ import annotations

from typing import Any

from alerts.model import Alert
from alerts.windows import Silence
from monitor.models import iso


def alert_view(alert: Alert) -> dict[str, Any]:
    """An alert as `GET /api/v1/alerts` shows it (SPEC section 6)."""
    return {
        "id": alert.id,
        "check": alert.check,
        "metric": alert.metric,
        "severity": alert.severity,
        "state": alert.state,
        "suppressed": alert.suppressed,
        "acknowledged": alert.acknowledged,
        "value": alert.value,
        "threshold": alert.threshold,
        "started_at": iso(alert.started_at),
        "resolved_at": iso(alert.resolved_at),
        "reason": alert.reason,
        "labels": alert.labels,
        "runbook": alert.runbook,
    }


def silence_view(silence: Silence) -> dict[str, Any]:
    return {
        "id": silence.id,
        "checks": list(silence.checks),
        "start": iso(silence.start),
        "end": iso(silence.end),
        "comment": silence.comment,
    }
