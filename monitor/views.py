"""Alerts, silences and the storm as the API shows them (SPEC sections 6 and 12)."""

from __future__ import annotations

from itertools import islice
from typing import Any

from alerts.model import Alert, Storm
from alerts.notifiers.base import STORM_NAMED
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


def storm_view(storm: Storm | None) -> dict[str, Any] | None:
    """The storm in progress as `GET /api/v1/alerts` and the status page show it: since when, how
    many checks, the first of them (as many as its notification names); None without one."""
    if storm is None:
        return None
    return {
        "started_at": iso(storm.started_at),
        "checks": len(storm.members),
        "first": list(islice(storm.members, STORM_NAMED)),
    }
