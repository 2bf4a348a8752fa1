"""Generic JSON webhook notifier."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import Delivery, Notification, Notifier, NotifierConfig
from monitor.models import MaskedUrl, Secret


class WebhookConfig(NotifierConfig):
    type: Literal["webhook"]
    url: MaskedUrl
    headers: dict[str, Secret] = {}


class WebhookNotifier(Notifier):
    type = "webhook"
    config_model = WebhookConfig

    async def send(self, notification: Notification) -> Delivery:
        raise NotImplementedError
