"""Wiring: builds the shared resources, the checks, the scheduler and the HTTP server, and runs them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry

from checks import Check, CheckDeps, check_types
from monitor import __version__
from monitor.api import build_app
from monitor.clock import Clock, SystemClock
from monitor.config import Config, dependency_order
from monitor.evaluation import CheckEvaluator
from monitor.metrics import Metrics
from monitor.models import EXIT_CODES, STATUS_RANK, CheckResult, Level, RowState, Status, iso
from monitor.runner import run_check
from monitor.scheduler import Scheduler
from monitor.store import Store, make_store

log = logging.getLogger("monitor.daemon")

# SIGTERM must end the process within 10 s: running checks get this long to finish.
STOP_GRACE_S = 8.0
_STATUS_OF_LEVEL = {
    Level.OK: Status.OK,
    Level.WARNING: Status.WARNING,
    Level.CRITICAL: Status.CRITICAL,
}


def new_http_session() -> aiohttp.ClientSession:
    """The one ClientSession of a process. `force_close`: every run opens a fresh connection,
    since a health check over a pooled connection can miss a listener that died."""
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    return aiohttp.ClientSession(
        connector=connector,
        headers={"User-Agent": f"monitor/{__version__}"},
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=None),  # the check runner owns the deadline
    )


@dataclass(slots=True)
class CheckRuntime:
    """One scheduled check with its evaluation and latest run."""

    check: Check
    evaluator: CheckEvaluator
    last: CheckResult | None = None
    last_run: float | None = None
    suppressed: str | None = None  # set by alerting: maintenance|silence|dependency

    def status(self) -> Status:
        if self.last is None or self.last.outcome == "error":
            return Status.UNKNOWN
        return _STATUS_OF_LEVEL[self.evaluator.worst()]

    def view(self) -> dict[str, Any]:
        """The check as `monitor once --json` and `GET /api/v1/checks` show it."""
        last = self.last
        samples: dict[str, float] = {}
        if last is not None:
            samples = {**last.all_samples(), **self.evaluator.derived}
        return {
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
    for name in dependency_order(config):
        if wanted is not None and name not in wanted:
            continue
        cfg = config.check(name)
        check = types[cfg.type](cfg, deps)
        runtimes[name] = CheckRuntime(check, CheckEvaluator(name, config.rows_for(name), single_run))
    return runtimes


def summary(runtimes: Iterable[CheckRuntime]) -> dict[str, Any]:
    views = [rt.view() for rt in runtimes]
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
            rt.last = await run_check(rt.check)
            rt.last_run = clock.now()
            rt.evaluator.observe(rt.last, rt.last_run)

        async with asyncio.TaskGroup() as group:
            for rt in runtimes.values():
                group.create_task(one(rt))
    return summary(runtimes.values())


def exit_code(status: str) -> int:
    return EXIT_CODES[Status(status)]


class Daemon:
    """The long-running service: scheduled checks, evaluation, metrics and the HTTP interface."""

    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.metrics = Metrics(registry)
        self.registry = self.metrics.registry
        self.store: Store = make_store(config.monitor.state)
        self.runtimes: dict[str, CheckRuntime] = {}
        self.scheduler = Scheduler(self._run, self.metrics.scheduler_lag.observe, self._skipped)
        self._session: aiohttp.ClientSession | None = None
        self._web: web.AppRunner | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._running = 0
        self._started = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the store, schedule every check, then listen (explicit setup, cleanup in reverse)."""
        await self.store.open()
        self._session = new_http_session()
        self.runtimes = build_runtimes(self.config, CheckDeps(http=self._session))
        self.scheduler.start()
        for name, rt in self.runtimes.items():
            self.scheduler.add(name, rt.check.config.interval)
        self._web = web.AppRunner(
            build_app(self), access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._web.setup()
        host, port = self.config.monitor.host_port
        await web.TCPSite(self._web, host, port).start()
        self._started = True
        log.info("started", extra={"checks": len(self.runtimes), "path": self.config.monitor.listen})

    async def stop(self) -> None:
        """Stop scheduling, let running checks finish (bounded), then close in reverse order."""
        self.scheduler.shutdown()
        try:
            await asyncio.wait_for(self._idle.wait(), STOP_GRACE_S)
        except TimeoutError:
            log.warning("stopping with checks still running", extra={"reason": "grace period over"})
        if self._web is not None:
            await self._web.cleanup()
        if self._session is not None:
            await self._session.close()
        await self.store.close()
        self._started = False
        log.info("stopped")

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with `listen = "127.0.0.1:0"`)."""
        assert self._web is not None
        return self._web.addresses[0][1]

    # ------------------------------------------------------------ runs

    async def _run(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is None:
            return
        self._running += 1
        self._idle.clear()
        try:
            result = await run_check(rt.check)
            self._record(rt, result, self.clock.now())
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    def _record(self, rt: CheckRuntime, result: CheckResult, now: float) -> None:
        check = rt.check
        was_up = None if rt.last is None else rt.last.up
        rt.last, rt.last_run = result, now
        m = self.metrics
        m.check_up.labels(check.name, check.type).set(1 if result.up else 0)
        m.check_duration.labels(check.name, check.type).observe(result.latency_ms / 1000)
        m.check_runs.labels(check.name, check.type, result.outcome).inc()
        for metric, value in result.all_samples().items():
            m.check_value.labels(check.name, metric).set(value)
        rt.evaluator.observe(result, now)
        for metric, value in rt.evaluator.derived.items():
            m.check_value.labels(check.name, metric).set(value)
        for metric, status in rt.evaluator.statuses.items():
            firing = status.state in (RowState.WARNING, RowState.CRITICAL)
            m.alert_state.labels(check.name, metric).set(int(status.level) if firing else 0)
        if was_up is not result.up:
            if result.up:
                log.info("check up", extra={"check": check.name})
            else:
                log.warning("check down", extra={"check": check.name, "reason": result.reason})

    def _skipped(self, name: str) -> None:
        rt = self.runtimes.get(name)
        if rt is not None:
            self.metrics.check_runs.labels(name, rt.check.type, "skipped").inc()
            log.debug("run skipped: previous run still going", extra={"check": name})

    # ------------------------------------------------------------ API source

    def checks_view(self) -> dict[str, Any]:
        return summary(self.runtimes.values())

    async def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        if not await self.store.ping():
            return False, "state store unreachable"
        if set(self.scheduler.jobs()) != set(self.runtimes):
            return False, "checks not scheduled"
        return True, "ready"


async def serve(config: Config, stop: asyncio.Event) -> None:
    """Run the daemon until `stop` is set (by a signal handler in the CLI)."""
    daemon = Daemon(config)
    await daemon.start()
    try:
        await stop.wait()
    finally:
        started = time.monotonic()
        await daemon.stop()
        log.debug("stop took", extra={"reason": f"{time.monotonic() - started:.2f}s"})
