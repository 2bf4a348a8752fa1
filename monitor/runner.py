"""Runs one check under its deadline and turns every way it can end into a CheckResult."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import traceback

from checks.base import Check
from monitor.models import CheckResult, format_duration
from monitor.secrets import redact

log = logging.getLogger("monitor.runner")


async def run_check(check: Check) -> CheckResult:
    """One run: `timeout` covers the whole check (DNS, connect, TLS, request, body).

    A hanging target costs exactly one timeout; a bug in a check (an exception) is reported as
    outcome `error`, never propagated to the scheduler. Every result leaves with the check's
    secrets masked (`masked`): from here a reason goes to the API, the logs and the pages.
    """
    timeout_s = check.config.timeout
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            return masked(check, await check.run())
    except TimeoutError:
        elapsed_ms = (time.perf_counter() - started) * 1000
        return CheckResult.failure(
            f"timeout after {format_duration(timeout_s)}", elapsed_ms, outcome="timeout"
        )
    except Exception as exc:  # a bug in a check or plugin, not a failing target
        elapsed_ms = (time.perf_counter() - started) * 1000
        # The message and traceback may quote what the check was given (a URL, a header).
        trace = redact("".join(traceback.format_exception(exc)), check.secrets)
        log.error("check raised\n%s", trace, extra={"check": check.name, "reason": type(exc).__name__})
        return masked(
            check,
            CheckResult.failure(f"internal error: {type(exc).__name__}: {exc}", elapsed_ms, outcome="error"),
        )


def masked(check: Check, result: CheckResult) -> CheckResult:
    """`result` with any secret of the check in its reason or sample names shown as `***`: a
    target may echo a secret (a JSON body quoting the Authorization header). A successful run
    (no reason) is returned as is, at no cost; so is a result with nothing to mask."""
    if result.reason is None:
        return result
    secrets = check.secrets
    if not secrets:
        return result
    reason = secrets.redact(result.reason)
    samples = result.samples
    if any(secrets.redact(name) != name for name in samples):
        samples = {secrets.redact(name): value for name, value in samples.items()}
    if reason is result.reason and samples is result.samples:
        return result
    return dataclasses.replace(result, reason=reason, samples=samples)
