"""Detection latency: a loopback PagerDuty receiver, and trials that switch a target to 503."""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.config import detection_check

ROUTING_KEY = "bench-routing-key"
_POLL_S = 0.025  # API polling period: the alert-critical time is known to about ±13 ms
_FIRST_PAGE_WAIT_S = 5.0  # how long the first trial waits for a page before assuming none will come
_LATER_PAGE_WAIT_S = 1.0
_FINAL_PAGE_WAIT_S = 3.0
_PAYLOAD_KEYS = (
    "summary",
    "source",
    "severity",
    "timestamp",
    "component",
    "group",
    "class",
    "custom_details",
)


@dataclass(slots=True)
class Page:
    at: float  # time.monotonic() when the POST arrived
    action: str
    check: str | None


@dataclass(slots=True)
class PagerDutyReceiver:
    """Answers POST /v2/enqueue like PagerDuty's Events API v2 (202), and checks the payload."""

    pages: list[Page] = field(default_factory=list)
    problems: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on every page, cleared by waiters
    _runner: web.AppRunner | None = None

    async def start(self) -> int:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _enqueue(self, request: web.Request) -> web.Response:
        at = time.monotonic()
        try:
            event = await request.json()
        except ValueError:
            self.problems.add("body is not JSON")
            return web.json_response(
                {"status": "invalid event", "message": "Event object is invalid"}, status=400
            )
        if not isinstance(event, dict):
            self.problems.add("body is not a JSON object")
            return web.json_response({"status": "invalid event"}, status=400)
        self._validate(event)
        payload = event.get("payload") if isinstance(event.get("payload"), dict) else {}
        details = payload.get("custom_details") if isinstance(payload.get("custom_details"), dict) else {}
        check = payload.get("component") or details.get("check")
        self.pages.append(Page(at, str(event.get("event_action")), check if isinstance(check, str) else None))
        self.arrived.set()
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": event.get("dedup_key")},
            status=202,
        )

    def _validate(self, event: dict[str, Any]) -> None:
        """SPEC section 5's PagerDuty payload; problems are reported, the event is still accepted."""
        if event.get("routing_key") != ROUTING_KEY:
            self.problems.add("routing_key is not the configured one")
        if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
            self.problems.add(f"event_action {event.get('event_action')!r}")
        if not isinstance(event.get("dedup_key"), str) or not event.get("dedup_key"):
            self.problems.add("dedup_key missing")
        payload = event.get("payload")
        if event.get("event_action") == "trigger":
            if not isinstance(payload, dict):
                self.problems.add("payload missing")
                return
            for key in _PAYLOAD_KEYS:
                if key not in payload:
                    self.problems.add(f"payload.{key} missing")
            if payload.get("severity") not in (None, "critical", "warning", "error", "info"):
                self.problems.add(f"payload.severity {payload.get('severity')!r}")

    def first_trigger(self, check: str, since: float) -> float | None:
        """When the first trigger for `check` after `since` arrived (any trigger if none names a check)."""
        for page in self.pages:
            if page.at >= since and page.action == "trigger" and page.check in (check, None):
                return page.at
        return None


def _stats(values: list[float | None]) -> dict[str, Any] | None:
    seen = [v for v in values if v is not None]
    if not seen:
        return None
    return {
        "median": round(statistics.median(seen), 3),
        "max": round(max(seen), 3),
        "min": round(min(seen), 3),
        "values": [None if v is None else round(v, 3) for v in values],
        "missed": len(values) - len(seen),
    }


async def _states(session: aiohttp.ClientSession, api_url: str) -> dict[str, dict[str, Any]]:
    async with session.get(api_url, timeout=aiohttp.ClientTimeout(total=5)) as response:
        view = await response.json()
    return {c["name"]: c for c in view["checks"]}


async def _wait_all_ok(
    session: aiohttp.ClientSession, api_url: str, names: list[str], timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
            checks = await _states(session, api_url)
            if all(checks.get(n, {}).get("states", {}).get("up") == "ok" for n in names):
                return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the detection checks were not all up within {timeout_s:g}s")


async def run_trials(
    session: aiohttp.ClientSession,
    api_url: str,
    receiver: PagerDutyReceiver,
    flipdir: Path,
    trials: int,
    interval_s: float,
    trigger_after: int,
    rng: random.Random,
) -> dict[str, Any]:
    """Per trial: wait a random part of the interval, switch check N's target to 503, then time
    how long until its `up` alert is critical in the API and until the receiver gets the trigger."""
    names = [detection_check(i) for i in range(trials)]
    await _wait_all_ok(session, api_url, names, 10 * interval_s + 10)
    critical: list[float | None] = []
    switched: list[float] = []
    limit_s = interval_s * (trigger_after + 2) + 10
    for i, name in enumerate(names):
        await asyncio.sleep(rng.uniform(0, interval_s))
        down = flipdir / f"down-{i}"
        t0 = time.monotonic()
        down.touch()
        switched.append(t0)
        seen: float | None = None
        while seen is None and time.monotonic() - t0 < limit_s:
            asked = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                state = (await _states(session, api_url)).get(name, {}).get("states", {}).get("up")
                if state == "critical":
                    seen = (asked + time.monotonic()) / 2 - t0
                    break
            await asyncio.sleep(_POLL_S)
        critical.append(seen)
        # Give the page time to arrive: the first trial long enough to tell "none comes" from "slow".
        wait_s = _FIRST_PAGE_WAIT_S if i == 0 or receiver.pages else _LATER_PAGE_WAIT_S
        deadline = time.monotonic() + wait_s
        while receiver.first_trigger(name, t0) is None and (left := deadline - time.monotonic()) > 0:
            receiver.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(receiver.arrived.wait(), left)
        down.unlink(missing_ok=True)
    if receiver.pages:
        await asyncio.sleep(_FINAL_PAGE_WAIT_S)  # a late page still counts for its trial
    paged: list[float | None] = []
    for name, t0 in zip(names, switched, strict=True):
        at = receiver.first_trigger(name, t0)
        paged.append(None if at is None else at - t0)
    alert = _stats(critical)
    page = _stats(paged)
    page_reason = None
    if page is None:
        page_reason = (
            f"no PagerDuty trigger reached the loopback receiver in {trials} trials "
            f"({len(receiver.pages)} events in all): alert notification not implemented or not routed"
        )
    return {
        "trials": trials,
        "interval_s": interval_s,
        "trigger_after": trigger_after,
        "target_median_s": interval_s * trigger_after + 1,
        "alert_critical_s": alert,
        "alert_critical_reason": None if alert else "the alert never turned critical in the API",
        "pagerduty_trigger_s": page,
        "pagerduty_reason": page_reason,
        "pagerduty_events": len(receiver.pages),
        "pagerduty_payload_problems": sorted(receiver.problems),
    }
