"""Generic JSON webhook notifier."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import NotifierConfig
from monitor.models import MaskedUrl, Secret


class WebhookConfig(NotifierConfig):
    type: Literal["webhook"]
    url: MaskedUrl
    headers: dict[str, Secret] = {}
