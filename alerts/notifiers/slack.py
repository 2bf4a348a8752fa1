"""Slack incoming-webhook notifier."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import Delivery, Notification, Notifier, NotifierConfig
from monitor.models import Secret


class SlackConfig(NotifierConfig):
    type: Literal["slack"]
    webhook_url: Secret


class SlackNotifier(Notifier):
    type = "slack"
    config_model = SlackConfig

    async def send(self, notification: Notification) -> Delivery:
        raise NotImplementedError
