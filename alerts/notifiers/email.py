"""Email (SMTP) notifier."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from alerts.notifiers.base import Delivery, Notification, Notifier, NotifierConfig
from monitor.models import Secret


class EmailConfig(NotifierConfig):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 465 for tls, 587 starttls, 25
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str = ""
    password: Secret = SecretStr("")
    from_: str = Field(alias="from", pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[str] = Field(min_length=1)


class EmailNotifier(Notifier):
    type = "email"
    config_model = EmailConfig

    async def send(self, notification: Notification) -> Delivery:
        raise NotImplementedError
