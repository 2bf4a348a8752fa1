"""Alerts and silences as the API shows them (SPEC section 6)."""

from __future__ import annotations

from typing import Any

from alerts.model import Alert
from alerts.windows import Silence
from monitor.models import iso


def alert_view(alert: Alert) -> dict[str, Any]:
    """An alert as `GET /api/v1/alerts` shows it (SPEC section 6): the shape notifiers send, plus
    where the alert stands."""
    fields = alert.notification("firing", alert.started_at).alert_fields()
    return {
        **fields,
        "state": alert.state.value,
        "suppressed": alert.suppressed.value if alert.suppressed else None,
        "acknowledged": alert.acknowledged,
    }


def silence_view(silence: Silence) -> dict[str, Any]:
    return {
        "id": silence.id,
        "checks": list(silence.checks),
        "start": iso(silence.start),
        "end": iso(silence.end),
        "comment": silence.comment,
    }
