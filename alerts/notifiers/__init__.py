"""Notifier types: the five built in, plus plugins from the `monitor.notifiers` entry point group."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from alerts.notifiers.base import Notifier, NotifierConfig

BUILTIN = {
    "pagerduty": "alerts.notifiers.pagerduty:PagerDutyNotifier",
    "slack": "alerts.notifiers.slack:SlackNotifier",
    "email": "alerts.notifiers.email:EmailNotifier",
    "webhook": "alerts.notifiers.webhook:WebhookNotifier",
    "alertmanager": "alerts.notifiers.alertmanager:AlertmanagerNotifier",
}


def _load(spec: str) -> type[Notifier]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def notifier_types() -> dict[str, type[Notifier]]:
    """Every known notifier class by its `type`; a plugin's entry point names its Notifier
    subclass, whose `config_model` validates its table. Built-in names cannot be taken."""
    types = {name: _load(spec) for name, spec in BUILTIN.items()}
    for ep in entry_points(group="monitor.notifiers"):
        if ep.name not in types:
            types[ep.name] = ep.load()
    return types


def notifier_config_models() -> dict[str, type[NotifierConfig]]:
    return {name: cls.config_model for name, cls in notifier_types().items()}
