"""The per-check families of /metrics as a scrape reads them, from a running daemon whose checks
run against loopback servers.

Each http check here talks to a ScriptedServer: every request gets the next answer the test
scripted, and a request that finds the script empty waits for the next one. So after the n
scripted runs the next run is held, and a scrape shows exactly those n runs until the test
scripts more (the held run takes the next answer) or the held run times out.

A check's timeout may not exceed its interval, so the scripted checks use timeout == interval:
a held run times out one interval after it started, just after the next due run (which it
makes skipped). The interval (0.5 s) leaves a test about that long, after it saw a run end, to
script the next answer before a held run gives up; each scripted step costs about one
interval, waiting for the next due run.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import textwrap
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import ClassVar, Literal

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from checks import Check, CheckConfig, check_types
from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.models import CheckResult
from tests.checks.raw_servers import response
from tests.fakes.servers import HOST, LoopbackServers

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
RESET = b""  # an answer that is no answer: the connection is reset (no status code)
API = {"check": "backend-api", "type": "http"}
RESULTS = ("success", "failure", "timeout", "error", "skipped")
LE = ["0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "+Inf"]


class ScriptedServer:
    """HTTP on loopback answering each request with the next scripted answer (response bytes,
    or RESET); a request finding the script empty waits until there is one."""

    def __init__(self) -> None:
        self.answered = 0
        self._answers: deque[bytes] = deque()
        self._more = asyncio.Event()
        self._closed = False
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        return f"http://{HOST}:{self._server.sockets[0].getsockname()[1]}/health"

    def then(self, *answers: bytes) -> None:
        self._answers.extend(answers)
        self._more.set()

    async def aclose(self) -> None:
        """Stop; a request still waiting is reset. Closing twice is closing once."""
        self._closed = True
        self._more.set()
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            await self._server.wait_closed()

    async def _next(self) -> bytes:
        while not self._answers:
            if self._closed:
                return RESET
            self._more.clear()
            await self._more.wait()
        return self._answers.popleft()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        answer = await self._next()
        self.answered += 1
        if answer is RESET:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return
        with contextlib.suppress(ConnectionError):
            writer.write(answer)
            await writer.drain()
        writer.close()


def ok(body: bytes = b"") -> bytes:
    return response(200, body)


def status_503() -> bytes:
    return response(503, b"upstream down")


class OddConfig(CheckConfig):
    type: Literal["odd"]
    port: int


class OddCheck(Check):
    """A plugin check reporting an outcome of its own: what the loopback peer says."""

    type: ClassVar[str] = "odd"
    config_model: ClassVar[type[CheckConfig]] = OddConfig
    config: OddConfig

    def target(self) -> str:
        return f"{HOST}:{self.config.port}"

    async def run(self) -> CheckResult:
        reader, writer = await asyncio.open_connection(HOST, self.config.port)
        try:
            said = (await reader.readline()).decode().strip()
        finally:
            writer.close()
        return CheckResult.failure(f"peer says {said}", 1.0, outcome=said)


@contextlib.asynccontextmanager
async def running(toml: str, held_by: ScriptedServer | None = None) -> AsyncIterator[Daemon]:
    """An in-process daemon on a free loopback port with its own registry and in-memory state.
    `held_by` is closed before the daemon stops: the run it holds ends at once."""
    head = '[monitor]\nlisten = "127.0.0.1:0"\nstate = "memory"\n'
    daemon = Daemon(parse_config(head + textwrap.dedent(toml), {}), registry=CollectorRegistry())
    await daemon.start()
    try:
        yield daemon
    finally:
        if held_by is not None:
            await held_by.aclose()
        await daemon.stop()


@pytest.fixture
async def api() -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer()
    yield server
    await server.aclose()


def api_check(url: str, interval: str = "0.5s") -> str:
    """The scripted check; its timeout is its interval, the longest the config allows."""
    return f"""
    [[checks]]
    name = "backend-api"
    type = "http"
    url = "{url}"
    interval = "{interval}"
    timeout = "{interval}"
    """


async def scrape(daemon: Daemon) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{HOST}:{daemon.bound_port}/metrics") as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def runs(samples: Samples, **labels: str) -> dict[str, float | None]:
    return {r: value(samples, "monitor_check_runs_total", result=r, **labels) for r in RESULTS}


def ran(samples: Samples, labels: dict[str, str] = API) -> float:
    """Runs that ended (every result but skipped)."""
    return sum(n or 0 for r, n in runs(samples, **labels).items() if r != "skipped")


async def scrape_until(daemon: Daemon, accept: Callable[[Samples], bool], timeout_s: float = 10.0) -> Samples:
    """Scrape until `accept` takes a scrape; that scrape is the one the test reads."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = await scrape(daemon)
        if accept(samples):
            return samples
        assert time.monotonic() < deadline, f"not met in {timeout_s}s; last scrape: {samples}"
        await asyncio.sleep(0.02)


async def after_runs(daemon: Daemon, n: int) -> Samples:
    """The scrape after the n-th run of backend-api, every one of them answered as scripted."""
    samples = await scrape_until(daemon, lambda s: ran(s) == n)
    timeouts = runs(samples, **API)["timeout"]
    assert timeouts is None, f"{timeouts} held run(s) timed out before the test scripted an answer"
    return samples


async def test_a_sample_the_latest_run_lacks_keeps_its_last_value(api: ScriptedServer) -> None:
    """A reset connection has no status code and no body: the last ones seen stay exported."""
    url = await api.start()
    async with running(api_check(url), held_by=api) as daemon:
        api.then(ok(b"x" * 33))
        samples = await after_runs(daemon, 1)
        check = {"check": "backend-api"}
        assert value(samples, "monitor_check_up", **API) == 1
        assert value(samples, "monitor_check_value", metric="status_code", **check) == 200
        assert value(samples, "monitor_check_value", metric="body_bytes", **check) == 33

        api.then(RESET)
        samples = await after_runs(daemon, 2)
        assert value(samples, "monitor_check_up", **API) == 0
        assert value(samples, "monitor_check_value", metric="up", **check) == 0
        latency_ms = value(samples, "monitor_check_value", metric="latency_ms", **check)
        assert latency_ms is not None and 0 < latency_ms < 5000
        assert value(samples, "monitor_check_value", metric="status_code", **check) == 200
        assert value(samples, "monitor_check_value", metric="body_bytes", **check) == 33

        # A later run with a status code replaces it; a 503's body is not read: body_bytes stays.
        api.then(status_503())
        samples = await after_runs(daemon, 3)
        assert value(samples, "monitor_check_value", metric="status_code", **check) == 503
        assert value(samples, "monitor_check_value", metric="body_bytes", **check) == 33


async def test_runs_by_result_and_histogram_of_fast_runs(api: ScriptedServer) -> None:
    url = await api.start()
    async with running(api_check(url, interval="0.3s"), held_by=api) as daemon:
        api.then(ok(b"{}"), ok(b"{}"), status_503(), RESET, status_503())
        # The sixth run is held until its timeout (0.3 s, its interval), which comes just after
        # the next due run: that one is skipped. The scrape is taken before the seventh run,
        # held as well, times out (two intervals later).
        samples = await scrape_until(daemon, lambda s: ran(s) == 6 and (runs(s, **API)["skipped"] or 0) >= 1)
        counted = runs(samples, **API)
        assert {r: counted[r] for r in RESULTS[:4]} == {
            "success": 2,
            "failure": 3,
            "timeout": 1,
            "error": None,
        }
        bucket = "monitor_check_duration_seconds_bucket"
        # Skipped runs did not run: only the five answered and the one timed out are observed.
        assert value(samples, "monitor_check_duration_seconds_count", **API) == 6
        assert value(samples, bucket, le="+Inf", **API) == 6
        assert value(samples, bucket, le="0.25", **API) == 5  # loopback answers are fast
        assert value(samples, bucket, le="0.5", **API) == 6  # the timeout ended at about 0.3 s
        cumulative = [value(samples, bucket, le=le, **API) for le in LE]
        assert cumulative == sorted(cumulative)
        duration_sum = value(samples, "monitor_check_duration_seconds_sum", **API)
        assert duration_sum is not None and 0.3 < duration_sum < 5 * 0.25 + 0.5


async def test_timeouts_are_their_own_result_and_bucket() -> None:
    """A peer that never answers: each run ends at its 0.3 s deadline, which falls just after
    the next due run (every 0.3 s, the timeout may not be longer): that run finds it still going
    and is skipped."""
    async with LoopbackServers() as servers:

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the client gives up
            writer.close()

        port = await servers.tcp(never_answer)
        toml = f"""
        [[checks]]
        name = "slow-api"
        type = "http"
        url = "http://{HOST}:{port}/health"
        interval = "0.3s"
        timeout = "0.3s"
        """
        async with running(toml) as daemon:
            slow = {"check": "slow-api", "type": "http"}
            samples = await scrape_until(
                daemon, lambda s: ran(s, slow) >= 2 and (runs(s, **slow)["skipped"] or 0) >= 1
            )
    counted = runs(samples, **slow)
    assert counted["timeout"] == ran(samples, slow)
    assert (counted["success"], counted["failure"], counted["error"]) == (None, None, None)
    bucket = "monitor_check_duration_seconds_bucket"
    n = counted["timeout"]
    assert value(samples, bucket, le="0.25", **slow) == 0  # none ended before its deadline
    assert value(samples, bucket, le="1.0", **slow) == n
    assert value(samples, "monitor_check_duration_seconds_count", **slow) == n
    duration_sum = value(samples, "monitor_check_duration_seconds_sum", **slow)
    assert duration_sum is not None and 0.3 * n <= duration_sum < 1.0 * n
    assert value(samples, "monitor_check_up", **slow) == 0


async def test_a_plugin_outcome_counts_as_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(check_types(), "odd", OddCheck)
    async with LoopbackServers() as servers:

        async def say_degraded(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"degraded\n")
            await writer.drain()
            writer.close()

        port = await servers.tcp(say_degraded)
        toml = f'[[checks]]\nname = "queue"\ntype = "odd"\nport = {port}\ninterval = "0.05s"\n'
        async with running(toml) as daemon:
            queue = {"check": "queue", "type": "odd"}
            samples = await scrape_until(daemon, lambda s: ran(s, queue) >= 1)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://{HOST}:{daemon.bound_port}/metrics") as resp,
            ):
                text = await resp.text()
    counted = runs(samples, **queue)
    assert counted["failure"] == ran(samples, queue)  # not a result of SPEC's: a failure
    assert 'result="degraded"' not in text
    assert value(samples, "monitor_check_up", **queue) == 0


async def test_alert_state_goes_0_then_2_then_back_to_0(api: ScriptedServer) -> None:
    """The built-in `up` row (critical, trigger_after 2): pending after one failed run, critical
    after two, ok after a successful one."""
    url = await api.start()
    async with running(api_check(url), held_by=api) as daemon:
        state = {"check": "backend-api", "metric": "up"}
        steps = [(ok(), 0, 0), (status_503(), 0, 0), (status_503(), 2, 1), (ok(), 0, 0)]
        seen = []
        for n, (answer, _, _) in enumerate(steps, start=1):
            api.then(answer)
            samples = await after_runs(daemon, n)
            seen.append(
                (
                    value(samples, "monitor_alert_state", **state),
                    value(samples, "monitor_alerts_firing", severity="critical"),
                )
            )
        assert seen == [(level, firing) for _, level, firing in steps]
        assert value(samples, "monitor_check_up", **API) == 1
