"""Wiring: builds the shared resources, the checks, alerting, the scheduler and the HTTP server,
and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import resource
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry

from alerts.outbox import Outbox
from alerts.pipeline import AlertPipeline, Foreign
from checks import CheckDeps
from monitor.api import build_app
from monitor.clock import Clock, SystemClock
from monitor.config import Config, ConfigError, load_config
from monitor.history import History
from monitor.metrics import Metrics
from monitor.models import CheckResult, Level
from monitor.once import build_notifiers, new_http_session
from monitor.runner import run_check
from monitor.runtime import CheckRuntime, alert_policy, build_runtimes, summary
from monitor.scheduler import Scheduler
from monitor.sharding import members, ownership
from monitor.store import (
    AckRequest,
    CheckState,
    Conflict,
    Fenced,
    HeartbeatBook,
    OutboxItem,
    StoreError,
    StoreWriter,
    WatchedStore,
    make_store,
)
from monitor.views import alert_view, silence_view, storm_view

if TYPE_CHECKING:
    from monitor.cluster import Elector  # imported when used: it loads asyncpg

log = logging.getLogger("monitor.daemon")

# SIGTERM must end the process within 10 s: running checks get this long to finish.
STOP_GRACE_S = 8.0
TICK_S = 1.0  # how often time-driven alerting work (repeat, escalation, windows) is looked at
STOP_FLUSH_S = 1.0  # at SIGTERM, how long a failing store is given for what it has not taken
FOLLOW_S = 1.0  # how often a follower reads the leader's alerts and silences from the store
HISTORY_FLUSH_S = 60.0  # run history goes to the store in one batch this often (and at stop)
VIEW_SLICE = 500  # alerts shown by the API between two yields to the loop
# Net allocations between two young collections (Python's default: 700). At 20,000 checks the
# default also brings a full collection of all made since start every few seconds, 70 ms each
# in a storm of 20,000 alerts (bench/run --storm: lag p99 24 -> 9 ms, GC 0.71 -> 0.16 s of CPU).
GC_YOUNG_ALLOCATIONS = 10_000


def _raise_open_files_limit() -> None:
    """Every running check holds a socket: the default soft limit (often 1,024 or 20,000) would
    make a large config fail with "Too many open files" instead of running; take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Daemon:
    """The long-running service: scheduled checks, evaluation, alerting, metrics and the HTTP API.

    Built whole here, from the config; `start` opens and starts what was built, `stop` closes it
    in reverse order.
    """

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
        config_path: str | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.metrics = Metrics(registry)
        # The one writer: checks, the tick, the API and the outbox all write through its queue.
        watched = WatchedStore(make_store(config.monitor.state), self.metrics.store_failed)
        self.store = StoreWriter(watched, self.metrics.store_commits.inc, self._fenced)
        self.store.owns = ownership(config)  # a shard loads and sends only its own checks' alerts
        self.elector = self._new_elector(config)
        self._role_changed = asyncio.Event()
        self._leading: int | None = None  # the epoch this replica leads with, once it has taken over
        self._lead_task: asyncio.Task[None] | None = None
        self._transitions = 0  # the elector's transitions counted so far
        self._published, self._foreign = _dependencies(config)
        self._session = new_http_session()
        # Heartbeat checks' first-configured times and latest pings, over the store (SPEC 13).
        self.heartbeats = HeartbeatBook(self.store, self.clock)
        self._deps = CheckDeps(http=self._session, heartbeats=self.heartbeats)
        self.outbox = self._new_outbox(config)
        if self.elector is not None:  # until it leads, no claim can succeed: nothing is sent
            self.outbox.lease = _Lease(self.elector, self.store, 0, lambda: None)
        self.run_history = History(self.store, self.clock, config.monitor.history)
        self.runtimes: dict[str, CheckRuntime] = {}
        self.alerts = AlertPipeline(alert_policy(config, self.runtimes), self.store, self.outbox, self.clock)
        self.alerts.on_dependency_stale = self.metrics.dependency_stale.inc
        self.runtimes.update(build_runtimes(config, self._deps, self.alerts))
        self.scheduler = Scheduler(self._run, self.metrics.scheduler_lag.observe, self._skipped)
        self._web = web.AppRunner(
            build_app(self), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self._started = False
        self._export_alert_gauges()
        self._export_cluster_gauges()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Store, alert state, outbox, checks, then the listener (cleanup runs in reverse).
        Raises StoreError when the state store cannot be opened or read."""
        _raise_open_files_limit()
        try:
            await self._start()
        except BaseException:
            # What was opened is closed: an SQLite connection left open is a thread that keeps
            # the process from exiting.
            await self._close()
            raise
        self._started = True
        # The config and the checks' state live as long as the process: keeping the collector
        # from walking them again on every full collection.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_ALLOCATIONS, *gc.get_threshold()[1:])
        log.info("started", extra={"checks": len(self.runtimes), "path": self.config.monitor.listen})

    async def _start(self) -> None:
        await self.store.open()
        self.store.start()  # before anything writes: loading the outbox may fail rows already
        if self.elector is None:
            await self.outbox.load()
        await self.alerts.load()  # in an HA pair, the view a follower begins with
        await self.heartbeats.configure(self._heartbeat_names())
        await self.run_history.load(self.runtimes)
        if self.elector is None:
            self.outbox.start()
            self._tasks.append(asyncio.create_task(self.alerts.run(TICK_S), name="alerts-tick"))
        else:  # the leader alone runs the tick and the outbox, once it has taken over
            self._tasks.append(asyncio.create_task(self.elector.run(), name="elector"))
            self._tasks.append(asyncio.create_task(self._follow_roles(), name="roles"))
        self._tasks.append(asyncio.create_task(self._flush_history_forever(), name="history-flush"))
        self._tasks.append(asyncio.create_task(self._retry_store_forever(), name="store-retry"))
        self._tasks.append(asyncio.create_task(self._follow_dependencies(), name="dependencies"))
        for name, rt in self.runtimes.items():  # added before start: one wake-up, not one per job
            self.scheduler.add(name, rt.check.config.interval)
        self.scheduler.start()
        await self._web.setup()
        host, port = self.config.monitor.host_port
        await web.TCPSite(self._web, host, port).start()

    async def stop(self) -> None:
        """Stop scheduling, let running checks finish (bounded), then close in reverse order.
        Undelivered notifications are already in the store: the next start sends them.
        An HA leader hands over first, so that the next one leads within a second."""
        self.scheduler.shutdown()
        await self._step_down()
        try:
            await asyncio.wait_for(self._idle.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("stopping with checks still running", extra={"reason": "grace period over"})
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        """Close what was opened, in reverse order; whatever `start` got to."""
        self.scheduler.shutdown()
        await self._step_down()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.outbox.stop()
        await self._flush_outbox()
        await self._flush_history()
        await self._web.cleanup()
        if not self._session.closed:
            await self._session.close()
        await self.store.stop()  # nothing writes any more: what is queued is written, then closed
        await self.store.close()
        self._started = False

    async def _flush_outbox(self) -> None:
        """What a failing store has not taken yet is offered once more, briefly."""
        if not self.outbox.unstored:
            return
        with contextlib.suppress(TimeoutError, Conflict):  # (changed elsewhere: that one is void)
            async with asyncio.timeout(STOP_FLUSH_S):
                await self.outbox.flush()
        if self.outbox.unstored:
            log.error(
                "stopping with writes the state store did not take",
                extra={"reason": f"{self.outbox.unstored} held: {self.store.failing}"},
            )

    @property
    def _stores_history(self) -> bool:
        """In an HA pair only the leader stores run history: the pair's rows would overwrite each
        other's, and a closed hour would count twice in its day."""
        return self.elector is None or self._leading is not None

    async def _flush_history_forever(self) -> None:
        while True:
            await asyncio.sleep(HISTORY_FLUSH_S)
            if not self._stores_history:
                self.run_history.forget_closed()
                continue
            try:
                await self.run_history.flush()
            except StoreError:
                pass  # counted and logged by the store; what was not stored goes in the next batch
            except Exception:  # a bug here must not stop the history for good
                log.exception("history flush failed")

    async def _flush_history(self) -> None:
        """At stop: the hours recorded since the last batch, briefly offered to the store."""
        if not self._started or not self._stores_history:
            return
        try:
            async with asyncio.timeout(STOP_FLUSH_S):
                await self.run_history.flush()
        except (StoreError, TimeoutError) as exc:
            log.error("stopping with run history the state store did not take", extra={"reason": str(exc)})

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with `listen = "127.0.0.1:0"`)."""
        return self._web.addresses[0][1]

    def _new_outbox(self, config: Config) -> Outbox:
        return Outbox(
            self.store,
            build_notifiers(config, self._session),
            self.clock,
            self._notified,
            on_redelivered=lambda notifier: self.metrics.outbox_redelivered.labels(notifier).inc(),
        )

    # ------------------------------------------------------------ HA pair (SPEC section 9)

    def _new_elector(self, config: Config) -> Elector | None:
        cluster = config.cluster
        if cluster.mode != "ha":
            return None
        from monitor.cluster import Elector  # the config makes sure the store is PostgreSQL

        elector = Elector(
            str(config.monitor.state), cluster.shard, cluster.shards, cluster.failover, self._elected
        )
        elector.renew_seconds = self.metrics.lease_renew.observe
        self.store.fence = (elector.shard_key, 0)  # epoch 0: not leading, every leader write refused
        return elector

    @property
    def leading(self) -> bool:
        """This replica acts as the leader now (an HA leader past its deadline D does not)."""
        e = self.elector
        return e is None or e.lease_left() > 0

    def _elected(self) -> None:
        """The elector's state changed: counted here, acted on by `_follow_roles`."""
        e = self.elector
        if e is not None and e.transitions > self._transitions:
            self.metrics.cluster_transitions.labels(self._shard_label).inc(e.transitions - self._transitions)
            self._transitions = e.transitions
        self._role_changed.set()

    def _fenced(self, exc: Fenced) -> None:
        for operation in exc.operations:
            self.metrics.cluster_fenced.labels(operation).inc()
        log.warning("write fenced", extra={"reason": f"{', '.join(exc.operations)}: {exc}"})
        if self.elector is not None:
            self.elector.step_down("a write was fenced")

    async def _follow_roles(self) -> None:
        """Takes over when elected, stops when not; a follower meanwhile reads the leader's alerts
        and silences from the store every FOLLOW_S, so that its API shows them."""
        while True:
            try:
                await self._sync_role()
            except StoreError:
                pass  # counted and logged by the store; tried again
            except Exception:  # a bug here must not end the replica's part in the pair
                log.exception("role change failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._role_changed.wait(), FOLLOW_S)
            self._role_changed.clear()

    async def _sync_role(self) -> None:
        e = self.elector
        assert e is not None
        epoch = e.epoch if e.is_leader else None
        if epoch is not None and self._leading != epoch:
            if self._leading is not None:
                await self._demote()
            await self._promote(epoch)
        elif epoch is None:
            if self._leading is not None:
                await self._demote()
                await self.alerts.load()  # what it decided while leading gives way to what is stored
            else:
                await self.alerts.follow()  # only what changed since the last read

    async def _promote(self, epoch: int) -> None:
        """HA.md (b) Followers: the new epoch fences every write; alerts, silences and pending rows
        come from the store, rows in doubt first; then the workers and the tick start."""
        e = self.elector
        assert e is not None
        self.store.fence = (e.shard_key, epoch)
        self.outbox.lease = _Lease(e, self.store, epoch, self.metrics.cluster_fenced.labels("claim").inc)
        try:
            await self.alerts.load()
            await self.outbox.load()
        except StoreError as exc:
            self.outbox.drop()
            e.step_down(f"state not loaded: {exc}")
            raise
        self._leading = epoch
        self.outbox.start()
        await self._seed()
        self._lead_task = asyncio.create_task(self._lead(), name="alerts-tick")
        loaded = f"epoch {epoch}, {len(self.alerts.active)} alerts"
        log.warning("took over alerting", extra={"reason": loaded})

    async def _seed(self) -> None:
        """The follower's warm evaluators count for the new leader: each check breaching at its
        latest run is counted once, so that a takeover during a breach does not start its count
        from nothing (a pending alert lived only in the old leader's memory)."""
        now = self.clock.now()
        for name, rt in list(self.runtimes.items()):
            rows = rt.evaluator.evaluations()
            if any(row.level is not Level.OK for row in rows):
                await self.alerts.observe(name, rows, rt.reason, now)

    async def _demote(self, flush: bool = False) -> None:
        """Stop the tick and the workers and forget their queues: the store has what matters."""
        self._leading = None
        if self._lead_task is not None:
            self._lead_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lead_task
            self._lead_task = None
        await self.outbox.stop()
        if flush:
            await self._flush_outbox()
        self.outbox.drop()
        log.warning("stopped alerting", extra={"reason": "not the leader"})

    async def _lead(self) -> None:
        """The leader's tick: acks posted to followers, silences from the store, then the time-driven
        alerting work."""
        while True:
            try:
                for request in await self.store.load_acks():
                    await self.alerts.acknowledge(request.alert_id, request.by, request.comment)
                    await self.store.clear_ack(request.alert_id)
                await self.alerts.refresh_silences()
                await self.alerts.tick(self.clock.now())
            except (StoreError, Conflict):
                pass  # counted and logged by the store (a Conflict: read again); the next tick decides again
            except Exception:  # a bug here must not stop alerting for good
                log.exception("alert tick failed")
            await asyncio.sleep(TICK_S)

    async def _follow_dependencies(self) -> None:
        """Every TICK_S: the published state of the dependencies that other shards run."""
        while True:
            if self._foreign:
                try:
                    states = {s.check: s for s in await self.store.load_check_states(self._foreign)}
                except StoreError:
                    pass  # counted and logged by the store; an old state goes stale (fail open)
                else:
                    self.alerts.foreign = {
                        dep: Foreign(s.breaching, s.evaluated_at, bound)
                        if (s := states.get(dep)) is not None
                        else Foreign(False, -math.inf, bound)
                        for dep, bound in self._foreign.items()
                    }
            await asyncio.sleep(TICK_S)

    async def _step_down(self) -> None:
        """At stop: no more leading, then resign (unlock and NOTIFY) so that a follower leads now."""
        e = self.elector
        if e is None:
            return
        for task in [t for t in self._tasks if t.get_name() in ("elector", "roles")]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self._tasks.remove(task)
        if self._leading is not None:
            await self._demote(flush=True)
        await e.resign()

    def _export_cluster_gauges(self) -> None:
        e = self.elector
        if e is None:
            return
        shard = self._shard_label
        self.metrics.cluster_leader.labels(shard).set_function(lambda: int(self.leading))
        self.metrics.cluster_epoch.labels(shard).set_function(lambda: e.epoch or 0)
        self.metrics.cluster_transitions.labels(shard)

    @property
    def _shard_label(self) -> str:
        return str(self.config.cluster.shard)  # the `shard` label: i of i/N

    def cluster_view(self) -> dict[str, Any]:
        """GET /api/v1/cluster."""
        e = self.elector
        cluster = self.config.cluster
        role = "single" if e is None else ("leader" if self.leading else "follower")
        return {
            "mode": cluster.mode,
            "shard": cluster.shard,
            "shards": cluster.shards,
            "role": role,
            "epoch": None if e is None else e.epoch,
            "leader": None if e is None else (e.holder if self.leading else e.leader),
            "checks": len(self.runtimes),
        }

    async def _retry_store_forever(self) -> None:
        """What a failing store has not taken is offered again every TICK_S."""
        while True:
            try:
                await self._retry_store()
            except StoreError:
                pass  # counted, and logged when it starts failing, by the store; tried next time
            except Exception:  # a bug here must not stop the retries for good
                log.exception("store retry failed")
            await asyncio.sleep(TICK_S)

    async def _retry_store(self) -> None:
        """While the store fails it is probed with a write (which also reopens a replaced SQLite
        file): its recovery is seen without waiting for an alert to change. Then what it has not
        taken is stored."""
        if self.store.failing is not None:
            try:
                await self.store.probe()
            except StoreError:
                return
        if self.outbox.unstored:
            try:
                await self.outbox.flush()
            except Conflict as exc:  # decisions on alerts changed elsewhere: read again
                for key in exc.keys:
                    await self.alerts.refresh(key)

    # ------------------------------------------------------------ reload

    async def reload(self) -> bool:
        """SIGHUP: adopt the config file's new content, or keep the old one if it is invalid.

        Checks whose definition and threshold rows did not change keep their schedule, history
        and alert state."""
        path = self.config_path
        if path is None:
            return False
        try:
            new = await asyncio.to_thread(load_config, path)
        except ConfigError as exc:
            self.metrics.config_reloads.labels("failure").inc()
            log.error("config reload rejected, keeping the running config", extra={"errors": exc.errors})
            return False
        for key in ("listen", "state"):
            if getattr(new.monitor, key) != getattr(self.config.monitor, key):
                log.warning("config reload: a restart is needed to change monitor." + key)
        fresh = build_runtimes(new, self._deps, self.alerts)
        for name, rt in self.runtimes.items():
            kept = fresh.get(name)
            if (
                kept is not None
                and rt.check.config == kept.check.config
                and rt.evaluator.rows == kept.evaluator.rows
            ):
                fresh[name] = rt
                continue
            if kept is None:
                self.scheduler.remove(name)  # its series go with it: Grafana does not show it stale
            elif kept.check.type == rt.check.type:
                kept.counts = rt.counts  # a redefined check's counters go on
        for name, rt in fresh.items():
            if self.runtimes.get(name) is not rt:
                self.scheduler.add(name, rt.check.config.interval)
        self.runtimes = fresh
        self.run_history.keep_only(fresh)
        await self.heartbeats.configure(self._heartbeat_names())
        if new.notifiers != self.config.notifiers:
            await self.outbox.reconfigure(build_notifiers(new, self._session))
            if self.elector is not None and self._leading is None:
                await self.outbox.stop()  # a follower runs no workers (reconfigure started them)
        self.alerts.policy = alert_policy(new, fresh)
        self._published, self._foreign = _dependencies(new)
        self.store.owns = ownership(new)
        self.config = new
        self.metrics.config_reloads.labels("success").inc()
        log.info("config reloaded", extra={"checks": len(fresh)})
        return True

    # ------------------------------------------------------------ runs

    async def _run(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is None:
            return
        self._running += 1
        self._idle.clear()
        try:
            result = await run_check(rt.check)
            await self._record(rt, result, self.clock.now())
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _record(self, rt: CheckRuntime, result: CheckResult, now: float) -> None:
        """One run's result: its series, its evaluation, then alerting when anything breaches."""
        name = rt.check.name
        was_up = rt.up
        rt.record(result, now)
        rt.observe(result.latency_ms / 1000, result.outcome)
        self.run_history.record(name, result.up, result.latency_ms, now)
        breaching = rt.evaluator.observe(result, now)
        # During a storm its own lines say how many are down (the API says which): a line per
        # check would be tens of thousands at once.
        if was_up is not result.up and not self.alerts.storming(name):
            if result.up:
                if was_up is not None:  # a first run that succeeds changes nothing worth a line
                    log.info("check up", extra={"check": name})
            else:
                log.warning("check down", extra={"check": name, "reason": result.reason})
        if self._leading is not None or self.elector is None:  # a follower's checks do not alert
            await self.alerts.evaluated(name, breaching, rt.evaluator.evaluations, result.reason, now)
            if name in self._published:  # another shard's checks depend on it
                state = CheckState(name, result.up, self.alerts.up_breaching(name), now)
                with contextlib.suppress(StoreError):  # counted and logged; the next run publishes
                    await self.store.publish_state(state)

    def _skipped(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is not None:
            rt.count_skipped()
            log.debug("run skipped: previous run still going", extra={"check": name})

    def _notified(self, notifier: str, outcome: str) -> None:
        self.metrics.notifications.labels(notifier, outcome).inc()

    def _export_alert_gauges(self) -> None:
        """Computed when scraped, not kept up to date on every run."""
        for severity in ("warning", "critical"):
            child = self.metrics.alerts_firing.labels(severity)
            child.set_function(lambda severity=severity: self.alerts.firing_counts()[severity])
        self.metrics.outbox_pending.set_function(lambda: self.outbox.pending)
        self.metrics.storm_active.set_function(lambda: int(self.alerts.storm is not None))
        for reason in self.alerts.suppressed_counts():
            child = self.metrics.alerts_suppressed.labels(reason)
            child.set_function(lambda reason=reason: self.alerts.suppressed_counts()[reason])

    def _heartbeat_names(self) -> list[str]:
        return [name for name, rt in self.runtimes.items() if rt.check.type == "heartbeat"]

    # ------------------------------------------------------------ API source

    @property
    def api_token(self) -> str:
        return self.config.monitor.api_token.get_secret_value()

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.config.monitor.timezone)

    def now(self) -> float:
        return self.clock.now()

    def metrics_text(self) -> Iterator[str]:
        return self.metrics.render(self.runtimes.values())

    def checks_view(self) -> dict[str, Any]:
        now = self.clock.now()
        for rt in self.runtimes.values():
            rt.suppressed = self.alerts.check_suppression(rt.check.name, now)
        return summary(self.runtimes.values())

    async def alerts_view(
        self, resolved_since: float | None, metric: str | None = None
    ) -> list[dict[str, Any]]:
        if resolved_since is None:
            found = sorted(self.alerts.active.values(), key=lambda a: a.started_at)
        else:
            found = await self.alerts.history(resolved_since)
        views = []
        for a in found:
            if metric is None or a.metric == metric:
                if views and len(views) % VIEW_SLICE == 0:
                    await asyncio.sleep(0)  # a storm's 20,000 alerts: due checks start in between
                views.append(alert_view(a))
        return views

    def alerts_count(self, metric: str | None) -> dict[str, int]:
        return self.alerts.counts(metric)

    def storm_view(self) -> dict[str, Any] | None:
        return storm_view(self.alerts.storm)

    async def acknowledge(self, alert_id: str, by: str | None, comment: str | None) -> dict[str, Any] | None:
        if self.elector is not None and self._leading is None:
            # A follower's: the leader acts on it (and notifies) within a tick.
            alert = self.alerts.active.get(alert_id)
            if alert is None:
                return None
            if not alert.acknowledged:
                await self.store.request_ack(AckRequest(alert_id, by, comment))
                alert.acknowledged, alert.acknowledged_by, alert.ack_comment = True, by, comment
            return alert_view(alert)
        try:
            alert = await self.alerts.acknowledge(alert_id, by, comment)
        except Conflict:  # changed elsewhere meanwhile, and read again: acknowledged on what is stored
            alert = await self.alerts.acknowledge(alert_id, by, comment)
        return None if alert is None else alert_view(alert)

    def silences_view(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        found = [s for s in self.alerts.silences.values() if s.end > now]
        return [silence_view(s) for s in sorted(found, key=lambda s: s.start)]

    async def add_silence(self, checks: list[str], start: float, end: float, comment: str) -> dict[str, Any]:
        return silence_view(await self.alerts.add_silence(checks, start, end, comment))

    async def delete_silence(self, silence_id: str) -> bool:
        if self.elector is not None and self._leading is None:  # the leader reads it at its tick
            if self.alerts.silences.pop(silence_id, None) is None:
                return False
            return await self.store.delete_silence(silence_id)
        return await self.alerts.delete_silence(silence_id)

    def heartbeat_token(self, name: str) -> str | None:
        rt = self.runtimes.get(name)
        if rt is None or rt.check.type != "heartbeat":
            return None
        token: str = rt.check.config.token.get_secret_value()
        return token

    async def heartbeat_ping(self, name: str, ok: bool, reason: str | None) -> float:
        return await self.heartbeats.ping(name, ok, reason)

    def uptime_pct(self, name: str) -> dict[str, float | None]:
        return self.run_history.uptime_pct(name)

    def latency_hours(self, name: str) -> list[float | None]:
        return self.run_history.latency_hours(name)

    def check_view(self, name: str, since: float | None) -> dict[str, Any] | None:
        """One entry of `checks_view` with its hours held in memory (`older_hours` has the rest)
        and its uptime; None for an unknown check."""
        rt = self.runtimes.get(name)
        if rt is None:
            return None
        rt.suppressed = self.alerts.check_suppression(name, self.clock.now())
        hours = self.run_history.hours(name, since)
        return {**rt.view(), "history": hours, "uptime_pct": self.uptime_pct(name)}

    async def older_hours(self, name: str, since: float) -> list[dict[str, Any]]:
        """The stored hours of a check from `since` up to those `check_view` shows."""
        held_from = self.run_history.held_from(name)
        if not self.run_history.enabled or since >= held_from:
            return []
        return await self.run_history.stored_hours(name, since, held_from)

    async def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        # A store whose writes failed stays unready until a write works (see _retry_store).
        if self.store.failing is not None or not await self.store.ping():
            why = self.store.failing
            return False, "state store unreachable" + (f": {why}" if why else "")
        if set(self.scheduler.jobs()) != set(self.runtimes):
            return False, "checks not scheduled"
        return True, "ready"


async def serve(
    config: Config, config_path: str, stop: asyncio.Event, reload: asyncio.Event, watch: bool = False
) -> None:
    """Run the daemon until `stop` is set; reload the config whenever `reload` is set (SIGHUP),
    or when the file changes with `watch`."""
    daemon = Daemon(config, config_path=config_path)
    await daemon.start()
    watcher = asyncio.create_task(_watch(config_path, reload)) if watch else None
    try:
        while not stop.is_set():
            waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(reload.wait())]
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()
            if reload.is_set() and not stop.is_set():
                reload.clear()
                await daemon.reload()
    finally:
        if watcher is not None:
            watcher.cancel()
        started = time.monotonic()
        await daemon.stop()
        log.debug("stop took", extra={"reason": f"{time.monotonic() - started:.2f}s"})


async def _watch(path: str, reload: asyncio.Event, every_s: float = 2.0) -> None:
    """`monitor run --watch`: a changed file (mtime or size) asks for a reload."""

    def stamp() -> tuple[float, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_mtime, st.st_size

    last = await asyncio.to_thread(stamp)
    while True:
        await asyncio.sleep(every_s)
        now = await asyncio.to_thread(stamp)
        if now is not None and now != last:
            last = now
            reload.set()


class _Lease:
    """The outbox's Lease: its right to send while this replica leads with `epoch`."""

    def __init__(self, elector: Elector, store: StoreWriter, epoch: int, refused: Callable[[], None]) -> None:
        self.elector, self.store, self.epoch = elector, store, epoch
        self._refused = refused

    def left(self) -> float:
        return self.elector.lease_left() if self.elector.epoch == self.epoch else 0.0

    async def claim(self, item: OutboxItem) -> bool | None:
        if self.left() <= 0:  # past D (a pause, a cut): not even asked of the store
            self._refused()
            return None
        if self.store.owns is not None and not self.store.owns(item.payload):
            return False  # another shard's row (its check moved, or a stray load): never sent from here
        return await self.store.claim(item.id, self.elector.shard_key, self.epoch)


def _dependencies(config: Config) -> tuple[frozenset[str], dict[str, float]]:
    """With shards: this shard's checks that checks of other shards depend on (published by its
    leader), and the other shards' checks that this shard's depend on, each with how old its
    published state may be before it counts as unknown: 2 x its interval + failover."""
    if config.cluster.shards == 1:
        return frozenset(), {}
    mine = members(config)
    by_name = {c.name: c for c in config.checks}
    published = {d for c in config.checks if c.name not in mine for d in c.depends_on if d in mine}
    foreign = {
        d: 2 * by_name[d].interval + config.cluster.failover
        for c in config.checks
        if c.name in mine
        for d in c.depends_on
        if d not in mine
    }
    return frozenset(published), foreign
