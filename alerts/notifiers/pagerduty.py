"""PagerDuty Events API v2 notifier."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import Delivery, Notification, Notifier, NotifierConfig
from monitor.models import MaskedUrl, Secret


class PagerDutyConfig(NotifierConfig):
    type: Literal["pagerduty"]
    routing_key: Secret
    url: MaskedUrl = "https://events.pagerduty.com/v2/enqueue"


class PagerDutyNotifier(Notifier):
    type = "pagerduty"
    config_model = PagerDutyConfig

    async def send(self, notification: Notification) -> Delivery:
        raise NotImplementedError
