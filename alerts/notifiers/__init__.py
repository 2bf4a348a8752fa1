"""Notifier types: the five built in, plus plugins from the `monitor.notifiers` entry point group."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from alerts.notifiers.base import NotifierConfig
from monitor.plugins import ConfigModels, TypeRegistry

BUILTIN = {
    "pagerduty": "alerts.notifiers.pagerduty:PagerDutyNotifier",
    "slack": "alerts.notifiers.slack:SlackNotifier",
    "email": "alerts.notifiers.email:EmailNotifier",
    "webhook": "alerts.notifiers.webhook:WebhookNotifier",
    "alertmanager": "alerts.notifiers.alertmanager:AlertmanagerNotifier",
}


@functools.cache
def notifier_types() -> TypeRegistry:
    """Every known notifier class by its `type`, imported when looked up; a plugin's entry point
    names its Notifier subclass, whose `config_model` validates its table."""
    return TypeRegistry(BUILTIN, "monitor.notifiers")


def notifier_config_models() -> Mapping[str, type[NotifierConfig]]:
    return ConfigModels(notifier_types())
