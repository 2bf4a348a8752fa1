"""What runs without the daemon: `monitor once` (and its Nagios plugin output), `monitor
notify-test`, `monitor healthcheck`, and the one ClientSession a process builds."""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import aiohttp

from alerts.notifiers import notifier_types
from alerts.notifiers.base import Delivery, Notification, Notifier, deliver
from checks import CheckDeps
from monitor import __version__
from monitor.clock import Clock, SystemClock
from monitor.config import Config, ThresholdRow
from monitor.models import EXIT_CODES, STATUS_RANK, Status
from monitor.runner import run_check
from monitor.runtime import CheckRuntime, SingleRun, build_runtimes, summary


def new_http_session() -> aiohttp.ClientSession:
    """The one ClientSession of a process, for notifiers and check plugins (the http check has
    its own client, checks/httpclient.py). `force_close`: a plugin check opens a fresh connection
    every run, since a health check over a pooled connection can miss a listener that died."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
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


# ---------------------------------------------------------------- the Nagios plugin protocol
# https://www.monitoring-plugins.org/doc/guidelines.html: a status line `TEXT | PERFDATA`, then
# "long output" lines. Nagios reads everything after a line's first `|` as perfdata, so no text
# line may carry one (a reason quoting a regex `a|b` shows `a¦b`).

NAMED_CHECKS = 10  # checks named on the status line; Nagios keeps 8 KB of a plugin's output
_UNITS = (("_ms", "ms"), ("_bytes", "B"), ("_pct", "%"), ("_s", "s"))
RowsFor = Callable[[str], Mapping[str, ThresholdRow]]  # Config.rows_for


def nagios_text(text: str) -> str:
    """One line of plugin text: no `|` (it would start perfdata), no line break."""
    return " ".join(text.replace("|", "\N{BROKEN BAR}").split())


def nagios_output(result: dict[str, Any], rows_for: RowsFor) -> str:
    """The status line of `monitor once` (`MONITOR CRITICAL - 1 of 3 checks critical: ... | perfdata`)."""
    status = Status(result["status"])
    perfdata = " ".join(
        perfdata_item(c["name"], metric, value, rows_for(c["name"]).get(metric))
        for c in result["checks"]
        for metric, value in c["samples"].items()
    )
    line = f"MONITOR {status.value.upper()} - {nagios_text(_summary(status, result['checks'], rows_for))}"
    return f"{line} | {perfdata}" if perfdata else line


def nagios_unknown(errors: list[str], what: str) -> str:
    """The output of a usage error (invalid config, unknown --check): UNKNOWN, every error listed."""
    first = f"{what}: {errors[0]}" if what else errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return "\n".join([f"MONITOR UNKNOWN - {nagios_text(first)}{more}", *(nagios_text(e) for e in errors)])


def _summary(status: Status, checks: list[dict[str, Any]], rows_for: RowsFor) -> str:
    """`2 of 3 checks critical: a (connection refused), b (status 503); 1 warning`."""
    if not checks:
        return "no checks"
    worst = [c for c in checks if c["status"] == status.value]
    text = f"{len(worst)} of {len(checks)} checks {status.value}"
    if status is Status.OK:
        return text
    named = ", ".join(f"{c['name']} ({_why(c, rows_for(c['name']))})" for c in worst[:NAMED_CHECKS])
    if len(worst) > NAMED_CHECKS:
        named += f", ... and {len(worst) - NAMED_CHECKS} more"
    others = [
        f"{sum(c['status'] == s.value for c in checks)} {s.value}"
        for s in sorted(Status, key=STATUS_RANK.__getitem__, reverse=True)
        if s not in (status, Status.OK) and any(c["status"] == s.value for c in checks)
    ]
    return f"{text}: {named}" + (f"; {', '.join(others)}" if others else "")


def _why(check: dict[str, Any], rows: Mapping[str, ThresholdRow]) -> str:
    """Why a check is at its status: the run's reason when it failed, each breaching row's value."""
    parts = [check["reason"]] if check["reason"] and (not check["up"] or check["status"] == "unknown") else []
    for metric, state in check["states"].items():
        row, value = rows.get(metric), check["samples"].get(metric)
        if state != check["status"] or (metric == "up" and parts) or row is None or value is None:
            continue
        threshold = row.critical if state == "critical" else row.warning
        sign = "<" if row.direction == "below" else ">"
        parts.append(f"{metric} {_number(value)}{_unit(metric)} {sign} {_number(threshold or 0)}")
    return "; ".join(parts) or check["reason"] or check["status"]


def perfdata_item(check: str, metric: str, value: float, row: ThresholdRow | None) -> str:
    """`'<check> <metric>'=<value>[unit];[warn];[crit];[min];[max]`, trailing empty fields dropped."""
    label = f"{check} {metric}".replace("=", "_").replace("'", "''")  # `=` ends a label; `'` is doubled
    unit = _unit(metric)
    low, high = ("0", "1") if metric == "up" else ("0" if unit in ("ms", "s", "B") else "", "")
    warn = "" if row is None else _range(row, row.warning)
    crit = "" if row is None else _range(row, row.critical)
    fields = [f"{_number(value)}{unit}", warn, crit, low, high]
    while fields[-1] == "":
        fields.pop()
    return f"'{label}'=" + ";".join(fields)


def _range(row: ThresholdRow, threshold: float | None) -> str:
    """A row as a Nagios range, which alerts outside start:end (ends included): "above T" breaches
    when value > T, so `~:T` (-inf..T); "below T" breaches when value < T, so `T:` (T..inf)."""
    if threshold is None:
        return ""
    return f"{_number(threshold)}:" if row.direction == "below" else f"~:{_number(threshold)}"


def _unit(metric: str) -> str:
    return next((unit for suffix, unit in _UNITS if metric.endswith(suffix)), "")


def _number(value: float) -> str:
    """A perfdata number: digits, `-` and `.` only (no exponent); `U` when it is not finite."""
    if not math.isfinite(value):
        return "U"
    text = format(Decimal(repr(float(value))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
