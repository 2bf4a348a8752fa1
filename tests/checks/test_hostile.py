"""Hostile servers: each costs a check at most one timeout, fails it with a clear reason, and leaves
no memory or file descriptors behind; in a running daemon, 500 hanging targets at once hold up
neither `/healthz` nor the other checks."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from checks.base import Check, CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.postgres import PostgresCheck, PostgresCheckConfig
from monitor.runner import run_check
from tests.checks import raw_servers
from tests.checks.raw_servers import Handle, RawServers
from tests.fakes.daemon import DaemonProcess, free_port
from tests.fakes.servers import HOST

TIMEOUT_S = 1.0
# How much later than its timeout a run may end on a busy shared machine.
SLACK_S = 0.75
# More than the process may grow by while ten hostile runs (a 2 GiB gzip bomb among them) end.
RSS_GROWTH_MB = 40


@dataclass(frozen=True)
class Case:
    """A hostile server, the check pointed at it, and the reason the run must end with."""

    name: str
    handle: Handle
    kind: str  # "http", "https" or "postgres"
    reason: str  # a regex the whole reason must match
    timeout: bool  # the run ends by its deadline (else well before it)
    options: tuple[tuple[str, str], ...] = ()

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")

    def config(self, port: int) -> dict[str, Any]:
        """The check's table, as the config file would give it."""
        table: dict[str, Any] = {"name": f"hostile-{self.slug}", "timeout": f"{TIMEOUT_S:g}s"}
        if self.kind == "postgres":
            table |= {"type": "postgres", "dsn": f"postgresql://monitor:secret@{HOST}:{port}/app"}
        else:
            table |= {"type": "http", "url": f"{self.kind}://{HOST}:{port}/health"}
        return table | dict(self.options)

    def check(self, port: int, deps: CheckDeps) -> Check:
        config = self.config(port)
        if self.kind == "postgres":
            return PostgresCheck(PostgresCheckConfig.model_validate(config), deps)
        return HttpCheck(HttpCheckConfig.model_validate(config), deps)


TIMED_OUT = re.escape(f"timeout after {TIMEOUT_S:g}s")
CASES = (
    Case("headers dripped", raw_servers.drip_head, "http", TIMED_OUT, True),
    Case("body dripped", raw_servers.drip_body, "http", TIMED_OUT, True),
    Case(
        "endless headers",
        raw_servers.endless_headers,
        "http",
        r"invalid response: (Too many headers received|head over \d+ bytes)",
        False,
    ),
    Case(
        "huge header",
        raw_servers.huge_header,
        "http",
        r"invalid response: header field over 8190 bytes",
        False,
    ),
    Case("TLS no ServerHello", raw_servers.silent, "https", TIMED_OUT, True),
    Case("TLS garbage", raw_servers.tls_garbage, "https", r"TLS: [A-Z_]+", False),
    Case(
        "gzip bomb 2 GiB",
        raw_servers.serve_gzip_bomb(2),
        "http",
        re.escape("body over max_body (1MB)"),
        False,
        (("max_body", "1MB"),),
    ),
    Case(
        "reset mid-body",
        raw_servers.reset_mid_body(framed=True),
        "http",
        r"body: connection reset \(received 100 of 1000 bytes\)",
        False,
    ),
    # Before: a body read until the connection ends took a reset for its end, and passed.
    Case(
        "reset mid-body until close",
        raw_servers.reset_mid_body(framed=False),
        "http",
        r"body: connection reset \(received 100 bytes\)",
        False,
    ),
    Case("not HTTP", raw_servers.not_http, "http", r"invalid response: .+", False),
    Case("PostgreSQL never speaks", raw_servers.silent, "postgres", TIMED_OUT, True),
)


def _fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_each_hostile_server_costs_at_most_one_timeout_with_a_clear_reason(
    raw: RawServers, http_session: aiohttp.ClientSession
) -> None:
    deps = CheckDeps(http=http_session)
    checks = [case.check(await raw.serve(case.handle), deps) for case in CASES]
    fds, rss = _fds(), _rss_mb()

    async def timed(check: Check) -> tuple[str | None, float, str]:
        started = time.perf_counter()
        result = await run_check(check)
        return result.reason, time.perf_counter() - started, result.outcome

    # All at once: the whole table costs about one timeout.
    results = await asyncio.gather(*(timed(check) for check in checks))
    grown_mb = _rss_mb() - rss

    wrong = []
    for case, (reason, took_s, outcome) in zip(CASES, results, strict=True):
        limit_s = TIMEOUT_S + SLACK_S if case.timeout else TIMEOUT_S
        if reason is None or not re.fullmatch(case.reason, reason) or took_s >= limit_s:
            wrong.append(f"{case.name}: {reason!r} ({outcome}) after {took_s:.2f}s (limit {limit_s:g}s)")
        elif (outcome == "timeout") != case.timeout:
            wrong.append(f"{case.name}: outcome {outcome}")
    assert not wrong, "\n".join(wrong)
    assert grown_mb < RSS_GROWTH_MB, f"RSS grew by {grown_mb:.0f} MB"
    await asyncio.sleep(0.05)  # the servers' ends of the aborted connections close
    assert _fds() <= fds, "a run left a socket open"


# ---------------------------------------------------------------- in a running daemon

HANGING = 500
HEALTHY = 20
WINDOW_S = 5.0
SAMPLE_S = 0.25
HEALTHY_INTERVAL_S = 2.0
# Generous: other engineers' tests share the machine's two cores.
HEALTHZ_P99_S = 0.5
ON_TIME_S = 0.25
RESULTS = ("success", "failure", "timeout", "error", "skipped")
# Per process: the interpreter, its libraries, the state store, the listener; each check holds
# one socket at most (a timeout shorter than its interval). How many are in flight at a sample
# varies by dozens, so the bound is on the count, not on its trend: a socket left behind by every
# run of the hostile checks alone passes it within the test.
BASE_FDS = 50


def _toml(table: dict[str, Any]) -> str:
    return "\n[[checks]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())


def _daemon_config(tmp_path: Path, listen: int, hang: int, healthy: int, hostile: list[int]) -> Path:
    text = [
        f'[monitor]\nlisten = "127.0.0.1:{listen}"\nstate = "sqlite:///{tmp_path}/state.db"\n'
        # 500 checks going down log a warning each: more than the unread stdout pipe holds.
        'log_format = "json"\nlog_level = "error"\n'
    ]
    for i in range(HANGING):
        url = f"http://{HOST}:{hang}/health"
        text.append(
            _toml({"name": f"hang-{i:03d}", "type": "http", "url": url, "interval": "1s", "timeout": "900ms"})
        )
    for i in range(HEALTHY):
        url = f"http://{HOST}:{healthy}/health"
        every = f"{HEALTHY_INTERVAL_S:g}s"
        text.append(
            _toml({"name": f"ok-{i:02d}", "type": "http", "url": url, "interval": every, "timeout": every})
        )
    for case, port in zip(CASES, hostile, strict=True):
        text.append(_toml({**case.config(port), "interval": "1s"}))
    path = tmp_path / "monitor.toml"
    path.write_text("".join(text), encoding="utf-8")
    return path


@dataclass
class Samples:
    healthz_s: list[float]
    fds: list[int]
    rss_mb: list[float]


async def _watch(daemon: DaemonProcess, session: aiohttp.ClientSession, seconds: float) -> Samples:
    """`/healthz` as fast as it answers; the daemon's fds and RSS every SAMPLE_S."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    samples = Samples([], [], [])
    end = time.monotonic() + seconds
    next_sample = 0.0
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            samples.fds.append(_fds(pid))
            samples.rss_mb.append(_rss_mb(pid))
            next_sample = now + SAMPLE_S
        started = time.perf_counter()
        async with session.get(f"{daemon.url}/healthz") as answer:
            assert answer.status == 200
            await answer.read()
        samples.healthz_s.append(time.perf_counter() - started)
        await asyncio.sleep(0.02)
    return samples


def _runs(text: str) -> dict[tuple[str, str], float]:
    return {
        (s.labels["check"], s.labels["result"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "monitor_check_runs"
        for s in family.samples
        if s.name == "monitor_check_runs_total"
    }


def _lag_buckets(metrics: str) -> dict[float, float]:
    return {
        float(s.labels["le"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "monitor_scheduler_lag_seconds"
        for s in family.samples
        if s.name.endswith("_bucket")
    }


def _hung(metrics: str) -> float:
    """Runs of the hanging checks that timed out."""
    return sum(
        n
        for (check, result), n in _runs(metrics).items()
        if check.startswith("hang-") and result == "timeout"
    )


@pytest.mark.timeout(120)
async def test_a_daemon_under_500_hanging_checks_stays_responsive_and_bounded(
    raw: RawServers, tmp_path: Path
) -> None:
    hang = await raw.serve(raw_servers.silent)
    healthy = await raw.serve(raw_servers.healthy)
    hostile = [await raw.serve(case.handle) for case in CASES]
    port = free_port()
    daemon = await DaemonProcess(_daemon_config(tmp_path, port, hang, healthy, hostile), port).start()
    try:
        async with aiohttp.ClientSession() as session:
            # Steady state: every hanging check has timed out once, and is in flight again.
            before = await daemon.poll("/metrics", lambda text: _hung(text) >= HANGING, as_json=False)
            watched = await _watch(daemon, session, WINDOW_S)
            _, after = await daemon.get("/metrics")
            status, checks = await daemon.get("/api/v1/checks")
            page, _ = await daemon.get("/")
    finally:
        code = await daemon.stop()
    assert code == 0, daemon.output[-2000:]
    assert (status, page) == (200, 200)

    # The hostile checks failed with their reasons, as the checks alone do.
    views = {view["name"]: view for view in json.loads(checks)["checks"]}
    for case in CASES:
        view = views[f"hostile-{case.slug}"]
        assert view["up"] is False and re.fullmatch(case.reason, view["reason"]), (case.name, view["reason"])

    # The other checks ran every interval, all of them successfully: none waited on a hang.
    runs0, runs1 = _runs(before), _runs(after)
    window_s = WINDOW_S + 0.5
    for i in range(HEALTHY):
        name = f"ok-{i:02d}"
        done = {result: runs1.get((name, result), 0) - runs0.get((name, result), 0) for result in RESULTS}
        assert done["success"] >= int(window_s / HEALTHY_INTERVAL_S) - 1, (name, done)
        assert done["success"] == sum(done.values()), (name, done)
    lag0, lag1 = _lag_buckets(before), _lag_buckets(after)
    on_time = (lag1[ON_TIME_S] - lag0[ON_TIME_S]) / (lag1[math.inf] - lag0[math.inf])
    assert on_time >= 0.99, f"{on_time:.1%} of runs started within {ON_TIME_S:g}s"
    timed_out = _hung(after) - _hung(before)
    assert timed_out >= HANGING * WINDOW_S / 2, timed_out

    # /healthz answers fast through the storm of hangs.
    latencies = sorted(watched.healthz_s)
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    assert p99 < HEALTHZ_P99_S, f"/healthz p99 {p99 * 1000:.0f} ms over {len(latencies)} requests"

    # Bounded: a socket per check at most, and memory not growing from run to run.
    assert max(watched.fds) < HANGING + HEALTHY + len(CASES) + BASE_FDS, watched.fds
    half = len(watched.rss_mb) // 2
    assert max(watched.rss_mb[half:]) <= max(watched.rss_mb[:half]) + 10, watched.rss_mb
