"""A state store that cannot be used: `monitor run` refuses it at start in one line (exit 2, at
once); one that fails while running is reported, counted and retried while the checks go on."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from monitor.config import load_config
from monitor.daemon import Daemon
from tests.fakes.postgres import PostgresCluster
from tests.fakes.receivers import Receiver
from tests.test_daemon_e2e import free_port

MONITOR = [sys.executable, "-m", "monitor"]
DEADLINE_S = 20.0  # today's hang is caught as a timeout, not waited on for ever
SECRET = "hunter2-not-shown"


# ---------------------------------------------------------------- at start


def run_with_state(tmp_path: Path, state: str) -> subprocess.CompletedProcess[str]:
    """`monitor run` with `state`; killed if it is still going after DEADLINE_S."""
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[monitor]
listen = "127.0.0.1:{free_port()}"
state = "{state}"
log_format = "json"

[[checks]]
name = "self"
type = "tcp"
host = "127.0.0.1"
port = 9
"""
    )
    return subprocess.run(
        [*MONITOR, "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
        cwd=tmp_path,
    )


def garbage_file(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "monitor-state.db"
    path.write_bytes(b"this is not a database, only some text that someone left here\n" * 64)
    return f"sqlite:///{path}", f"state: {path} is not an SQLite database"


def directory(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "monitor-state.db"
    path.mkdir()
    return f"sqlite:///{path}", f"state: {path} is a directory"


@pytest.mark.parametrize("make", [garbage_file, directory], ids=["garbage-file", "directory"])
def test_an_unusable_sqlite_state_exits_2_at_once_with_one_line(
    tmp_path: Path, make: Callable[[Path], tuple[str, str]]
) -> None:
    state, expected = make(tmp_path)
    started = time.monotonic()
    result = run_with_state(tmp_path, state)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [expected]
    assert "Traceback" not in result.stdout + result.stderr
    assert time.monotonic() - started < 10


def test_an_unreachable_postgresql_state_exits_2_without_showing_the_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = run_with_state(tmp_path, f"postgresql://monitor:{SECRET}@127.0.0.1:{port}/monitor")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"state: postgresql://***@127.0.0.1:{port}/monitor: connection refused"
    ]
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_a_postgresql_state_refusing_the_password_exits_2_without_showing_it(
    tmp_path: Path, pg_cluster: PostgresCluster
) -> None:
    result = run_with_state(tmp_path, pg_cluster.dsn(password=SECRET))
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith(f"state: postgresql://***@127.0.0.1:{pg_cluster.port}/postgres: ")
    assert "password authentication failed" in line
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# ---------------------------------------------------------------- while running


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        body = await (resp.json() if resp.content_type == "application/json" else resp.text())
        return resp.status, body


async def until(condition: Callable[[], Awaitable[bool]], what: str, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while not await condition():
        if time.monotonic() > end:
            pytest.fail(f"not within {deadline_s}s: {what}")
        await asyncio.sleep(0.1)


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


class Running:
    """A daemon started through its public entry point, read through its HTTP interface."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.url = f"http://127.0.0.1:{daemon.bound_port}"

    async def ready(self) -> tuple[int, str]:
        status, body = await get(self.url + "/readyz")
        return status, body["status"]

    async def runs(self, check: str) -> float:
        _, text = await get(self.url + "/metrics")
        found = samples(text, "monitor_check_runs_total")
        return sum(v for labels, v in found.items() if dict(labels)["check"] == check)

    async def store_errors(self) -> float:
        _, text = await get(self.url + "/metrics")
        return sum(samples(text, "monitor_store_errors_total").values())

    async def firing(self, check: str) -> bool:
        _, body = await get(self.url + "/api/v1/alerts")
        return any(a["check"] == check and a["state"] == "firing" for a in body["alerts"])


@contextlib.asynccontextmanager
async def tcp_target() -> AsyncIterator[tuple[int, Callable[[], Awaitable[None]]]]:
    """A port that accepts connections until the returned `stop` is awaited."""

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)

    async def stop() -> None:
        server.close()
        await server.wait_closed()

    try:
        yield server.sockets[0].getsockname()[1], stop
    finally:
        await stop()


@contextlib.asynccontextmanager
async def started(tmp_path: Path, state: str, steady: int, flaky: int, hook: str) -> AsyncIterator[Running]:
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[monitor]
listen = "127.0.0.1:0"
state = "{state}"

[[checks]]
name = "steady"
type = "tcp"
host = "127.0.0.1"
port = {steady}
interval = "0.2s"

[[checks]]
name = "flaky"
type = "tcp"
host = "127.0.0.1"
port = {flaky}
interval = "0.2s"

[notifiers.hook]
type = "webhook"
url = "{hook}/hook"

[[routes]]
notify = ["hook"]
"""
    )
    daemon = Daemon(load_config(config), registry=CollectorRegistry(), config_path=str(config))
    await daemon.start()
    try:
        yield Running(daemon)
    finally:
        await daemon.stop()


@dataclass
class Fault:
    reason: str  # what /readyz says meanwhile
    repair: Callable[[], None]
    only_writes_see_it: bool  # else /readyz's own read finds it


def replaced_by_a_directory(db: Path) -> Fault:
    """SQLite would go on writing to the removed file: the daemon notices, and makes it again
    once the directory is gone."""
    db.unlink()
    db.mkdir()
    # "... was replaced by a directory", then "... is a directory" when it tries to reopen it
    return Fault(str(db), db.rmdir, only_writes_see_it=False)


def locked(db: Path) -> Fault:
    """Another process holds the write lock (an operator's `sqlite3` shell, say)."""
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("begin exclusive")

    def release() -> None:
        other.execute("rollback")
        other.close()

    return Fault(f"{db} is locked by another process", release, only_writes_see_it=True)


@pytest.mark.parametrize(
    "fault", [replaced_by_a_directory, locked], ids=["replaced-by-a-directory", "locked"]
)
async def test_a_failing_sqlite_store_is_reported_and_retried_and_loses_no_page(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fault: Callable[[Path], Fault]
) -> None:
    db = tmp_path / "state" / "monitor-state.db"
    caplog.set_level(logging.INFO, logger="monitor.store")
    async with (
        tcp_target() as (steady, _),
        tcp_target() as (flaky, stop_flaky),
        Receiver() as hook,
        started(tmp_path, f"sqlite:///{db}", steady, flaky, hook.url) as monitor,
    ):
        await until(lambda: _is(monitor.ready(), (200, "ready")), "ready")
        errors_before = await monitor.store_errors()
        broken = fault(db)

        async def unready() -> bool:
            status, why = await monitor.ready()
            return status == 503 and broken.reason in why

        # The flaky check's up alert is a write the store must take while it fails.
        if broken.only_writes_see_it:
            await stop_flaky()
        await until(unready, f"/readyz 503 saying {broken.reason!r}")
        if not broken.only_writes_see_it:
            await stop_flaky()
        assert await monitor.store_errors() > errors_before
        await until(lambda: monitor.firing("flaky"), "flaky's up alert firing")
        runs = await monitor.runs("steady")
        await until(lambda: _more(monitor.runs("steady"), runs + 3), "steady's runs going on")
        assert (await get(monitor.url + "/healthz"))[0] == 200
        assert (await monitor.ready())[0] == 503
        assert hook.requests == []  # nothing is sent before it is stored

        broken.repair()
        await until(lambda: _is(monitor.ready(), (200, "ready")), "/readyz 200 after the store recovers")
        [page] = await hook.wait_for(1, timeout_s=10)
        assert page.json["status"] == "firing"
        assert (page.json["alert"]["check"], page.json["alert"]["metric"]) == ("flaky", "up")
        assert db.is_file()

    logged = [r.getMessage() for r in caplog.records if r.name == "monitor.store"]
    assert logged == ["state store failing", "state store recovered"]  # once each, not per write


class Forwarder:
    """A TCP hop in front of a server: `cut()` drops every connection and refuses new ones, as
    a server that went away; `restore()` listens again on the same port."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target)
        self._writers |= {client_w, server_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            writer.transport.abort()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))


@pytest.fixture
async def pg_state(pg_cluster: PostgresCluster) -> AsyncIterator[tuple[Forwarder, str]]:
    """A database of its own, reached through a Forwarder; yields it and the DSN through it."""
    async with pg_cluster.database("store_faults") as db:
        forwarder = Forwarder(pg_cluster.port)
        await forwarder.restore()
        try:
            yield forwarder, pg_cluster.dsn(database=db, port=forwarder.port)
        finally:
            await forwarder.cut()


async def test_postgresql_gone_while_running_is_reported_retried_and_loses_no_page(
    tmp_path: Path, pg_state: tuple[Forwarder, str], caplog: pytest.LogCaptureFixture
) -> None:
    forwarder, dsn = pg_state
    caplog.set_level(logging.INFO, logger="monitor.store")
    async with (
        tcp_target() as (steady, _),
        tcp_target() as (flaky, stop_flaky),
        Receiver() as hook,
        started(tmp_path, dsn, steady, flaky, hook.url) as monitor,
    ):
        await until(lambda: _is(monitor.ready(), (200, "ready")), "ready")
        await forwarder.cut()

        async def unready() -> bool:
            status, why = await monitor.ready()
            return status == 503 and f"127.0.0.1:{forwarder.port}" in why

        await until(unready, "/readyz 503 naming the server")
        assert "***@" in (await monitor.ready())[1]
        assert await monitor.store_errors() > 0

        await stop_flaky()
        await until(lambda: monitor.firing("flaky"), "flaky's up alert firing")
        runs = await monitor.runs("steady")
        await until(lambda: _more(monitor.runs("steady"), runs + 3), "steady's runs going on")
        assert (await get(monitor.url + "/healthz"))[0] == 200
        assert hook.requests == []

        await forwarder.restore()
        await until(lambda: _is(monitor.ready(), (200, "ready")), "/readyz 200 after the server is back")
        [page] = await hook.wait_for(1, timeout_s=10)
        assert (page.json["status"], page.json["alert"]["check"]) == ("firing", "flaky")

    logged = [r.getMessage() for r in caplog.records if r.name == "monitor.store"]
    assert logged == ["state store failing", "state store recovered"]


async def _is(value: Awaitable[Any], expected: Any) -> bool:
    return await value == expected


async def _more(value: Awaitable[float], than: float) -> bool:
    return await value >= than
