"""Prometheus Alertmanager notifier (POST /api/v2/alerts)."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import NotifierConfig
from monitor.models import MaskedUrl


class AlertmanagerConfig(NotifierConfig):
    type: Literal["alertmanager"]
    url: MaskedUrl
