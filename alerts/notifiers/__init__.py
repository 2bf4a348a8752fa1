"""Notifier types: the five built in, plus plugins from the `monitor.notifiers` entry point group."""

from __future__ import annotations

import functools

from alerts.notifiers.base import Notifier, NotifierConfig
from monitor.plugins import load_types

BUILTIN = {
    "pagerduty": "alerts.notifiers.pagerduty:PagerDutyNotifier",
    "slack": "alerts.notifiers.slack:SlackNotifier",
    "email": "alerts.notifiers.email:EmailNotifier",
    "webhook": "alerts.notifiers.webhook:WebhookNotifier",
    "alertmanager": "alerts.notifiers.alertmanager:AlertmanagerNotifier",
}


@functools.cache
def notifier_types() -> dict[str, type[Notifier]]:
    """Every known notifier class by its `type`; a plugin's entry point names its Notifier
    subclass, whose `config_model` validates its table."""
    return load_types(BUILTIN, "monitor.notifiers")


def notifier_config_models() -> dict[str, type[NotifierConfig]]:
    return {name: cls.config_model for name, cls in notifier_types().items()}
