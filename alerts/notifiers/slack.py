"""Slack incoming-webhook notifier."""

from __future__ import annotations

from typing import Literal

from alerts.notifiers.base import NotifierConfig
from monitor.models import Secret


class SlackConfig(NotifierConfig):
    type: Literal["slack"]
    webhook_url: Secret
