"""Wiring: builds the shared resources, the checks, the scheduler and the HTTP server, and runs them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import resource
import secrets
import socket
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter

from alerts.manager import Alert, AlertManager, AlertPolicy, CheckInfo
from alerts.notifiers import notifier_types
from alerts.notifiers.base import Delivery, Notification, Notifier, deliver
from alerts.outbox import Outbox
from alerts.windows import Silence
from checks import Check, CheckDeps, check_types
from monitor import __version__
from monitor.api import build_app
from monitor.clock import Clock, SystemClock
from monitor.config import Config, ConfigError, dependency_order, load_config
from monitor.evaluation import CheckEvaluator
from monitor.metrics import CheckSeries, Metrics
from monitor.models import EXIT_CODES, STATUS_RANK, CheckResult, Level, RowState, Status, iso
from monitor.runner import run_check
from monitor.scheduler import Scheduler
from monitor.store import OPERATIONS, StoreError, WatchedStore, make_store

log = logging.getLogger("monitor.daemon")

# SIGTERM must end the process within 10 s: running checks get this long to finish.
STOP_GRACE_S = 8.0
TICK_S = 1.0  # how often time-driven alerting work (repeat, escalation, windows) is looked at
STOP_FLUSH_S = 1.0  # at SIGTERM, how long a failing store is given for what it has not taken
_STATUS_OF_LEVEL = {
    Level.OK: Status.OK,
    Level.WARNING: Status.WARNING,
    Level.CRITICAL: Status.CRITICAL,
}


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


# Sample-name tuples shared between checks and runs; a plugin that invents names per run is not
# cached past this many sets.
_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}
_NAMES_MAX = 1024


def _shared_names(names: tuple[str, ...]) -> tuple[str, ...]:
    found = _NAMES.get(names)
    if found is None:
        if len(_NAMES) >= _NAMES_MAX:
            return names
        found = _NAMES[names] = names
    return found


@dataclass(slots=True)
class CheckRuntime(CheckSeries):
    """One scheduled check with its evaluation, latest run and metric series.

    The latest run is kept flat (`last` rebuilds it): a CheckResult with its dict of samples
    took 0.35 KB a check, these slots and one array of the sample values 0.15 KB.
    """

    check: Check
    evaluator: CheckEvaluator
    last_run: float | None = None
    suppressed: str | None = None  # set by alerting: maintenance|silence|dependency
    # Samples of earlier runs that the latest run lacks (a failed run has no status_code):
    # monitor_check_value keeps showing their last value. None in the common case.
    earlier: dict[str, float] | None = None
    up: bool | None = None  # None until the first run
    latency_ms: float = 0.0
    reason: str | None = None
    outcome: str = "success"
    _names: tuple[str, ...] = ()
    _values: array[float] | None = None

    def __post_init__(self) -> None:
        CheckSeries.__init__(self)

    @property
    def series_check(self) -> str:
        return self.check.name

    @property
    def series_type(self) -> str:
        return self.check.type

    @property
    def last(self) -> CheckResult | None:
        """The latest run, None before the first."""
        if self.up is None:
            return None
        return CheckResult(self.up, self.latency_ms, self.samples(), self.reason, self.outcome)

    def samples(self) -> dict[str, float]:
        """The latest run's type-specific samples."""
        return {} if self._values is None else dict(zip(self._names, self._values, strict=True))

    def record(self, result: CheckResult, now: float) -> None:
        samples = result.samples
        names = tuple(samples)
        if names != self._names:
            if self.up is not None:
                earlier = {**(self.earlier or {}), **self.samples()}
                self.earlier = {k: v for k, v in earlier.items() if k not in samples} or None
            self._names = _shared_names(names)
            self._values = array("d", bytes(8 * len(names))) if names else None
        if self._values is not None:
            values = self._values
            for i, value in enumerate(samples.values()):
                values[i] = value
        self.up, self.latency_ms, self.reason, self.outcome = (
            result.up,
            result.latency_ms,
            result.reason,
            result.outcome,
        )
        self.last_run = now

    # CheckSeries: the gauges of monitor_check_up/value and monitor_alert_state, read when scraped.
    def metric_up(self) -> float | None:
        return None if self.up is None else (1.0 if self.up else 0.0)

    def metric_values(self) -> dict[str, float]:
        if self.up is None:
            return {}
        return {
            "up": 1.0 if self.up else 0.0,
            "latency_ms": self.latency_ms,
            **(self.earlier or {}),
            **self.samples(),
            **self.evaluator.derived,
        }

    def alert_levels(self) -> dict[str, float]:
        return self.evaluator.levels()

    def status(self) -> Status:
        if self.up is None or self.outcome == "error":
            return Status.UNKNOWN
        return _STATUS_OF_LEVEL[self.evaluator.worst()]

    def view(self, history: bool = False) -> dict[str, Any]:
        """The check as `monitor once --json` and `GET /api/v1/checks` show it."""
        last = self.last
        samples: dict[str, float] = {}
        if last is not None:
            samples = {**last.all_samples(), **self.evaluator.derived}
        extra = {"history": [(iso(t), ok) for t, ok in self.evaluator.window.history()]} if history else {}
        return {
            **extra,
            "name": self.check.name,
            "type": self.check.type,
            "target": self.check.target(),
            "interval_s": self.check.config.interval,
            "status": self.status().value,
            "up": None if last is None else last.up,
            "reason": None if last is None else last.reason,
            "duration_ms": None if last is None else round(last.latency_ms, 3),
            "last_run": iso(self.last_run),
            "samples": {k: round(v, 3) for k, v in samples.items()},
            "states": {m: s.value for m, s in self.evaluator.states().items()},
            "suppressed": self.suppressed,
        }


def build_runtimes(
    config: Config, deps: CheckDeps, names: Iterable[str] | None = None, single_run: bool = False
) -> dict[str, CheckRuntime]:
    """Checks in dependency order (dependencies first), each with its evaluator."""
    types = check_types()
    wanted = set(names) if names is not None else None
    runtimes: dict[str, CheckRuntime] = {}
    by_name = {c.name: c for c in config.checks}
    for name in dependency_order(config):
        if wanted is not None and name not in wanted:
            continue
        cfg = by_name[name]
        check = types[cfg.type](cfg, deps)
        runtimes[name] = CheckRuntime(check, CheckEvaluator(name, config.rows_for(name), single_run))
    return runtimes


def summary(runtimes: Iterable[CheckRuntime], history: bool = False) -> dict[str, Any]:
    views = [rt.view(history) for rt in runtimes]
    worst = max((Status(v["status"]) for v in views), key=STATUS_RANK.__getitem__, default=Status.OK)
    return {"status": worst.value, "checks": views}


async def run_once(
    config: Config, names: list[str] | None = None, clock: Clock | None = None
) -> dict[str, Any]:
    """Every (or the named) check once, concurrently, judged on that single run."""
    clock = clock or SystemClock()
    async with new_http_session() as session:
        runtimes = build_runtimes(config, CheckDeps(http=session), names, single_run=True)

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


class CheckInfos(Mapping[str, CheckInfo]):
    """What alerting knows of each running check, made when it asks: alerting looks a check up
    only while it breaches, and 20,000 kept CheckInfo objects with their targets were 4 MB."""

    __slots__ = ("_runtimes",)

    def __init__(self, runtimes: dict[str, CheckRuntime]) -> None:
        self._runtimes = runtimes

    def __getitem__(self, name: str) -> CheckInfo:
        check = self._runtimes[name].check
        return CheckInfo(
            name=name,
            type=check.type,
            target=check.target(),
            labels=check.config.labels,  # read-only: alerting copies what it keeps
            runbook=check.config.runbook,
            depends_on=tuple(check.config.depends_on),
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._runtimes)

    def __len__(self) -> int:
        return len(self._runtimes)


def alert_policy(config: Config, runtimes: dict[str, CheckRuntime]) -> AlertPolicy:
    """The alerting part of the config, checks in dependency order."""
    return AlertPolicy(
        checks=CheckInfos(runtimes),
        routes=list(config.routes),
        maintenance=list(config.maintenance),
        business_hours=config.business_hours,
        timezone=ZoneInfo(config.monitor.timezone),
        alerts=config.alerts,
    )


def alert_view(alert: Alert) -> dict[str, Any]:
    """An alert as `GET /api/v1/alerts` shows it (SPEC section 6)."""
    return {
        "id": alert.id,
        "check": alert.check,
        "metric": alert.metric,
        "severity": alert.severity,
        "state": alert.state,
        "suppressed": alert.suppressed,
        "acknowledged": alert.acknowledged,
        "value": alert.value,
        "threshold": alert.threshold,
        "started_at": iso(alert.started_at),
        "resolved_at": iso(alert.resolved_at),
        "reason": alert.reason,
        "labels": alert.labels,
        "runbook": alert.runbook,
    }


def silence_view(silence: Silence) -> dict[str, Any]:
    return {
        "id": silence.id,
        "checks": list(silence.checks),
        "start": iso(silence.start),
        "end": iso(silence.end),
        "comment": silence.comment,
    }


def _raise_open_files_limit() -> None:
    """Every running check holds a socket: the default soft limit (often 1,024 or 20,000) would
    make a large config fail with "Too many open files" instead of running; take the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def build_notifiers(config: Config, session: aiohttp.ClientSession) -> dict[str, Notifier]:
    types = notifier_types()
    return {name: types[cfg.type](name, cfg, session) for name, cfg in config.notifiers.items()}


class Daemon:
    """The long-running service: scheduled checks, evaluation, alerting, metrics and the HTTP API."""

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
        self.store_errors = Counter(
            "monitor_store_errors",
            "Failed state store operations, retries included, by operation.",
            ["operation"],
            registry=self.metrics.registry,
        )
        for operation in OPERATIONS:
            self.store_errors.labels(operation)
        self.store = WatchedStore(make_store(config.monitor.state), self._store_failed)
        self.runtimes: dict[str, CheckRuntime] = {}
        self.scheduler = Scheduler(self._run, self.metrics.scheduler_lag.observe, self._skipped)
        self.outbox: Outbox | None = None
        self.alerts: AlertManager | None = None
        self._session: aiohttp.ClientSession | None = None
        self._web: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self._started = False

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
        # from walking them again on every full collection (~1 million objects at 20,000 checks).
        gc.freeze()
        log.info("started", extra={"checks": len(self.runtimes), "path": self.config.monitor.listen})

    async def _start(self) -> None:
        await self.store.open()
        self._session = new_http_session()
        self.runtimes = build_runtimes(self.config, CheckDeps(http=self._session))
        self.outbox = self._new_outbox(self.config)
        policy = alert_policy(self.config, self.runtimes)
        self.alerts = AlertManager(policy, self.store, self.outbox, self.clock)
        self._export_alert_gauges()
        await self.outbox.load()
        await self.alerts.load()
        self._seed_evaluators()
        self.outbox.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="alerts-tick")
        for name, rt in self.runtimes.items():  # added before start: one wake-up, not one per job
            self.scheduler.add(name, rt.check.config.interval)
        self.scheduler.start()
        self._web = web.AppRunner(
            build_app(self), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._web.setup()
        host, port = self.config.monitor.host_port
        await web.TCPSite(self._web, host, port).start()

    async def stop(self) -> None:
        """Stop scheduling, let running checks finish (bounded), then close in reverse order.
        Undelivered notifications are in the store: the next start sends them."""
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
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self.outbox is not None:
            await self.outbox.stop()
            await self._flush_outbox()
        if self._web is not None:
            await self._web.cleanup()
            self._web = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.store.close()
        self._started = False

    async def _flush_outbox(self) -> None:
        """What a failing store has not taken yet is offered once more, briefly."""
        assert self.outbox is not None
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
        assert self._web is not None
        return self._web.addresses[0][1]

    def _new_outbox(self, config: Config) -> Outbox:
        assert self._session is not None
        return Outbox(self.store, build_notifiers(config, self._session), self.clock, self._notified)

    def _seed_evaluators(self) -> None:
        assert self.alerts is not None
        for (check, metric), alert in self.alerts.row_states().items():
            rt = self.runtimes.get(check)
            if rt is not None and alert.state == "firing":
                rt.evaluator.seed(
                    metric, RowState(alert.severity), alert.started_at, alert.value, alert.threshold
                )

    async def _tick_forever(self) -> None:
        """Repeats, escalations, business hours and windows move with time, not with runs; so
        does the retry of what a failing store has not taken."""
        assert self.alerts is not None
        while True:
            try:
                await self._retry_store()
                await self.alerts.tick(self.clock.now())
            except StoreError:
                pass  # counted, and logged when it starts failing, by the store; tried next tick
            except Exception:  # a bug here must not stop alerting for good
                log.exception("alert tick failed")
            await asyncio.sleep(TICK_S)

    async def _retry_store(self) -> None:
        """While the store fails it is probed with a write (which also reopens a replaced SQLite
        file): its recovery is seen without waiting for an alert to change. Then what it has not
        taken is stored."""
        assert self.outbox is not None
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
        assert self._session is not None and self.alerts is not None and self.outbox is not None
        fresh = build_runtimes(new, CheckDeps(http=self._session))
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
        check = rt.check
        was_up = rt.up
        rt.record(result, now)
        rt.observe(result.latency_ms / 1000, result.outcome)
        breaching = rt.evaluator.observe(result, now)
        if was_up is not result.up:
            if result.up:
                if was_up is not None:  # a first run that succeeds changes nothing worth a line
                    log.info("check up", extra={"check": check.name})
            else:
                log.warning("check down", extra={"check": check.name, "reason": result.reason})
        if self.alerts is None:
            return
        if breaching or self.alerts.active:
            await self.alerts.observe(check.name, rt.evaluator.evaluations(), result.reason, now)
        else:  # the common case, all clear: only the time of this evaluation matters to alerting
            self.alerts.seen(check.name, now)

    def _skipped(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is not None:
            rt.count_skipped()
            log.debug("run skipped: previous run still going", extra={"check": name})

    def _notified(self, notifier: str, outcome: str) -> None:
        self.metrics.notifications.labels(notifier, outcome).inc()

    def _store_failed(self, operation: str) -> None:
        self.store_errors.labels(operation).inc()

    def _export_alert_gauges(self) -> None:
        """Computed when scraped, not kept up to date on every run."""
        for severity in ("warning", "critical"):
            child = self.metrics.alerts_firing.labels(severity)
            child.set_function(lambda severity=severity: self._firing(severity))
        self.metrics.outbox_pending.set_function(lambda: self.outbox.pending if self.outbox else 0)

    def _firing(self, severity: str) -> int:
        return self.alerts.firing_counts()[severity] if self.alerts is not None else 0

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
        if self.alerts is not None:
            now = self.clock.now()
            for rt in self.runtimes.values():
                rt.suppressed = self.alerts.check_suppression(rt.check.name, now)
        return summary(self.runtimes.values(), history)

    async def alerts_view(self, resolved_since: float | None) -> list[dict[str, Any]]:
        assert self.alerts is not None
        if resolved_since is None:
            found = sorted(self.alerts.active.values(), key=lambda a: a.started_at)
        else:
            found = await self.alerts.history(resolved_since)
        return [alert_view(a) for a in found]

    async def acknowledge(self, alert_id: str, by: str | None, comment: str | None) -> dict[str, Any] | None:
        assert self.alerts is not None
        alert = await self.alerts.acknowledge(alert_id, by, comment)
        return None if alert is None else alert_view(alert)

    def silences_view(self) -> list[dict[str, Any]]:
        assert self.alerts is not None
        now = self.clock.now()
        found = [s for s in self.alerts.silences.values() if s.end > now]
        return [silence_view(s) for s in sorted(found, key=lambda s: s.start)]

    async def add_silence(self, checks: list[str], start: float, end: float, comment: str) -> dict[str, Any]:
        assert self.alerts is not None
        return silence_view(await self.alerts.add_silence(checks, start, end, comment))

    async def delete_silence(self, silence_id: str) -> bool:
        assert self.alerts is not None
        return await self.alerts.delete_silence(silence_id)

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
