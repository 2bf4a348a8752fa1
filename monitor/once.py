"""What runs without the daemon: `monitor once` and `monitor notify-test`, and the one
ClientSession a process builds."""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any

import aiohttp

from alerts.notifiers import notifier_types
from alerts.notifiers.base import Delivery, Notification, Notifier, deliver
from checks import CheckDeps
from monitor import __version__
from monitor.clock import Clock, SystemClock
from monitor.config import Config
from monitor.models import EXIT_CODES, Status
from monitor.runner import run_check
from monitor.runtime import CheckRuntime, SingleRun, build_runtimes, summary


def new_http_session() -> aiohttp.ClientSession:
    """The one ClientSession of a process, for notifiers and check plugins (the http check has
    its own client, checks/httpclient.py). `force_close`: a plugin check opens a fresh connection
    every run, since a health check over a pooled connection can miss a listener that died.
    Both address families are raced (RFC 8305, 250 ms). `trust_env` stays off: each request
    names its proxy (monitor.proxies reads the environment once, NO_PROXY as curl does)."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0, happy_eyeballs_delay=0.25)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": f"monitor/{__version__}"},
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),  # the check runner owns the deadline
    )


async def run_once(
    config: Config, names: list[str] | None = None, clock: Clock | None = None
) -> dict[str, Any]:
    """Every (or the named) check once, concurrently, judged on that single run."""
    clock = clock or SystemClock()
    async with new_http_session() as session:
        runtimes: dict[str, CheckRuntime] = {}
        runtimes.update(build_runtimes(config, CheckDeps(http=session), SingleRun(runtimes), names))

        async def one(rt: CheckRuntime) -> None:
            result, now = await run_check(rt.check), clock.now()
            rt.record(result, now)
            rt.evaluator.observe(result, now)

        async with asyncio.TaskGroup() as group:
            for rt in runtimes.values():
                group.create_task(one(rt))
    return summary(runtimes.values())


async def notify_test(config: Config, name: str, clock: Clock | None = None) -> Delivery:
    """One clearly marked test notification through one notifier: directly, no outbox, no retry."""
    now = (clock or SystemClock()).now()
    notification = Notification(
        event="test",
        alert_id=f"monitor-test-{secrets.token_hex(4)}",
        check="monitor-notify-test",
        check_type="test",
        target=socket.gethostname(),
        metric="test",
        severity="warning",
        value=None,
        threshold=None,
        direction="above",
        started_at=now,
        created_at=now,
        reason="This is a test notification sent by `monitor notify-test`; no action is needed.",
        labels={"test": "true"},
    )
    async with new_http_session() as session:
        notifier = build_notifiers(config, session)[name]
        return await deliver(notifier, notification)


def exit_code(status: str) -> int:
    return EXIT_CODES[Status(status)]


def build_notifiers(config: Config, session: aiohttp.ClientSession) -> dict[str, Notifier]:
    types = notifier_types()
    return {name: types[cfg.type](name, cfg, session) for name, cfg in config.notifiers.items()}
