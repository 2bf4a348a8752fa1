"""AlertPipeline: the one owner of an alert's life. Evaluation hands it (check, rows) events; it
counts them into alerts (lifecycle), decides (stages) and writes state and notifications together.
It owns the storm too (SPEC section 12): one notification per notifier for many checks down."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from alerts import lifecycle, stages
from alerts.lifecycle import Transition
from alerts.model import (
    STICKY,
    STORM_KIND,
    Alert,
    AlertPolicy,
    AlertState,
    CheckInfo,
    Route,
    Storm,
    Suppression,
    alert_id,
)
from alerts.notifiers.base import Notification
from alerts.outbox import Outbox
from alerts.windows import BusinessHours, MaintenanceWindows, Silence
from monitor.clock import Clock
from monitor.models import Level, RowEvaluation, format_duration
from monitor.store import AlertRecord, Conflict, Store, StoreError

log = logging.getLogger("alerts")
_TICK_SLICE = 500  # alerts decided between two yields to the loop


@dataclass(frozen=True, slots=True)
class Foreign:
    """A dependency that another shard runs, as its leader published it (SPEC section 9)."""

    breaching: bool
    evaluated_at: float  # -inf: never published
    bound_s: float  # 2 x its interval + failover: an older state is unknown (fail open)


class AlertPipeline:
    """Alert state, and every decision about it, in one place."""

    def __init__(self, policy: AlertPolicy, store: Store, outbox: Outbox, clock: Clock) -> None:
        self.store = store
        self.outbox = outbox
        self.clock = clock
        self.active: dict[str, Alert] = {}  # pending and firing, by id
        self.silences: dict[str, Silence] = {}
        self._by_check: dict[str, dict[str, Alert]] = {}  # check -> its active alerts by metric
        self._infos: dict[str, CheckInfo] = {}  # what alerting knows of the checks with alerts
        self._last_seen: dict[str, float] = {}  # check -> time of its latest evaluation
        self._changes: dict[str, list[float]] = {}  # alert id -> recent state change times
        self._flapping: set[str] = set()  # alert ids flapping now (one notice each)
        self._unsaved: set[str] = set()  # alert ids whose state changed since they were stored
        self._deciding: set[str] = set()  # alert ids whose decision is being stored
        self.storm: Storm | None = None
        self._up_starts: deque[float] = deque()  # start times of recent `up` alerts, oldest first
        self._storm_routes: dict[str, Route] = {}  # routes the storm's firing alerts would go to
        self._storm_fired: set[str] = set()  # alert ids whose routes joined _storm_routes
        self._storm_writing = False  # a storm notification is being stored
        self._followed: dict[str, int] = {}  # the version of each active row as last read (follow)
        self.foreign: dict[str, Foreign] = {}  # dependencies run by other shards, set each tick
        # Called when an alert first pages while a dependency on another shard is unknown (stale).
        self.on_dependency_stale: Callable[[], None] = lambda: None
        self.policy = policy

    @property
    def policy(self) -> AlertPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: AlertPolicy) -> None:
        self._policy = policy
        self._maintenance = MaintenanceWindows(policy.maintenance, policy.timezone)
        self._hours = BusinessHours(policy.business_hours, policy.timezone)
        self._uplink = frozenset(policy.uplink)
        self._infos = {}
        if policy.checks:  # (empty while the daemon is built: then `load` does it)
            policy.dependents("")  # found now, not in the middle of the first outage's runs
        # A reload may change the routes: the storm's are looked up again by key.
        self._storm_routes = {
            k: policy.routes_by_key[k] for k in self._storm_routes if k in policy.routes_by_key
        }

    # ------------------------------------------------------------ state

    async def load(self) -> None:
        """Continue where the previous process stopped: active alerts with their counts, acks,
        silences. A document that cannot be read is skipped, not allowed to stop the start.
        What was in memory is replaced (an HA replica that takes over loads again)."""
        versions, docs = await self.store.load_alerts_changed({})
        silences = await self.store.load_silences()
        self._reset()
        self.policy.dependents("")  # the checks are all known by now: see `policy`
        self._take_alerts(docs)
        self._followed = versions
        self._take_silences(silences)

    async def follow(self) -> None:
        """An HA follower's read of the leader's alerts and silences, every second: the episodes
        changed since the last read are read again, those no longer active dropped, and the rest
        not decoded at all (at 20,000 alerts: 40 ms a read, 1.7 s when each was; bench/follow.py)."""
        versions, docs = await self.store.load_alerts_changed(self._followed)
        silences = await self.store.load_silences()
        for key in self._followed.keys() - versions.keys():  # resolved (or gone) since
            if self.storm is not None and self.storm.key == key:
                self.storm = None
            elif (live := self.active.get(key.rpartition(":")[0])) is not None and live.key == key:
                self._untrack(live)
        self._take_alerts(docs)
        self._followed = versions
        self._take_silences(silences)

    def _take_alerts(self, docs: list[dict[str, Any]]) -> None:
        """Alert and storm documents as stored, each replacing what is in memory of its episode."""
        storms, alerts = [], []
        for doc in docs:
            try:
                if doc.get("kind") == STORM_KIND:
                    storms.append(Storm.from_doc(doc))
                else:
                    alerts.append(Alert.from_doc(doc))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("stored alert unreadable, skipped", extra={"reason": str(exc)})
        for alert in alerts:
            if (live := self.active.get(alert.id)) is not None:
                self._untrack(live)
            self._track(alert)
        if storms:  # the storm in progress: its members are the alerts it swallowed
            self.storm = max(storms, key=lambda s: s.started_at)
            alerts = list(self.active.values())
        for alert in alerts:
            self._storm_track(alert)

    async def refresh(self, key: str) -> None:
        """One alert episode (or storm) read again from the store, after a Conflict: what is stored
        replaces what this process decided, and an episode ended elsewhere is dropped here."""
        found = await self.store.load_alert(key)
        live = next((a for a in self.active.values() if a.key == key), None)
        if self.storm is not None and self.storm.key == key:
            self.storm = Storm.from_doc(found[1]) if found is not None and found[0] else None
        elif live is not None:
            self._untrack(live)
            if found is not None and found[0]:
                self._track(Alert.from_doc(found[1]))

    async def refresh_silences(self) -> None:
        """An HA leader's, every tick: silences posted to a follower are in the store."""
        self._take_silences(await self.store.load_silences())

    def _take_silences(self, docs: list[dict[str, Any]]) -> None:
        self.silences = {}
        for doc in docs:
            try:
                silence = Silence.from_doc(doc)
            except (TypeError, ValueError) as exc:
                sid = doc.get("id") if isinstance(doc, dict) else None
                log.warning("stored silence skipped", extra={"silence": sid, "reason": str(exc)})
                continue
            self.silences[silence.id] = silence

    def _reset(self) -> None:
        self.active.clear()
        self._by_check.clear()
        self._changes.clear()
        self._flapping.clear()
        self._unsaved.clear()
        self.storm = None
        self._up_starts.clear()
        self._storm_routes.clear()
        self._storm_fired.clear()

    def _track(self, alert: Alert) -> None:
        self.active[alert.id] = alert
        self._by_check.setdefault(alert.check, {})[alert.metric] = alert

    def _untrack(self, alert: Alert) -> None:
        self.active.pop(alert.id, None)
        self._storm_fired.discard(alert.id)
        if self.storm is not None and alert.metric == "up":
            self.storm.members.pop(alert.check, None)
        mine = self._by_check.get(alert.check)
        if mine is not None:
            mine.pop(alert.metric, None)
            if not mine:
                del self._by_check[alert.check]
                self._infos.pop(alert.check, None)

    def alerts_of(self, check: str) -> list[Alert]:
        return list(self._by_check.get(check, {}).values())

    def row_states(self, check: str) -> dict[str, str]:
        """`states` of the API for the rows with an alert: pending, warning or critical."""
        return {
            metric: "pending" if a.state is AlertState.PENDING else a.severity
            for metric, a in self._by_check.get(check, {}).items()
        }

    def levels(self, check: str) -> dict[str, int]:
        """monitor_alert_state for the rows with an alert."""
        return {metric: a.level for metric, a in self._by_check.get(check, {}).items()}

    def worst(self, check: str) -> Level:
        return Level(max((a.level for a in self._by_check.get(check, {}).values()), default=0))

    def suppressed_counts(self) -> dict[str, int]:
        """monitor_alerts_suppressed: active alerts by why they are not notified."""
        counts = dict.fromkeys(Suppression, 0)
        for alert in self.active.values():
            if alert.suppressed is not None:
                counts[alert.suppressed] += 1
        return {str(k): v for k, v in counts.items()}

    def counts(self, metric: str | None = None) -> dict[str, int]:
        """`GET /api/v1/alerts?count=true`: the active alerts (of one metric), pending and firing
        by severity; a storm's thousands are counted without a view of each."""
        counts = {"count": 0, "pending": 0, "warning": 0, "critical": 0}
        for alert in self.active.values():
            if metric is not None and alert.metric != metric:
                continue
            counts["count"] += 1
            if alert.state is AlertState.PENDING:
                counts["pending"] += 1
            elif alert.state is AlertState.FIRING:
                counts[alert.severity] += 1
        return counts

    def firing_counts(self) -> dict[str, int]:
        counts = {"warning": 0, "critical": 0}
        for alert in self.active.values():
            if alert.state is AlertState.FIRING:
                counts[alert.severity] += 1
        return counts

    # ------------------------------------------------------------ events

    async def evaluated(
        self,
        check: str,
        breaching: bool,
        rows: Callable[[], Sequence[RowEvaluation]],
        reason: str | None,
        now: float,
    ) -> None:
        """A check was evaluated; `rows` gives its rows when alerting needs to look at them."""
        if breaching or check in self._by_check:
            await self.observe(check, rows(), reason, now)
        else:  # the common case, all clear: only the time of this evaluation matters
            self._last_seen[check] = now

    async def observe(
        self, check: str, rows: Sequence[RowEvaluation], reason: str | None, now: float
    ) -> None:
        """One evaluation of one check: every row that applied to its latest run."""
        self._last_seen[check] = now
        info = self._infos.get(check)
        if info is None:
            info = self.policy.checks.get(check)
            if info is None:
                return
        touched = False
        for row in rows:
            touched |= await self._count(info, row, reason, now)
        if check in self._by_check:  # kept while it has alerts: made anew on every run else
            self._infos.setdefault(check, info)
        if touched:  # this check's alerts, and the suppression of its dependents', may change
            self._storm_detect(now)
            for name in (check, *self.policy.dependents(check)):
                for alert in self.alerts_of(name):
                    await self._decide(alert, now)
            if self._storm_news():
                await self._storm_notify(now)

    async def _count(self, info: CheckInfo, row: RowEvaluation, reason: str | None, now: float) -> bool:
        alert = self._by_check.get(info.name, {}).get(row.metric)
        if alert is None:
            if row.level is Level.OK:
                return False
            alert = lifecycle.open_alert(info, row, reason, now)
            alert.sticky = self._outage(info, row.metric)
            alert.flapping = alert.id in self._flapping
            self._track(alert)
            if row.metric == "up" and alert.sticky is None and info.name not in self._uplink:
                self._up_starts.append(now)  # what the storm guard counts
        transition = lifecycle.count(alert, row, reason, now)
        if transition is Transition.NONE:
            return alert.state is AlertState.FIRING  # a value to pass on; repeats are the tick's
        self._count_change(alert.id, now)
        if transition is Transition.DROPPED:
            self._untrack(alert)  # never fired: nothing to tell anyone
            self._unsaved.discard(alert.id)
            return True
        self._unsaved.add(alert.id)
        if transition is Transition.RESOLVED:
            return True
        elif (
            alert.state is AlertState.FIRING
            and transition in (Transition.FIRED, Transition.OPENED)
            and not self.storming(info.name)  # the storm's lines say it once for all of them
        ):
            log.warning("alert firing", extra={"alert": alert.id, "check": info.name, "reason": reason})
        return True

    def _outage(self, info: CheckInfo, metric: str) -> Suppression | None:
        """One outage, one page: a breach that begins while the check or a dependency is down
        belongs to that outage."""
        if self.blind(info.name):
            return Suppression.UPLINK
        if any(self.up_breaching(dep) for dep in info.depends_on):
            return Suppression.DEPENDENCY
        if metric != "up" and self.up_breaching(info.name):
            return Suppression.DOWN
        return None

    # ------------------------------------------------------------ World, for the suppress stage

    def in_maintenance(self, check: str, now: float) -> bool:
        return self._maintenance.covering(check, now) is not None

    def silenced(self, check: str, now: float) -> bool:
        return any(s.covers(check, now) for s in self.silences.values())

    def up_breaching(self, check: str) -> bool:
        up = self._by_check.get(check, {}).get("up")
        if up is None and (foreign := self.foreign.get(check)) is not None:
            return foreign.breaching and self.clock.now() - foreign.evaluated_at <= foreign.bound_s
        return up is not None and up.state is not AlertState.RESOLVED

    def depends_on(self, check: str) -> tuple[str, ...]:
        return self.policy.depends_on(check)

    def blind(self, check: str) -> bool:
        """Every uplink check has a pending or firing `up` alert, and `check` is not one of them."""
        return (
            bool(self._uplink)
            and check not in self._uplink
            and all(self.up_breaching(u) for u in self._uplink)
        )

    def storming(self, check: str) -> bool:
        """A storm is on; the uplink checks' own alerts page as usual all the same."""
        return self.storm is not None and check not in self._uplink

    def check_suppression(self, check: str, now: float) -> Suppression | None:
        """Why a check's alerts would not be notified now (the API's `suppressed` of a check)."""
        return stages.check_suppression(check, now, self)

    # ------------------------------------------------------------ flapping

    def _count_change(self, aid: str, now: float) -> None:
        self._changes.setdefault(aid, []).append(now)
        self._trim_changes(aid, now)

    def _trim_changes(self, aid: str, now: float) -> int:
        horizon = now - self.policy.alerts.flapping.window
        changes = self._changes.get(aid)
        if changes and min(changes) > horizon:
            return len(changes)  # nothing to drop, the common case: no new list
        changes = [t for t in changes or () if t > horizon]
        if changes:
            self._changes[aid] = changes
        else:
            self._changes.pop(aid, None)  # bounded: only alerts that changed within the window
        return len(changes)

    # ------------------------------------------------------------ time

    async def run(self, every_s: float) -> None:
        """Repeats, escalations, business hours and windows move with time, not with runs."""
        while True:
            try:
                await self.tick(self.clock.now())
            except StoreError:
                pass  # counted and logged by the store; the next tick decides again
            except Exception:  # a bug here must not stop alerting for good
                log.exception("alert tick failed")
            await asyncio.sleep(every_s)

    async def tick(self, now: float) -> None:
        """Time-driven work: repeats, escalation, business hours opening, windows ending, a
        storm's repeats and its end. The loop is given back every _TICK_SLICE alerts: a mass
        outage holds up no check."""
        await self._storm_notify(now)
        # Without windows, silences or an uplink, time alone changes nothing for an alert that an
        # outage swallowed before it was notified: a storm's thousands are not decided every tick.
        timeless = not (self.policy.maintenance or self.silences or self._uplink)
        due = [a for a in self.active.values() if not (timeless and self._swallowed(a))]
        if due:
            order = {name: i for i, name in enumerate(self.policy.checks)}
            due.sort(key=lambda a: order.get(a.check, 0))
        for done, alert in enumerate(due):
            if done and done % _TICK_SLICE == 0:
                await asyncio.sleep(0)
            if self.active.get(alert.id) is alert:  # else resolved while the tick gave way
                await self._decide(alert, now)
        for silence in [s for s in self.silences.values() if s.end <= now]:
            del self.silences[silence.id]
            await self.store.delete_silence(silence.id)

    def _swallowed(self, alert: Alert) -> bool:
        """Suppressed for good by the outage it began in (never notified, sticky) and decided
        since its last change: its next decision is its next run's."""
        return (
            alert.sticky is not None
            and alert.suppressed is alert.sticky
            and alert.notified_severity is None
            and alert.state is not AlertState.RESOLVED
            and not alert.flapping
            and alert.id not in self._flapping
            and alert.id not in self._unsaved
        )

    # ------------------------------------------------------------ deciding

    async def _decide(self, alert: Alert, now: float) -> None:
        """Run the stages on the live alert without changing it; when they decide something, the
        alert takes the decision only once it is stored with its notifications, so a failed
        write leaves it to be decided again next round."""
        if alert.id in self._deciding:
            return  # a decision on it is being stored; the next round looks again
        flapping = self._trim_changes(alert.id, now) > self.policy.alerts.flapping.changes
        outgoing: list[tuple[str, Notification]] = []
        if flapping and alert.id not in self._flapping:
            window = self.policy.alerts.flapping
            note = f"more than {window.changes} state changes in {format_duration(window.window)}"
            notifiers = {n for r in stages.route(alert, self.policy.routes) for n in r.config.notify}
            outgoing += [(n, alert.notification("flapping", now, note)) for n in sorted(notifiers)]
        probe = alert if alert.flapping == flapping else dataclasses.replace(alert, flapping=flapping)
        suppressed = stages.suppress(probe, now, self)
        sticky = suppressed if suppressed in STICKY and alert.notified_severity is None else alert.sticky
        if alert.state is AlertState.RESOLVED:
            plan = stages.plan_resolved(alert, self.policy.routes_by_key)
        elif (
            alert.state is AlertState.FIRING and suppressed is None and not self._awaiting_dependencies(alert)
        ):
            routes = stages.route(alert, self.policy.routes)
            plan = stages.plan_firing(
                alert, routes, now, self._hours.open(now), lambda n: self.outbox.queued(n, alert.id, "firing")
            )
        else:
            plan = stages.Plan()
        for send in plan.sends:
            outgoing += [(n, alert.notification(send.event, now, send.note)) for n in send.notifiers]
        resolved = alert.state is AlertState.RESOLVED
        changed = (flapping, suppressed, sticky) != (alert.flapping, alert.suppressed, alert.sticky)
        if not (outgoing or plan or resolved or changed or alert.id in self._unsaved):
            return
        if sticky is Suppression.STORM and alert.state is AlertState.FIRING:
            # The storm's page is due from now (the tick sends it): not only once this alert's
            # write is done, which waits behind those of every alert firing with it.
            self._storm_reach(alert)
        # The first page while a dependency on another shard has gone unseen too long (fail open).
        stale = alert.notified_severity is None and bool(plan.sends) and self._stale_foreign(alert)
        if alert.state is not AlertState.PENDING or outgoing:  # a pending alert lives in memory only
            new = alert.copy()
            new.flapping, new.suppressed, new.sticky = flapping, suppressed, sticky
            stages.apply(new, plan, now)
            self._deciding.add(alert.id)
            try:
                if self._storm_news():  # the storm's page is held before this write, not after it
                    await self._storm_notify(now)
                await self._write(new, outgoing, active=not resolved)
            except Exception as exc:  # the store is failing: the same decision is taken next round
                log.error("alert not stored, deciding again", extra={"alert": alert.id, "reason": str(exc)})
                return
            finally:
                self._deciding.discard(alert.id)
        if stale:
            self.on_dependency_stale()
        # Stored: the live alert takes the decision (counts made meanwhile by new runs are kept).
        alert.flapping, alert.suppressed, alert.sticky = flapping, suppressed, sticky
        stages.apply(alert, plan, now)
        self._storm_track(alert)
        self._unsaved.discard(alert.id)
        if flapping and alert.id not in self._flapping:
            log.warning("alert flapping", extra={"alert": alert.id, "check": alert.check})
            self._flapping.add(alert.id)
        elif not flapping:
            self._flapping.discard(alert.id)
        if resolved:
            self._untrack(alert)
            if plan.sends:
                log.info("alert resolved", extra={"alert": alert.id, "check": alert.check})

    def _awaiting_dependencies(self, alert: Alert) -> bool:
        """A check's page waits until each dependency has been evaluated since the breach began:
        if the database is the cause, its own alert must win the race."""
        return any(self._unseen(dep, alert.started_at) for dep in self.depends_on(alert.check))

    def _unseen(self, dep: str, since: float) -> bool:
        foreign = self.foreign.get(dep)
        if foreign is None:
            return self._last_seen.get(dep, -1.0) < since
        # Another shard's: waited for at most its bound, then the page goes (fail open).
        return foreign.evaluated_at < since and self.clock.now() - since <= foreign.bound_s

    def _stale_foreign(self, alert: Alert) -> bool:
        """A dependency on another shard unseen since the breach began: its page did not wait."""
        return any(
            (f := self.foreign.get(dep)) is not None and f.evaluated_at < alert.started_at
            for dep in self.depends_on(alert.check)
        )

    async def _write(
        self, alert: Alert, outgoing: list[tuple[str, Notification]], active: bool = True
    ) -> None:
        record = AlertRecord(alert.key, alert.id, active, self.clock.now(), alert.to_doc())
        try:
            await self.outbox.commit(record, outgoing)
        except Conflict as exc:  # changed elsewhere (HA.md (b) Fencing 2): read again, decide again
            for key in exc.keys:
                await self.refresh(key)
            if alert.key in exc.keys:
                raise

    # ------------------------------------------------------------ storms

    def _storm_detect(self, now: float) -> None:
        """The storm detection stage on the recent `up` starts; when a storm begins, the alerts
        it swallows (begun, never notified) are marked at once, so that none of them pages."""
        guard = self.policy.alerts.storm
        horizon = now - (guard.window if guard is not None else 0.0)
        while self._up_starts and self._up_starts[0] <= horizon:
            self._up_starts.popleft()
        if self.storm is not None or not stages.storm_begins(self._up_starts, now, guard):
            return
        self.storm = Storm(self.policy.shard, now)
        for alert in self.active.values():  # once per storm
            if alert.state is AlertState.RESOLVED or alert.notified_severity is not None:
                continue
            if (
                alert.sticky in (None, Suppression.STORM)
                and stages.suppress(alert, now, self) is Suppression.STORM
            ):
                alert.sticky = alert.suppressed = Suppression.STORM
                self._unsaved.add(alert.id)
                self._storm_track(alert)
        log.warning("storm began", extra={"reason": f"{len(self.storm.members)} checks down"})

    def _storm_track(self, alert: Alert) -> None:
        """Keep the storm's members (checks whose `up` alert it swallowed) and the routes its
        firing alerts would have gone to."""
        storm = self.storm
        if storm is None:
            return
        if alert.sticky is Suppression.STORM and alert.state is not AlertState.RESOLVED:
            if alert.metric == "up":
                storm.members.setdefault(alert.check, None)
            if alert.state is AlertState.FIRING:
                self._storm_reach(alert)
        elif alert.metric == "up":
            storm.members.pop(alert.check, None)

    def _storm_reach(self, alert: Alert) -> None:
        """The storm's routes take in those of a firing alert it swallowed."""
        if self.storm is not None and alert.id not in self._storm_fired:
            self._storm_fired.add(alert.id)
            for r in stages.route(alert, self.policy.routes):
                self._storm_routes.setdefault(r.key, r)

    def _storm_news(self) -> bool:
        """What a run can change of the storm: a notifier it must now reach, or its end (its
        repeats are the tick's)."""
        storm = self.storm
        if storm is None:
            return False
        unnotified = any(
            n not in storm.notified for r in self._storm_routes.values() for n in r.config.notify
        )
        return unnotified or stages.storm_over(len(storm.members), self.policy.alerts.storm)

    async def _storm_notify(self, now: float) -> None:
        """The storm's notifications, stored with its state: the start to each notifier (when the
        first alert that would have reached it fires), repeats per route, and the end."""
        storm = self.storm
        if storm is None or self._storm_writing:
            return
        guard = self.policy.alerts.storm
        window_s = guard.window if guard is not None else 0.0
        over = stages.storm_over(len(storm.members), guard)
        if over:
            told = sorted(storm.notified)
            first: list[str] = []
        else:
            first, told = stages.plan_storm(self._storm_routes.values(), storm.notified, now)
        if not over and not first and not told:
            return
        new = dataclasses.replace(storm, notified={**storm.notified, **dict.fromkeys(first + told, now)})
        if over:
            new.over_at = now
        outgoing = [
            (n, new.notification("storm_over" if over else "storm", now, window_s)) for n in first + told
        ]
        if over and not storm.notified:
            outgoing = []  # it never reached anyone: it ends as quietly as it began
        self._storm_writing = True
        try:
            record = AlertRecord(new.key, new.id, not over, self.clock.now(), new.to_doc())
            await self.outbox.commit(record, outgoing)
        except Exception as exc:  # the store is failing: decided again next round
            log.error("storm not stored, deciding again", extra={"alert": storm.id, "reason": str(exc)})
            for key in exc.keys if isinstance(exc, Conflict) else ():
                await self.refresh(key)
            return
        finally:
            self._storm_writing = False
        if self.storm is not storm:
            return
        storm.notified, storm.over_at = new.notified, new.over_at
        if over:
            self.storm = None
            self._storm_routes.clear()
            self._storm_fired.clear()
            log.warning("storm over", extra={"reason": f"{len(storm.members)} checks still down"})
        elif first:
            log.warning(
                "storm notified",
                extra={"notifier": ",".join(first), "reason": f"{len(storm.members)} checks down"},
            )

    # ------------------------------------------------------------ API actions

    async def acknowledge(self, aid: str, by: str | None, comment: str | None) -> Alert | None:
        """Stops repeats and escalation; the notifiers that were paged are told."""
        alert = self.active.get(aid)
        if alert is None or alert.acknowledged:
            return alert
        now = self.clock.now()
        new = alert.copy()
        new.acknowledged, new.acknowledged_by, new.ack_comment = True, by, comment
        notified = sorted({n for p in new.progress.values() for n in p.notifiers})
        await self._write(new, [(n, new.notification("acknowledged", now, comment)) for n in notified])
        alert.acknowledged, alert.acknowledged_by, alert.ack_comment = True, by, comment
        log.info("alert acknowledged", extra={"alert": aid, "check": alert.check})
        return alert

    async def add_silence(self, checks: list[str], start: float, end: float, comment: str) -> Silence:
        silence = Silence(secrets.token_hex(8), tuple(checks), start, end, comment)
        await self.store.save_silence(silence.id, asdict(silence))
        self.silences[silence.id] = silence
        return silence

    async def delete_silence(self, silence_id: str) -> bool:
        if silence_id not in self.silences:
            return False
        await self.store.delete_silence(silence_id)
        del self.silences[silence_id]
        await self.tick(self.clock.now())  # alerts it held are notified now if still firing
        return True

    async def history(self, since: float) -> list[Alert]:
        found = []
        for doc in await self.store.load_alerts(active=False, since=since):
            if doc.get("kind") == STORM_KIND:
                continue
            try:
                found.append(Alert.from_doc(doc))
            except (KeyError, TypeError, ValueError):
                continue  # logged when loaded at start
        return found


__all__ = ["AlertPipeline", "alert_id"]
