"""Prometheus Alertmanager notifier (POST /api/v2/alerts)."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import Delivery, Notification, Notifier, NotifierConfig
from monitor.models import MaskedUrl


class AlertmanagerConfig(NotifierConfig):
    type: Literal["alertmanager"]
    url: MaskedUrl


class AlertmanagerNotifier(Notifier):
    type = "alertmanager"
    config_model = AlertmanagerConfig

    async def send(self, notification: Notification) -> Delivery:
        raise NotImplementedError
