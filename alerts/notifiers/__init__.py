"""Notifier types: the five built in, plus plugins from the `monitor.notifiers` entry point group."""

from __future__ import annotations

import functools
import importlib
from importlib.metadata import entry_points

from alerts.notifiers.base import NotifierConfig

BUILTIN = {
    "pagerduty": "alerts.notifiers.pagerduty:PagerDutyConfig",
    "slack": "alerts.notifiers.slack:SlackConfig",
    "email": "alerts.notifiers.email:EmailConfig",
    "webhook": "alerts.notifiers.webhook:WebhookConfig",
    "alertmanager": "alerts.notifiers.alertmanager:AlertmanagerConfig",
}


def _load(spec: str) -> type[NotifierConfig]:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


@functools.cache
def notifier_config_models() -> dict[str, type[NotifierConfig]]:
    """The config model of every known notifier type; a plugin's entry point is its class,
    whose `config_model` validates its table."""
    models = {name: _load(spec) for name, spec in BUILTIN.items()}
    for ep in entry_points(group="monitor.notifiers"):
        if ep.name not in models:
            models[ep.name] = ep.load().config_model
    return models
