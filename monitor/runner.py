"""Runs one check under its deadline and turns every way it can end into a CheckResult."""

from __future__ import annotations

import asyncio
import logging
import time

from checks.base import Check
from monitor.models import CheckResult, format_duration

log = logging.getLogger("monitor.runner")


async def run_check(check: Check) -> CheckResult:
    """One run: `timeout` covers the whole check (DNS, connect, TLS, request, body).

    A hanging target costs exactly one timeout; a bug in a check (an exception) is reported as
    outcome `error`, never propagated to the scheduler.
    """
    timeout_s = check.config.timeout
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            return await check.run()
    except TimeoutError:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return CheckResult.failure(
            f"timeout after {format_duration(timeout_s)}", elapsed_ms, outcome="timeout"
        )
    except Exception as exc:  # a bug in a check or plugin, not a failing target
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.exception("check raised", extra={"check": check.name})
        return CheckResult.failure(
            f"internal error: {type(exc).__name__}: {exc}", elapsed_ms, outcome="error"
        )
