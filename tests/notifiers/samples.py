"""Sample notifications, as the alert manager would make them for the SPEC's backend-api example."""

from __future__ import annotations

from typing import Any

from alerts.notifiers.base import Notification

T0 = 1_795_000_000.0  # 2026-11-18T11:06:40Z: when the breach began
RUNBOOK = "https://wiki.example.com/runbook#issue-1-backend-api-not-responding"


def notification(event: str = "firing", **overrides: Any) -> Notification:
    """backend-api down (`up 0 < 1`, status 503), critical; resolved (`up` back to 1) 4m 12s after
    it began."""
    fields: dict[str, Any] = {
        "event": event,
        "alert_id": "3f2a9c1e7b5d4e60",
        "check": "backend-api",
        "check_type": "http",
        "target": "backend.example.com",
        "metric": "up",
        "severity": "critical",
        "value": 0.0,
        "threshold": 1.0,
        "direction": "below",
        "started_at": T0,
        "created_at": T0 + (252 if event == "resolved" else 60),
        "resolved_at": T0 + 252 if event == "resolved" else None,
        "reason": "status 503",
        "labels": {"team": "backend", "component": "api"},
        "runbook": RUNBOOK,
    }
    if event == "resolved":  # as the alert manager makes it: the last (clean) run's value, no reason
        fields.update(value=1.0, reason=None)
    if event == "acknowledged":
        fields.update(acknowledged_by="alice", note="looking at the load balancer")
    if event == "flapping":
        fields.update(note="7 state changes in 30m")
    fields.update(overrides)
    return Notification(**fields)


def latency_warning(**overrides: Any) -> Notification:
    """A warning on a window metric, with no failure reason: `latency_p95_ms 734 > 500`."""
    fields: dict[str, Any] = {
        "metric": "latency_p95_ms",
        "severity": "warning",
        "value": 734.0,
        "threshold": 500.0,
        "direction": "above",
        "reason": None,
    }
    fields.update(overrides)
    return notification("firing", **fields)
