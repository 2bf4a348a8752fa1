"""Slack incoming-webhook notifier."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr

from alerts.notifiers.base import NotifierConfig


class SlackConfig(NotifierConfig):
    type: Literal["slack"]
    webhook_url: SecretStr
