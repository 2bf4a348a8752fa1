"""Alert lifecycle (pending -> firing -> resolved), suppression, flapping, routing, acknowledgement."""

from __future__ import annotations

import asyncio
import fnmatch
import functools
import hashlib
import logging
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo

from alerts.config import AlertsConfig, BusinessHoursConfig, MaintenanceConfig, RouteConfig
from alerts.notifiers.base import Event, Notification
from alerts.outbox import Outbox
from alerts.windows import Silence, in_business_hours, in_maintenance
from monitor.clock import Clock
from monitor.models import RowEvaluation, RowState, format_duration
from monitor.store import AlertRecord, Store

log = logging.getLogger("alerts")
_TICK_SLICE = 500  # alerts settled between two yields to the loop: about 2.5 ms of work

PENDING, FIRING, RESOLVED = "pending", "firing", "resolved"


@functools.cache
def alert_id(check: str, metric: str) -> str:
    """Stable across restarts and config reloads: PagerDuty's dedup_key."""
    return hashlib.sha256(f"{check}\0{metric}".encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CheckInfo:
    """What alerting knows of a check (it never imports checks/)."""

    name: str
    type: str
    target: str
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str | None = None
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class AlertPolicy:
    """The alerting part of the config, as the daemon hands it over."""

    checks: Mapping[str, CheckInfo]  # in dependency order
    routes: list[RouteConfig]
    maintenance: list[MaintenanceConfig]
    business_hours: BusinessHoursConfig
    timezone: ZoneInfo
    alerts: AlertsConfig

    @functools.cached_property
    def _dependents(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for c in self.checks.values():
            for dep in c.depends_on:
                found.setdefault(dep, []).append(c.name)
        return found

    def dependents(self, check: str) -> list[str]:
        return self._dependents.get(check, [])


@dataclass(slots=True)
class RouteProgress:
    """How far one route has got with one alert episode."""

    first_at: float | None = None  # first delivery (escalation counts from here)
    last_at: float | None = None  # last delivery (repeat counts from here)
    escalated: int = 0  # escalation steps done
    held: bool = False  # waiting for business hours
    notifiers: list[str] = field(default_factory=list)  # who got the firing


@dataclass(slots=True)
class Alert:
    id: str
    check: str
    metric: str
    check_type: str
    target: str
    state: str
    severity: str
    value: float | None
    threshold: float | None
    direction: str
    started_at: float
    resolved_at: float | None = None
    reason: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str | None = None
    acknowledged: bool = False
    acknowledged_by: str | None = None
    ack_comment: str | None = None
    sticky: str | None = None  # "down" / "dependency": decided when the breach began
    suppressed: str | None = None  # why it is not notified now
    notified_severity: str | None = None  # the severity last announced as firing
    progress: dict[str, RouteProgress] = field(default_factory=dict)  # by route index
    flapping: bool = False
    resolve_sent: bool = False

    @property
    def key(self) -> str:
        return f"{self.id}:{self.started_at:.3f}"

    def to_doc(self) -> dict[str, Any]:
        """The alert as stored: plain JSON values, nothing shared with the live alert.

        Written out by hand: dataclasses.asdict deep-copies value by value, 0.15 ms an alert,
        a third of the CPU of a mass outage's first minute."""
        doc = {name: getattr(self, name) for name in _ALERT_FIELDS}
        doc["labels"] = dict(self.labels)
        doc["progress"] = {
            index: {**{name: getattr(p, name) for name in _PROGRESS_FIELDS}, "notifiers": list(p.notifiers)}
            for index, p in self.progress.items()
        }
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        doc = dict(doc)
        doc["progress"] = {k: RouteProgress(**v) for k, v in doc.get("progress", {}).items()}
        return cls(**doc)

    def notification(self, event: Event, now: float, note: str | None = None) -> Notification:
        return Notification(
            event=event,
            alert_id=self.id,
            check=self.check,
            check_type=self.check_type,
            target=self.target,
            metric=self.metric,
            severity="critical" if self.severity == "critical" else "warning",
            value=self.value,
            threshold=self.threshold,
            direction="below" if self.direction == "below" else "above",
            started_at=self.started_at,
            created_at=now,
            resolved_at=self.resolved_at,
            reason=self.reason,
            labels=dict(self.labels),
            runbook=self.runbook,
            acknowledged_by=self.acknowledged_by,
            note=note,
        )


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))
_PROGRESS_FIELDS = tuple(f.name for f in fields(RouteProgress))


class AlertManager:
    """Turns row states into alerts and alerts into outbox entries, exactly once per event."""

    def __init__(
        self,
        policy: AlertPolicy,
        store: Store,
        outbox: Outbox,
        clock: Clock,
    ) -> None:
        self.policy = policy
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.active: dict[str, Alert] = {}  # pending and firing, by id
        self._by_check: dict[str, set[str]] = {}  # check -> ids of its active alerts
        self.silences: dict[str, Silence] = {}
        self._last_seen: dict[str, float] = {}  # check -> time of its latest evaluation
        self._changes: dict[str, list[float]] = {}  # alert id -> recent state change times
        self._flapping: set[str] = set()  # alert ids flapping now (one notice each)
        self._outgoing: list[tuple[str, Notification]] = []  # decided, stored with the next _save

    # ------------------------------------------------------------ state

    async def load(self) -> None:
        """Continue where the previous process stopped: active alerts, acks, silences."""
        for doc in await self.store.load_alerts(active=True):
            alert = Alert.from_doc(doc)
            self._track(alert)
        from monitor.models import iso  # the API's rendering: a silence it cannot show is not loaded

        for doc in await self.store.load_silences():
            # Rows written before the API checked its input (or by hand) are skipped, not fatal:
            # one would otherwise stop the daemon from starting, or break every GET of the silences.
            sid = doc.get("id") if isinstance(doc, dict) else None
            try:
                if not isinstance(doc, dict):
                    raise TypeError("not a JSON object")
                checks = doc.get("checks")
                if not isinstance(checks, list) or not all(isinstance(g, str) for g in checks):
                    raise TypeError("checks: not a list of check name globs")
                silence = Silence(**{**doc, "checks": tuple(checks)})  # TypeError: a missing or unknown key
                if not isinstance(silence.id, str) or not isinstance(silence.comment, str):
                    raise TypeError("id and comment must be strings")
                if not isinstance(silence.created_by, str | None):
                    raise TypeError("created_by: not a string")
                for name, value in (("start", silence.start), ("end", silence.end)):
                    if isinstance(value, bool) or not isinstance(value, int | float):
                        raise TypeError(f"{name}: not a number")
                    iso(value)  # ValueError or OverflowError: NaN, infinite, outside years 1..9999
            except (TypeError, ValueError, OverflowError, OSError) as exc:
                log.warning("stored silence skipped", extra={"reason": f"silence {sid!r}: {exc}"})
                continue
            self.silences[silence.id] = silence

    def _track(self, alert: Alert) -> None:
        self.active[alert.id] = alert
        self._by_check.setdefault(alert.check, set()).add(alert.id)

    def _untrack(self, alert: Alert) -> None:
        self.active.pop(alert.id, None)
        ids = self._by_check.get(alert.check)
        if ids is not None:
            ids.discard(alert.id)
            if not ids:
                del self._by_check[alert.check]

    def alerts_of(self, check: str) -> list[Alert]:
        return [self.active[i] for i in self._by_check.get(check, ())]

    def row_states(self) -> dict[tuple[str, str], Alert]:
        """Active alerts by (check, metric), to seed evaluation after a restart."""
        return {(a.check, a.metric): a for a in self.active.values()}

    def firing_counts(self) -> dict[str, int]:
        counts = {"warning": 0, "critical": 0}
        for alert in self.active.values():
            if alert.state == FIRING:
                counts[alert.severity] += 1
        return counts

    async def _save(self, alert: Alert, active: bool = True) -> None:
        """Persist the alert together with the notifications decided since its last save."""
        outgoing, self._outgoing = self._outgoing, []
        record = AlertRecord(alert.key, alert.id, active, self.clock.now(), alert.to_doc())
        await self.outbox.commit(record, outgoing)

    # ------------------------------------------------------------ input

    def seen(self, check: str, now: float) -> None:
        """A clean evaluation of a check with no alert anywhere: only its time matters."""
        self._last_seen[check] = now

    async def observe(self, check: str, rows: list[RowEvaluation], reason: str | None, now: float) -> None:
        """One evaluation of one check: every row that applied to this run."""
        self._last_seen[check] = now
        info = self.policy.checks.get(check)
        if info is None:
            return
        touched = False
        for row in rows:
            touched |= await self._observe_row(info, row, reason, now)
        if touched:  # this check's alerts, and the suppression of its dependents', may change
            for name in (check, *self.policy.dependents(check)):
                for alert in self.alerts_of(name):
                    await self._settle(alert, now)

    async def _observe_row(self, info: CheckInfo, row: RowEvaluation, reason: str | None, now: float) -> bool:
        aid = alert_id(info.name, row.metric)
        alert = self.active.get(aid)
        breaching = row.state is not RowState.OK
        if alert is None and not breaching:
            return False
        if alert is None:
            alert = Alert(
                id=aid,
                check=info.name,
                metric=row.metric,
                check_type=info.type,
                target=info.target,
                state=PENDING,
                severity=row.level.name.lower() if row.level else "warning",
                value=row.value,
                threshold=row.threshold,
                direction=row.direction,
                started_at=row.since if row.since is not None else now,
                reason=reason,
                labels=dict(info.labels),
                runbook=info.runbook,
            )
            alert.sticky = self._outage_reason(info, row.metric)
            alert.flapping = aid in self._flapping
            self._track(alert)
            self._count_change(aid, now)
        alert.value, alert.reason = row.value, reason
        before = (alert.state, alert.severity)
        if row.state in (RowState.WARNING, RowState.CRITICAL):
            alert.state = FIRING
            alert.severity = row.state.value
            alert.threshold = row.threshold
        elif row.state is RowState.PENDING:
            if alert.state != FIRING:  # a firing alert seen pending again (restart): still firing
                alert.state = PENDING
                alert.severity = row.level.name.lower()
                alert.threshold = row.threshold
        elif alert.state == PENDING:
            self._untrack(alert)  # never fired: nothing to tell anyone
            self._count_change(aid, now)
            return True
        else:
            alert.state, alert.resolved_at = RESOLVED, now
        if (alert.state, alert.severity) != before:
            self._count_change(aid, now)
            if alert.state == FIRING and before[0] != FIRING:
                log.warning("alert firing", extra={"alert": aid, "check": info.name, "reason": reason})
            if alert.state != PENDING:  # kept active until its resolve is in the outbox
                await self._save(alert)
        return True

    def _outage_reason(self, info: CheckInfo, metric: str) -> str | None:
        """One outage, one page: a breach that begins while the check or a dependency is down
        belongs to that outage."""
        for dep in info.depends_on:
            if self._up_breaching(dep):
                return "dependency"
        if metric != "up" and self._up_breaching(info.name):
            return "down"
        return None

    def _up_breaching(self, check: str) -> bool:
        up = self.active.get(alert_id(check, "up"))
        return up is not None and up.state in (PENDING, FIRING)

    # ------------------------------------------------------------ flapping

    def _count_change(self, aid: str, now: float) -> None:
        changes = self._changes.setdefault(aid, [])
        changes.append(now)
        self._trim_changes(aid, now)

    def _trim_changes(self, aid: str, now: float) -> int:
        horizon = now - self.policy.alerts.flapping.window
        changes = [t for t in self._changes.get(aid, []) if t > horizon]
        self._changes[aid] = changes
        return len(changes)

    # ------------------------------------------------------------ time

    async def tick(self, now: float) -> None:
        """Time-driven work: repeats, escalation, business hours opening, windows ending.

        In a mass outage this is a lot of work (40,000 alerts: 0.2 s of CPU): the loop is given
        back every _TICK_SLICE alerts so that the checks' schedule is not held up by it.
        """
        order = {name: i for i, name in enumerate(self.policy.checks)}
        for done, alert in enumerate(sorted(self.active.values(), key=lambda a: order.get(a.check, 0))):
            if done and done % _TICK_SLICE == 0:
                await asyncio.sleep(0)
            if self.active.get(alert.id) is alert:  # else resolved while the tick gave way
                await self._settle(alert, now)
        for silence in [s for s in self.silences.values() if s.end <= now]:
            del self.silences[silence.id]
            await self.store.delete_silence(silence.id)

    # ------------------------------------------------------------ deciding

    def _suppression(self, alert: Alert, now: float) -> str | None:
        if alert.flapping:
            return "flapping"
        if in_maintenance(alert.check, self.policy.maintenance, now, self.policy.timezone):
            return "maintenance"
        if any(s.covers(alert.check, now) for s in self.silences.values()):
            return "silence"
        if alert.sticky:
            return alert.sticky
        info = self.policy.checks.get(alert.check)
        if info is not None and any(self._up_breaching(dep) for dep in info.depends_on):
            return "dependency"
        if alert.metric != "up" and self._up_breaching(alert.check):
            return "down"
        return None

    def check_suppression(self, check: str, now: float) -> str | None:
        """Why a check's alerts would not be notified now (the API's `suppressed` of a check)."""
        if in_maintenance(check, self.policy.maintenance, now, self.policy.timezone):
            return "maintenance"
        if any(s.covers(check, now) for s in self.silences.values()):
            return "silence"
        info = self.policy.checks.get(check)
        if info is not None and any(self._up_breaching(dep) for dep in info.depends_on):
            return "dependency"
        return None

    def _awaiting_dependencies(self, alert: Alert) -> bool:
        """A check's page waits until each dependency has been evaluated since the breach began:
        if the database is the cause, its own alert must win the race."""
        info = self.policy.checks.get(alert.check)
        if info is None:
            return False
        return any(self._last_seen.get(dep, -1.0) < alert.started_at for dep in info.depends_on)

    def _routes(self, alert: Alert) -> list[tuple[str, RouteConfig]]:
        matched = []
        for i, route in enumerate(self.policy.routes):
            m = route.match
            if m.severity is not None and m.severity != alert.severity:
                continue
            if m.check is not None and not fnmatch.fnmatchcase(alert.check, m.check):
                continue
            if any(alert.labels.get(k) != v for k, v in m.labels.items()):
                continue
            matched.append((str(i), route))
            if not route.continue_:
                break
        return matched

    async def _settle(self, alert: Alert, now: float) -> None:
        changed = False
        flapping = self._trim_changes(alert.id, now) > self.policy.alerts.flapping.changes
        if flapping != alert.flapping:
            alert.flapping, changed = flapping, True
        if flapping and alert.id not in self._flapping:
            self._flapping.add(alert.id)
            policy = self.policy.alerts.flapping
            note = f"more than {policy.changes} state changes in {format_duration(policy.window)}"
            self._send(alert, self._routes(alert), "flapping", now, note=note)
            log.warning("alert flapping", extra={"alert": alert.id, "check": alert.check})
        elif not flapping:
            self._flapping.discard(alert.id)
        suppressed = self._suppression(alert, now)
        if suppressed in ("dependency", "down") and alert.notified_severity is None:
            alert.sticky = suppressed  # never announced, born in an outage: it belongs to that outage
        if suppressed != alert.suppressed:
            alert.suppressed, changed = suppressed, True

        if alert.state == FIRING and suppressed is None and not self._awaiting_dependencies(alert):
            changed |= await self._notify_firing(alert, now)
        elif alert.state == RESOLVED:
            self._notify_resolved(alert, now)
            self._untrack(alert)
            await self._save(alert, active=False)
            return
        if (changed and alert.state != PENDING) or self._outgoing:
            await self._save(alert)

    async def _notify_firing(self, alert: Alert, now: float) -> bool:
        open_now = in_business_hours(self.policy.business_hours, now, self.policy.timezone)
        routes = self._routes(alert)
        new = alert.notified_severity != alert.severity  # a new episode, or a severity change
        changed = False
        for key, route in routes:
            progress = alert.progress.setdefault(key, RouteProgress())
            closed = route.when == "business_hours" and not open_now
            due: list[str] = []
            if new or progress.held:
                if closed:
                    progress.held, changed = True, True
                    continue
                due = list(route.notify)
                progress.held = False
            elif self._repeat_due(alert, route, progress, now) and not closed:
                due = list(route.notify)
            if due and not new:  # a repeat or a release: not onto one still undelivered
                due = [n for n in due if not self.outbox.queued(n, alert.id, "firing")]
            if due:
                self._send(alert, [(key, route)], "firing", now, only=due)
                progress.first_at = progress.first_at if progress.first_at is not None else now
                progress.last_at = now
                changed = True
            if not alert.acknowledged and progress.first_at is not None:
                for step in route.escalate[progress.escalated :]:
                    if now - progress.first_at < step.after:
                        break
                    self._send(alert, [(key, route)], "firing", now, only=list(step.notify))
                    progress.escalated += 1
                    changed = True
        if new:
            alert.notified_severity = alert.severity
            changed = True
        return changed

    @staticmethod
    def _repeat_due(alert: Alert, route: RouteConfig, progress: RouteProgress, now: float) -> bool:
        if alert.acknowledged or not route.repeat or progress.last_at is None:
            return False
        return now - progress.last_at >= route.repeat

    def _notify_resolved(self, alert: Alert, now: float) -> None:
        if alert.resolve_sent:
            return
        targets: list[str] = []
        for key, progress in alert.progress.items():
            route = self._route(key)
            if route is None or route.send_resolved:
                targets += [n for n in progress.notifiers if n not in targets]
        alert.resolve_sent = True
        self._outgoing += [(name, alert.notification("resolved", now)) for name in targets]
        if targets:
            log.info("alert resolved", extra={"alert": alert.id, "check": alert.check})

    def _route(self, key: str) -> RouteConfig | None:
        i = int(key)
        return self.policy.routes[i] if i < len(self.policy.routes) else None

    def _send(
        self,
        alert: Alert,
        routes: list[tuple[str, RouteConfig]],
        event: Event,
        now: float,
        only: list[str] | None = None,
        note: str | None = None,
    ) -> None:
        sent: set[str] = set()
        for key, route in routes:
            progress = alert.progress.setdefault(key, RouteProgress())
            for name in only if only is not None else route.notify:
                if name in sent or name not in self.outbox.notifiers:
                    continue
                sent.add(name)
                self._outgoing.append((name, alert.notification(event, now, note)))
                if event == "firing" and name not in progress.notifiers:
                    progress.notifiers.append(name)

    # ------------------------------------------------------------ API actions

    async def acknowledge(self, aid: str, by: str | None, comment: str | None) -> Alert | None:
        """Stops repeats and escalation; the notifiers that were paged are told."""
        alert = self.active.get(aid)
        if alert is None:
            return None
        if alert.acknowledged:
            return alert
        now = self.clock.now()
        alert.acknowledged, alert.acknowledged_by, alert.ack_comment = True, by, comment
        notified = {n for p in alert.progress.values() for n in p.notifiers}
        self._outgoing += [
            (name, alert.notification("acknowledged", now, comment)) for name in sorted(notified)
        ]
        await self._save(alert)
        log.info("alert acknowledged", extra={"alert": aid, "check": alert.check})
        return alert

    async def add_silence(self, checks: list[str], start: float, end: float, comment: str) -> Silence:
        silence = Silence(secrets.token_hex(8), tuple(checks), start, end, comment)
        await self.store.save_silence(silence.id, asdict(silence))  # first: a failed write adds nothing
        self.silences[silence.id] = silence
        return silence

    async def delete_silence(self, silence_id: str) -> bool:
        if silence_id not in self.silences:
            return False
        await self.store.delete_silence(silence_id)  # first: a failed write leaves the silence on
        self.silences.pop(silence_id, None)
        await self.tick(self.clock.now())  # alerts it held are notified now if still firing
        return True

    async def history(self, since: float) -> list[Alert]:
        return [Alert.from_doc(d) for d in await self.store.load_alerts(active=False, since=since)]
