"""The notifier contract shared by every notifier type."""

from __future__ import annotations

from pydantic import Field

from monitor.models import ConfigModel, Duration


class NotifierConfig(ConfigModel):
    """Keys every notifier shares; each type subclasses it with its own keys and `type`."""

    type: str
    timeout: Duration = Field(default=10.0, gt=0)
