"""`type = "echo"`: a notifier plugin that keeps what it is sent, for tests and end-to-end runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from alerts.notifiers.base import Delivery, Failed, Notification, Notifier, NotifierConfig, Retry, Sent


class EchoConfig(NotifierConfig):
    type: Literal["echo"]
    path: str | None = Field(default=None, min_length=1)  # append each notification as a JSON line
    outcome: Literal["sent", "retry", "failed"] = "sent"  # what every send answers


class EchoNotifier(Notifier):
    type = "echo"
    config_model = EchoConfig
    config: EchoConfig

    received: ClassVar[list[tuple[str, Notification]]] = []  # (notifier name, notification)

    async def send(self, notification: Notification) -> Delivery:
        self.received.append((self.name, notification))
        if self.config.path is not None:
            line = json.dumps({"notifier": self.name, **notification.to_json()}) + "\n"
            await asyncio.to_thread(_append, Path(self.config.path), line)
        if self.config.outcome == "retry":
            return Retry("echo: configured to retry")
        if self.config.outcome == "failed":
            return Failed("echo: configured to fail")
        return Sent()


def _append(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(line)
