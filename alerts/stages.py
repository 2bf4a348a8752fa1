"""The stages of an alert's notification decision, each a function of (alert, now, policy).

suppress -> route -> plan (repeat, escalation, business hours). The pipeline runs them in that
order and enqueues what the last one returns; none of them writes or sends anything. Storms have
their own: storm_begins / storm_over say when one starts and ends, plan_storm whom to tell.
"""

from __future__ import annotations

import bisect
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from alerts.config import StormConfig
from alerts.model import Alert, AlertState, Route, RouteProgress, Suppression
from alerts.notifiers.base import Event


class World(Protocol):
    """What the suppress stage asks of the rest of alerting at `now`."""

    def in_maintenance(self, check: str, now: float) -> bool: ...
    def silenced(self, check: str, now: float) -> bool: ...
    def up_breaching(self, check: str) -> bool: ...
    def depends_on(self, check: str) -> Sequence[str]: ...
    def blind(self, check: str) -> bool: ...  # every uplink check is down, and this is not one
    def storming(self, check: str) -> bool: ...  # a storm is on, and this is not an uplink check


def suppress(alert: Alert, now: float, world: World) -> Suppression | None:
    """Why the alert must not be notified now, if it must not. Blindness outranks a storm the
    alert was counted into: the uplink checks' page already says why everything fails."""
    if alert.flapping:
        return Suppression.FLAPPING
    if world.in_maintenance(alert.check, now):
        return Suppression.MAINTENANCE
    if world.silenced(alert.check, now):
        return Suppression.SILENCE
    if alert.sticky in (None, Suppression.STORM) and world.blind(alert.check):
        return Suppression.UPLINK
    if alert.sticky:
        return alert.sticky
    if any(world.up_breaching(dep) for dep in world.depends_on(alert.check)):
        return Suppression.DEPENDENCY
    if alert.metric != "up" and world.up_breaching(alert.check):
        return Suppression.DOWN
    if alert.notified_severity is None and world.storming(alert.check):  # notified before it: not affected
        return Suppression.STORM
    return None


def check_suppression(check: str, now: float, world: World) -> Suppression | None:
    """Why a check's alerts are not notified now (the API's `suppressed` of a check)."""
    if world.in_maintenance(check, now):
        return Suppression.MAINTENANCE
    if world.silenced(check, now):
        return Suppression.SILENCE
    if world.blind(check):
        return Suppression.UPLINK
    if any(world.up_breaching(dep) for dep in world.depends_on(check)):
        return Suppression.DEPENDENCY
    return None


# ---------------------------------------------------------------- storms


def storm_begins(starts: Sequence[float], now: float, guard: StormConfig | None) -> bool:
    """More than `guard.checks` `up` alerts begun (pending or firing) within `guard.window`.
    `starts`: their start times, oldest first (the pipeline keeps only those within the window)."""
    if guard is None:
        return False
    horizon = now - guard.window
    return len(starts) - bisect.bisect_right(starts, horizon) > guard.checks


def storm_over(members: int, guard: StormConfig | None) -> bool:
    """Fewer than `guard.checks` of the storm's checks still down (or the guard turned off)."""
    return guard is None or members < guard.checks


def storm_repeat(notifier: str, routes: Iterable[Route]) -> float | None:
    """How often a notifier is told again of a storm: the shortest `repeat` of the storm's
    routes that name it (None: told once)."""
    repeats = [r.config.repeat for r in routes if notifier in r.config.notify and r.config.repeat]
    return min(repeats, default=None)


def plan_storm(
    storm_routes: Iterable[Route], notified: dict[str, float], now: float
) -> tuple[list[str], list[str]]:
    """Who gets a storm notification now: (first time, repeats). Every notifier of a route a
    storm alert would have gone to is told once, then again after its route's `repeat`."""
    routes = list(storm_routes)
    first: list[str] = []
    again: list[str] = []
    for r in routes:
        for n in r.config.notify:
            if n in first or n in again:
                continue
            last = notified.get(n)
            if last is None:
                first.append(n)
                continue
            every = storm_repeat(n, routes)
            if every is not None and now - last >= every:
                again.append(n)
    return first, again


def route(alert: Alert, routes: Iterable[Route]) -> list[Route]:
    """The routes an alert goes to: in order, the first match wins unless it says continue."""
    matched = []
    for r in routes:
        m = r.config.match
        if m.severity is not None and m.severity != alert.severity:
            continue
        if m.check is not None and not fnmatch.fnmatchcase(alert.check, m.check):
            continue
        if any(alert.labels.get(k) != v for k, v in m.labels.items()):
            continue
        matched.append(r)
        if not r.config.continue_:
            break
    return matched


@dataclass(frozen=True, slots=True)
class Send:
    """One notification to send: `kind` says what it does to the route's progress."""

    route: str  # Route.key
    notifiers: tuple[str, ...]
    event: Event
    kind: str = "notify"  # notify | repeat | escalate | flapping | resolved | acknowledged
    note: str | None = None


@dataclass(slots=True)
class Plan:
    """What the plan stage decided for one alert."""

    sends: list[Send] = field(default_factory=list)
    hold: list[str] = field(default_factory=list)  # routes waiting for business hours
    release: list[str] = field(default_factory=list)  # routes no longer waiting
    announce: bool = False  # the alert's severity is now announced

    def __bool__(self) -> bool:
        return bool(self.sends or self.hold or self.release or self.announce)


def plan_firing(
    alert: Alert,
    routes: Sequence[Route],
    now: float,
    open_now: bool,
    queued: Callable[[str], bool],
) -> Plan:
    """Notify a new episode or severity, repeat, escalate; hold what business hours hold.

    `queued(notifier)`: a firing of this alert still waits there (a repeat is not piled onto it).
    """
    plan = Plan()
    new = alert.notified_severity != alert.severity  # a new episode, or a severity change
    for r in routes:
        cfg = r.config
        progress = alert.progress.get(r.key) or RouteProgress()
        closed = cfg.when == "business_hours" and not open_now
        due: tuple[str, ...] = ()
        kind = "notify"
        if new or progress.held:
            if closed:
                if not progress.held:
                    plan.hold.append(r.key)
                continue
            due = tuple(cfg.notify)
            if progress.held:
                plan.release.append(r.key)
        elif _repeat_due(alert, cfg.repeat, progress, now) and not closed:
            due, kind = tuple(cfg.notify), "repeat"
        if due and not new:  # a repeat or a release: not onto one still undelivered
            due = tuple(n for n in due if not queued(n))
        if due:
            plan.sends.append(Send(r.key, due, "firing", kind))
        first_at = progress.first_at if progress.first_at is not None else (now if due else None)
        if not alert.acknowledged and first_at is not None:
            for step in cfg.escalate[progress.escalated :]:
                if now - first_at < step.after:
                    break
                plan.sends.append(Send(r.key, tuple(step.notify), "firing", "escalate"))
    plan.announce = new
    return plan


def _repeat_due(alert: Alert, repeat: float | None, progress: RouteProgress, now: float) -> bool:
    if alert.acknowledged or not repeat or progress.last_at is None:
        return False
    return now - progress.last_at >= repeat


def plan_resolved(alert: Alert, routes_by_key: dict[str, Route]) -> Plan:
    """The resolve goes to whoever got the firing, unless their route says send_resolved = false
    (a route removed since is told anyway: its people were paged)."""
    if alert.resolve_sent or alert.state is not AlertState.RESOLVED:
        return Plan()
    plan = Plan()
    told: set[str] = set()
    for key, progress in alert.progress.items():
        r = routes_by_key.get(key)
        if r is not None and not r.config.send_resolved:
            continue
        due = tuple(n for n in progress.notifiers if n not in told)
        told.update(due)
        if due:
            plan.sends.append(Send(key, due, "resolved", "resolved"))
    return plan


def apply(alert: Alert, plan: Plan, now: float) -> None:
    """Record in the alert what its plan did to each route's progress."""
    for key in plan.hold:
        alert.progress.setdefault(key, RouteProgress()).held = True
    for key in plan.release:
        alert.progress.setdefault(key, RouteProgress()).held = False
    for send in plan.sends:
        progress = alert.progress.setdefault(send.route, RouteProgress())
        if send.kind in ("notify", "repeat"):
            progress.first_at = progress.first_at if progress.first_at is not None else now
            progress.last_at = now
        elif send.kind == "escalate":
            progress.escalated += 1
        if send.event == "firing":
            progress.notifiers += [n for n in send.notifiers if n not in progress.notifiers]
        elif send.event == "resolved":
            alert.resolve_sent = True
    if plan.announce:
        alert.notified_severity = alert.severity
