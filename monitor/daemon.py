"""Wiring: builds the shared resources, the checks, alerting, the scheduler and the HTTP server,
and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import time
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CollectorRegistry

from alerts.outbox import Outbox
from alerts.pipeline import AlertPipeline
from checks import CheckDeps
from monitor.api import build_app
from monitor.clock import Clock, SystemClock
from monitor.config import Config, ConfigError, load_config
from monitor.metrics import Metrics
from monitor.models import CheckResult
from monitor.once import build_notifiers, new_http_session
from monitor.runner import run_check
from monitor.runtime import CheckRuntime, alert_policy, build_runtimes, summary
from monitor.scheduler import Scheduler
from monitor.store import HeartbeatBook, StoreError, StoreWriter, WatchedStore, make_store
from monitor.views import alert_view, silence_view

log = logging.getLogger("monitor.daemon")

# SIGTERM must end the process within 10 s: running checks get this long to finish.
STOP_GRACE_S = 8.0
TICK_S = 1.0  # how often time-driven alerting work (repeat, escalation, windows) is looked at
STOP_FLUSH_S = 1.0  # at SIGTERM, how long a failing store is given for what it has not taken
VIEW_SLICE = 500  # alerts shown by the API between two yields to the loop


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
        self.store = StoreWriter(watched, self.metrics.store_commits.inc)
        self._session = new_http_session()
        # Heartbeat checks' first-configured times and latest pings, over the store (SPEC 13).
        self.heartbeats = HeartbeatBook(self.store, self.clock)
        self._deps = CheckDeps(http=self._session, heartbeats=self.heartbeats)
        self.outbox = self._new_outbox(config)
        self.runtimes: dict[str, CheckRuntime] = {}
        self.alerts = AlertPipeline(alert_policy(config, self.runtimes), self.store, self.outbox, self.clock)
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
        log.info("started", extra={"checks": len(self.runtimes), "path": self.config.monitor.listen})

    async def _start(self) -> None:
        await self.store.open()
        self.store.start()  # before anything writes: loading the outbox may fail rows already
        await self.outbox.load()
        await self.alerts.load()
        await self.heartbeats.configure(self._heartbeat_names())
        self.outbox.start()
        self._tasks.append(asyncio.create_task(self.alerts.run(TICK_S), name="alerts-tick"))
        self._tasks.append(asyncio.create_task(self._retry_store_forever(), name="store-retry"))
        for name, rt in self.runtimes.items():  # added before start: one wake-up, not one per job
            self.scheduler.add(name, rt.check.config.interval)
        self.scheduler.start()
        await self._web.setup()
        host, port = self.config.monitor.host_port
        await web.TCPSite(self._web, host, port).start()

    async def stop(self) -> None:
        """Stop scheduling, let running checks finish (bounded), then close in reverse order.
        Undelivered notifications are already in the store: the next start sends them."""
        self.scheduler.shutdown()
        try:
            await asyncio.wait_for(self._idle.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("stopping with checks still running", extra={"reason": "grace period over"})
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        """Close what was opened, in reverse order; whatever `start` got to."""
        self.scheduler.shutdown()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self.outbox.stop()
        await self._flush_outbox()
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
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_FLUSH_S):
                await self.outbox.flush()
        if self.outbox.unstored:
            log.error(
                "stopping with writes the state store did not take",
                extra={"reason": f"{self.outbox.unstored} held: {self.store.failing}"},
            )

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with `listen = "127.0.0.1:0"`)."""
        return self._web.addresses[0][1]

    def _new_outbox(self, config: Config) -> Outbox:
        return Outbox(self.store, build_notifiers(config, self._session), self.clock, self._notified)

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
            await self.outbox.flush()

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
        await self.heartbeats.configure(self._heartbeat_names())
        if new.notifiers != self.config.notifiers:
            await self.outbox.reconfigure(build_notifiers(new, self._session))
        self.alerts.policy = alert_policy(new, fresh)
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
        breaching = rt.evaluator.observe(result, now)
        # During a storm its own lines say how many are down (the API says which): a line per
        # check would be tens of thousands at once.
        if was_up is not result.up and not self.alerts.storming(name):
            if result.up:
                if was_up is not None:  # a first run that succeeds changes nothing worth a line
                    log.info("check up", extra={"check": name})
            else:
                log.warning("check down", extra={"check": name, "reason": result.reason})
        await self.alerts.evaluated(name, breaching, rt.evaluator.evaluations, result.reason, now)

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

    def checks_view(self, history: bool = False) -> dict[str, Any]:
        now = self.clock.now()
        for rt in self.runtimes.values():
            rt.suppressed = self.alerts.check_suppression(rt.check.name, now)
        return summary(self.runtimes.values(), history)

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

    async def acknowledge(self, alert_id: str, by: str | None, comment: str | None) -> dict[str, Any] | None:
        alert = await self.alerts.acknowledge(alert_id, by, comment)
        return None if alert is None else alert_view(alert)

    def silences_view(self) -> list[dict[str, Any]]:
        now = self.clock.now()
        found = [s for s in self.alerts.silences.values() if s.end > now]
        return [silence_view(s) for s in sorted(found, key=lambda s: s.start)]

    async def add_silence(self, checks: list[str], start: float, end: float, comment: str) -> dict[str, Any]:
        return silence_view(await self.alerts.add_silence(checks, start, end, comment))

    async def delete_silence(self, silence_id: str) -> bool:
        return await self.alerts.delete_silence(silence_id)

    def heartbeat_token(self, name: str) -> str | None:
        rt = self.runtimes.get(name)
        if rt is None or rt.check.type != "heartbeat":
            return None
        token: str = rt.check.config.token.get_secret_value()
        return token

    async def heartbeat_ping(self, name: str, ok: bool, reason: str | None) -> float:
        return await self.heartbeats.ping(name, ok, reason)

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
