"""The fault harness of HA.md (c): `monitor run` replicas, each reaching PostgreSQL through its own
TCP proxy (cut, blackhole, heal), a toggled loopback target, a fake PagerDuty, and a scraper that
watches who leads each shard every 250 ms.

    lab = HaLab(pg_cluster, database, tmp_path)          # the `ha_lab` fixture builds and closes it
    a, b = await lab.start(2)
    leader = await lab.wait_leader(0)
    lab.target.down("backend-api")
    await lab.pagerduty.wait_event("trigger")
    leader.kill()
    ...
    await lab.finish()        # SIGTERM all, then the invariants: one leader, one trigger, exit 0
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import quote

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.postgres import SUPERUSER, PostgresCluster
from tests.fakes.receivers import pagerduty_problems

HOST = "127.0.0.1"
ROUTING_KEY = "ha-test-routing-key"
SCRAPE_INTERVAL_S = 0.25


def free_port() -> int:
    """A loopback TCP port nobody listens on right now (the replica binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- the proxy


ProxyState = Literal["open", "cut", "blackhole"]


class _Link:
    """One client connection and its upstream, pumped both ways while the proxy flows."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        """Reset both sides at once (no FIN handshake): what a dead peer or a firewall gives."""
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()
        for task in self.tasks:
            task.cancel()


class PgProxy:
    """A TCP proxy on 127.0.0.1:`port` to `upstream_port`, in the test's event loop.

    - `cut()`: reset every connection and refuse new ones (accepted, then reset at once);
    - `blackhole()`: keep every socket open but move no byte either way (new connections are
      accepted and held), as a partition looks to both ends: the kernel still ACKs, nothing answers;
    - `heal()`: flow again; a blackholed connection resumes with nothing lost.
    """

    def __init__(self, upstream_port: int, upstream_host: str = HOST) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.state: ProxyState = "open"
        self.connections = 0  # accepted so far, for tests
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            await self._server.wait_closed()
            self._server = None

    def cut(self) -> None:
        """Close every connection (reset) and refuse new ones until `heal()`."""
        self.state = "cut"
        self._flowing.set()  # pumps blocked by a blackhole wake up, see the reset and end
        self._drop_all()

    def blackhole(self) -> None:
        """Stop forwarding in both directions; sockets stay open (see the class docstring)."""
        self.state = "blackhole"
        self._flowing.clear()

    def heal(self) -> None:
        """Forward again: new connections are accepted, held ones flow."""
        self.state = "open"
        self._flowing.set()

    @property
    def open_links(self) -> int:
        """Connections open right now (held ones included)."""
        return len(self._links)

    def _drop_all(self) -> None:
        for link in list(self._links):
            link.abort()
        self._links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.state == "cut":
            writer.transport.abort()
            return
        link = _Link(writer)
        self._links.add(link)
        try:
            await self._flowing.wait()  # a connection made during a blackhole waits, unanswered
            if self.state == "cut" or link not in self._links:
                return
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            link.upstream = up_writer
            link.tasks = [
                asyncio.create_task(self._pump(reader, up_writer)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            link.abort()
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._flowing.wait()  # while blackholed, bytes stay unread in the kernel
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()  # a blackhole begun during the read holds this chunk
                if self.state == "cut":
                    return
                writer.write(data)
                await writer.drain()


# ---------------------------------------------------------------- pgbouncer


PoolMode = Literal["session", "transaction"]


class PgBouncer:
    """The Debian `pgbouncer` between a replica (or its proxy) and PostgreSQL, for HA.md fault 12:
    `PgBouncer(pg, "transaction")`, then `lab.start(1, upstream_port=bouncer.port)`. Every
    database of `pg` is served; the superuser's password authenticates both hops (SCRAM)."""

    def __init__(self, pg: PostgresCluster, pool_mode: PoolMode) -> None:
        self.pg = pg
        self.pool_mode = pool_mode
        self.port = 0
        self._dir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @staticmethod
    def binary() -> str | None:
        """Where pgbouncer is installed (scripts/test installs it), None when it is not."""
        return next((p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)

    async def start(self) -> Self:
        binary = self.binary()
        assert binary is not None, "pgbouncer is not installed (scripts/test installs it)"
        self._dir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="monitor-pgbouncer-"))
        self.port = free_port()
        (self._dir / "userlist.txt").write_text(f'"{SUPERUSER}" "{self.pg.password}"\n')
        (self._dir / "pgbouncer.ini").write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = host={HOST} port={self.pg.port}",
                    "[pgbouncer]",
                    f"listen_addr = {HOST}",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = scram-sha-256",
                    f"auth_file = {self._dir / 'userlist.txt'}",
                    f"pool_mode = {self.pool_mode}",
                    "max_client_conn = 100",
                    "default_pool_size = 10",
                    f"logfile = {self._dir / 'pgbouncer.log'}",
                    "",
                ]
            )
        )
        # pgbouncer refuses to run as root: as the fixture's PostgreSQL does, run it as postgres.
        as_root = os.geteuid() == 0
        if as_root:
            for path in [self._dir, *self._dir.iterdir()]:
                shutil.chown(path, SUPERUSER, SUPERUSER)
        self._proc = await asyncio.create_subprocess_exec(
            binary,
            str(self._dir / "pgbouncer.ini"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            user=SUPERUSER if as_root else None,
            group=SUPERUSER if as_root else None,
            extra_groups=[] if as_root else None,
        )
        end = time.monotonic() + 10
        while time.monotonic() < end:
            assert self._proc.returncode is None, f"pgbouncer exited:\n{self.log()}"
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(HOST, self.port)
                writer.close()
                return self
            await asyncio.sleep(0.05)
        raise AssertionError(f"pgbouncer not listening within 10s:\n{self.log()}")

    def log(self) -> str:
        try:
            return (self._dir / "pgbouncer.log").read_text(errors="replace") if self._dir else ""
        except OSError:
            return ""

    async def aclose(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await asyncio.wait_for(self._proc.wait(), 10)
        self._proc = None
        if self._dir is not None:
            await asyncio.to_thread(shutil.rmtree, self._dir, True)
            self._dir = None


# ---------------------------------------------------------------- the target


class Target:
    """A loopback HTTP target: `GET /{check}` answers 200 while the check is up, 503 when down.

    Every check starts up. `hits` counts requests by (check, replica) from the `X-Replica` header
    the launcher's checks send, so a test can tell which replica ran which check.
    """

    def __init__(self) -> None:
        self.url = ""
        self.hits: Counter[tuple[str, str]] = Counter()
        self._down: set[str] = set()
        self._runner: web.AppRunner | None = None

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_get("/{check}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.url = f"http://{HOST}:{self._runner.addresses[0][1]}"
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def down(self, *checks: str) -> None:
        """These checks answer 503 from now on."""
        self._down.update(checks)

    def up(self, *checks: str) -> None:
        """These checks answer 200 again."""
        self._down.difference_update(checks)

    def is_up(self, check: str) -> bool:
        """Whether `check` answers 200 now."""
        return check not in self._down

    def runners(self, check: str) -> set[str]:
        """The replicas that have run `check`."""
        return {replica for (name, replica), n in self.hits.items() if name == check and n}

    async def _handle(self, request: web.Request) -> web.Response:
        check = request.match_info["check"]
        self.hits[(check, request.headers.get("X-Replica", ""))] += 1
        if check in self._down:
            return web.json_response({"status": "down"}, status=503)
        return web.json_response({"status": "ok"})


# ---------------------------------------------------------------- the fake PagerDuty


@dataclass(frozen=True)
class PdEvent:
    """One Events v2 request as PagerDuty saw it. `t` is time.monotonic() at arrival; `status` the
    answer given (None: the sender went away before an answer, e.g. killed while it was held);
    `since` the episode's start (`payload.custom_details.since`)."""

    t: float
    dedup_key: str
    event_action: str
    since: str | None
    status: int | None
    body: Any = field(repr=False, compare=False, default=None)

    @property
    def accepted(self) -> bool:
        """PagerDuty took it (202)."""
        return self.status == 202

    @property
    def episode(self) -> tuple[str, str | None]:
        """(dedup_key, since): one outage of one alert."""
        return (self.dedup_key, self.since)


class FakePagerDuty:
    """A PagerDuty Events API v2 receiver at `url` (POST `url`); answers 202, or on demand:

    - `hold()`: requests wait unanswered until `release()` (`wait_held(n)` waits for them);
    - `fail(status=503, count=None)`: the next `count` requests (all, with None) get `status`
      until `accept()`.

    A body that breaks the Events v2 rules is answered 400 and listed in `problems`.
    """

    def __init__(self) -> None:
        self.url = ""
        self.events: list[PdEvent] = []
        self.problems: list[str] = []
        self._released = asyncio.Event()
        self._released.set()
        self._fail_status = 0
        self._fail_left: float = 0
        self._held = 0
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._handle)
        # handler_cancellation: a held request whose sender dies is recorded with status None.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, 0).start()
        self.url = f"http://{HOST}:{self._runner.addresses[0][1]}/v2/enqueue"
        return self

    async def aclose(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def hold(self) -> None:
        """Hold every request from now on, unanswered, until `release()`."""
        self._released.clear()

    def release(self) -> None:
        """Answer the held requests (and the next ones) again."""
        self._released.set()

    def fail(self, status: int = 503, count: int | None = None) -> None:
        """Answer `status` to the next `count` requests (every one, with None) until `accept()`."""
        self._fail_status = status
        self._fail_left = math.inf if count is None else count

    def accept(self) -> None:
        """Answer 202 again."""
        self._fail_left = 0

    @property
    def held(self) -> int:
        """Requests waiting for `release()` right now."""
        return self._held

    def of(self, action: str | None = None, *, accepted: bool | None = None) -> list[PdEvent]:
        """Events with that action (all when None), only accepted (or only not) ones if asked."""
        return [
            e
            for e in self.events
            if (action is None or e.event_action == action) and (accepted is None or e.accepted == accepted)
        ]

    async def wait_event(
        self, action: str, count: int = 1, *, accepted: bool | None = None, timeout_s: float = 20.0
    ) -> list[PdEvent]:
        """Wait until `count` events of `action` have been answered (or dropped); returns them."""
        await self._wait(
            lambda: len(self.of(action, accepted=accepted)) >= count, timeout_s, f"{count} {action}"
        )
        return self.of(action, accepted=accepted)

    async def wait_held(self, count: int = 1, timeout_s: float = 20.0) -> None:
        """Wait until `count` requests are held."""
        await self._wait(lambda: self._held >= count, timeout_s, f"{count} held request(s)")

    async def _wait(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(ready)
        except TimeoutError:
            raise AssertionError(f"pagerduty: no {what} within {timeout_s}s; got {self.events}") from None

    async def _record(self, event: PdEvent) -> None:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    async def _handle(self, request: web.Request) -> web.Response:
        t = time.monotonic()
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.problems.append(f"body is not a JSON object: {await request.text()!r}")
            return web.json_response({"status": "invalid event", "errors": ["not JSON"]}, status=400)
        problems = pagerduty_problems(body)
        payload = body.get("payload")
        details = (payload.get("custom_details") if isinstance(payload, dict) else None) or {}
        event = {
            "t": t,
            "dedup_key": str(body.get("dedup_key")),
            "event_action": str(body.get("event_action")),
            "since": details.get("since"),
            "body": body,
        }
        if problems:
            self.problems.extend(problems)
            await self._record(PdEvent(**event, status=400))
            return web.json_response({"status": "invalid event", "errors": problems}, status=400)
        status: int | None = None
        try:
            if not self._released.is_set():
                async with self._changed:
                    self._held += 1
                    self._changed.notify_all()
                try:
                    await self._released.wait()
                finally:
                    self._held -= 1
            if self._fail_left > 0:
                self._fail_left -= 1
                status = self._fail_status
                return web.json_response({"status": "unavailable"}, status=status)
            status = 202
            return web.json_response(
                {"status": "success", "message": "Event processed", "dedup_key": event["dedup_key"]},
                status=202,
            )
        finally:
            # Shielded: on a dropped sender this runs while the handler is being cancelled.
            await asyncio.shield(self._record(PdEvent(**event, status=status)))


# ---------------------------------------------------------------- one replica


class Replica:
    """One `monitor run` process with its own config, HTTP port, log file and PostgreSQL proxy.

    Signals: `kill()` (SIGKILL), `pause()` / `resume()` (SIGSTOP / SIGCONT), `terminate()`
    (SIGTERM); `wait_exit()` returns the exit code, kept in `returncode`.
    """

    def __init__(
        self, name: str, shard: int, config: Path, port: int, proxy: PgProxy, env: dict[str, str]
    ) -> None:
        self.name = name
        self.shard = shard
        self.config = config
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.proxy = proxy
        self.env = env
        self.log_path = config.with_suffix(".log")
        self.proc: asyncio.subprocess.Process | None = None
        self.killed = False  # kill -9 by the test: its exit code is not the replica's doing
        self.paused = False

    def __repr__(self) -> str:
        return f"Replica({self.name}, shard {self.shard})"

    async def start(self, wait_ready: bool = True, timeout_s: float = 30.0) -> Self:
        """Start the process; with `wait_ready`, return once `/readyz` answers 200."""
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "monitor", "run", "-c", str(self.config),
                env={**os.environ, **self.env}, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
        self.killed = self.paused = False
        if wait_ready:
            await self.wait_ready(timeout_s)
        return self

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until `/readyz` answers 200; fails with the log if the process exits."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.returncode is not None:
                raise AssertionError(f"{self.name} exited with {self.returncode}:\n{self.log()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                status, _ = await self.request("GET", "/readyz")
                if status == 200:
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name}: /readyz not 200 within {timeout_s}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        """The process id (the replica must have been started)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, None while running (or never started)."""
        return None if self.proc is None else self.proc.returncode

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.returncode is None

    def kill(self) -> None:
        """kill -9: no cleanup, as a crash or an OOM kill."""
        self.killed = True
        self._signal(signal.SIGKILL)

    def pause(self) -> None:
        """SIGSTOP: a frozen VM or a long GC pause; sockets stay open, nothing answers."""
        self.paused = True
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`."""
        self.paused = False
        self._signal(signal.SIGCONT)

    def terminate(self) -> None:
        """SIGTERM: a graceful stop (a rolling update)."""
        if self.paused:
            self.resume()
        self._signal(signal.SIGTERM)

    async def wait_exit(self, timeout_s: float = 15.0) -> int:
        """The exit code; fails if the process is still running after `timeout_s`."""
        assert self.proc is not None
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            raise AssertionError(f"{self.name} still running {timeout_s}s later:\n{self.log()}") from None

    async def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait: the exit code."""
        if self.running:
            self.terminate()
        return await self.wait_exit(timeout_s)

    def log(self) -> str:
        """Everything the process wrote (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    async def request(self, method: str, path: str, timeout_s: float = 2.0, **kwargs: Any) -> tuple[int, Any]:
        """One HTTP request to the replica: (status, parsed JSON or text)."""
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, self.url + path, **kwargs) as resp,
        ):
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def get_json(self, path: str) -> Any:
        """GET `path`, asserting a 200: the parsed body."""
        status, body = await self.request("GET", path)
        assert status == 200, f"{self.name} GET {path}: {status} {body}"
        return body

    async def metrics(self, timeout_s: float = 1.0) -> dict[str, list[tuple[dict[str, str], float]]]:
        """The replica's /metrics: sample name -> [(labels, value)]."""
        status, text = await self.request("GET", "/metrics", timeout_s)
        assert status == 200, f"{self.name} /metrics: {status}"
        samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name].append((sample.labels, sample.value))
        return samples

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (the first that carries `labels`), None when absent."""
        for have, value in (await self.metrics()).get(name, []):
            if all(have.get(k) == v for k, v in labels.items()):
                return value
        return None

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            os.kill(self.pid, sig)


# ---------------------------------------------------------------- the scraper


@dataclass(frozen=True)
class Scrape:
    """One round over every replica: for each shard, who said they lead, and epochs seen."""

    t: float
    leaders: dict[int, tuple[str, ...]]
    epochs: dict[str, float]  # replica -> monitor_cluster_epoch of its shard
    answered: frozenset[str]


class LeaderScraper:
    """Polls every running replica's /metrics each 250 ms (`monitor_cluster_leader{shard}`); a
    round in which more than one replica leads a shard is a violation. A replica that does not
    answer (paused, dead) counts as not leading, as Prometheus would see it."""

    def __init__(
        self, replicas: Callable[[], Sequence[Replica]], interval_s: float = SCRAPE_INTERVAL_S
    ) -> None:
        self._replicas = replicas
        self.interval_s = interval_s
        self.rounds: list[Scrape] = []
        self.violations: list[Scrape] = []
        self.errors: list[str] = []  # rounds that could not be read (a metric the harness misreads)
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def latest(self) -> Scrape | None:
        """The last scrape round, None before the first."""
        return self.rounds[-1] if self.rounds else None

    async def wait(self, ready: Callable[[Scrape], bool], timeout_s: float, what: str) -> Scrape:
        """The first round from now on for which `ready` holds."""
        start = len(self.rounds)
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: any(ready(r) for r in self.rounds[start:]))
        except TimeoutError:
            raise AssertionError(f"{what} not seen within {timeout_s}s; last round: {self.latest}") from None
        return next(r for r in self.rounds[start:] if ready(r))

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self._round(began)
            except Exception as exc:
                self.errors.append(repr(exc))
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - began)))

    async def _round(self, began: float) -> None:
        replicas = [r for r in self._replicas() if r.running and not r.paused]
        results = await asyncio.gather(*(self._one(r) for r in replicas))
        leaders: dict[int, list[str]] = defaultdict(list)
        epochs: dict[str, float] = {}
        answered = set()
        for replica, samples in zip(replicas, results, strict=True):
            if samples is None:
                continue
            answered.add(replica.name)
            for labels, value in samples.get("monitor_cluster_leader", []):
                if value >= 1:
                    leaders[_shard_label(labels, replica)].append(replica.name)
            for labels, value in samples.get("monitor_cluster_epoch", []):
                if _shard_label(labels, replica) == replica.shard:
                    epochs[replica.name] = value
        scrape = Scrape(began, {s: tuple(n) for s, n in leaders.items()}, epochs, frozenset(answered))
        async with self._changed:
            self.rounds.append(scrape)
            if any(len(names) > 1 for names in scrape.leaders.values()):
                self.violations.append(scrape)
            self._changed.notify_all()

    async def _one(self, replica: Replica) -> dict[str, list[tuple[dict[str, str], float]]] | None:
        try:
            return await replica.metrics(timeout_s=self.interval_s * 2)
        except (aiohttp.ClientError, TimeoutError, AssertionError, ValueError):
            return None


def _shard_label(labels: dict[str, str], replica: Replica) -> int:
    """The `shard` label as `i` or `i/N`; the replica's own shard when it has none."""
    value = labels.get("shard")
    return replica.shard if value is None else int(value.partition("/")[0])


# ---------------------------------------------------------------- the launcher


DEFAULT_CHECKS = ("backend-api",)


class HaLab:
    """PostgreSQL database, target, fake PagerDuty, scraper, and the replicas of one test.

    `start(n, shards=1, ...)` writes one config per replica (state through its own proxy,
    `[cluster] mode = "ha"`, `failover`, one http check per name in `checks` at `interval = "1s"`
    with the `up` row at `trigger_after = 2`, every alert routed to PagerDuty) and starts
    them. Replica i is on shard `i % shards` unless `placement` says otherwise.
    """

    def __init__(self, pg: PostgresCluster, database: str, tmp_path: Path) -> None:
        self.pg = pg
        self.database = database
        self.dir = tmp_path
        self.target = Target()
        self.pagerduty = FakePagerDuty()
        self.replicas: list[Replica] = []
        self.scraper = LeaderScraper(lambda: self.replicas)
        self.exit_codes: dict[str, int] = {}
        self._closed = False

    async def open(self) -> Self:
        """Start the target, the fake PagerDuty and the scraper (the fixture does)."""
        await self.target.start()
        await self.pagerduty.start()
        self.scraper.start()
        return self

    @property
    def dsn(self) -> str:
        """The test database, direct (not through a proxy): for the test's own queries."""
        return self.pg.dsn(database=self.database)

    def config_text(
        self,
        name: str,
        port: int,
        proxy_port: int,
        *,
        mode: str = "ha",
        shards: int | None = 1,
        shard: int = 0,
        failover: str = "6s",
        checks: Iterable[str] = DEFAULT_CHECKS,
        monitor_extra: str = "",
        extra: str = "",
    ) -> str:
        """One replica's monitor.toml. `monitor_extra` goes into [monitor]; `extra` is appended
        (more tables, or `depends_on` for the last check's table)."""
        state = self.pg.dsn(database=self.database, port=proxy_port)
        lines = [
            "[monitor]",
            f'listen = "{HOST}:{port}"',
            f'state = "{state}"',
            'log_format = "json"',
            monitor_extra,
            "",
            "[cluster]",
            f'mode = "{mode}"',
            f'failover = "{failover}"',
            *([f"shards = {shards}", f"shard = {shard}"] if shards is not None else []),
            "",
            "[thresholds.up]",
            "trigger_after = 2  # the built-in value, written out: the tests count runs by it",
            "",
            "[notifiers.oncall]",
            'type = "pagerduty"',
            f'routing_key = "{ROUTING_KEY}"',
            f'url = "{self.pagerduty.url}"',
            "",
            "[[routes]]",
            'notify = ["oncall"]',
            'repeat = "1h"',
        ]
        for check in checks:
            lines += [
                "",
                "[[checks]]",
                f'name = "{check}"',
                'type = "http"',
                f'url = "{self.target.url}/{quote(check, safe="")}"',
                'interval = "1s"',
                'timeout = "1s"',
                f'headers = {{ X-Replica = "{name}" }}',
            ]
        return "\n".join([*lines, extra, ""])

    async def start(
        self,
        n: int,
        *,
        shards: int = 1,
        placement: Sequence[int] | None = None,
        wait_ready: bool = True,
        env: dict[str, str] | None = None,
        shard_env: bool = False,
        upstream_port: int | None = None,
        **config: Any,
    ) -> list[Replica]:
        """Start `n` more replicas (named r0, r1, ...); `config` goes to `config_text`. With
        `shard_env`, the shard is given as `MONITOR_SHARD=i/N` instead of in the file; with
        `upstream_port`, each replica's proxy leads there (a `PgBouncer`) instead of to PostgreSQL."""
        placement = placement or [i % shards for i in range(n)]
        new: list[Replica] = []
        for shard in placement:
            name = f"r{len(self.replicas)}"
            proxy = await PgProxy(upstream_port or self.pg.port).start()
            port = free_port()
            path = self.dir / f"{name}.toml"
            in_file = {"shards": None} if shard_env else {"shards": shards, "shard": shard}
            path.write_text(self.config_text(name, port, proxy.port, **in_file, **config))
            own_env = {**(env or {}), **({"MONITOR_SHARD": f"{shard}/{shards}"} if shard_env else {})}
            replica = Replica(name, shard, path, port, proxy, own_env)
            self.replicas.append(replica)
            new.append(replica)
        await asyncio.gather(*(r.start(wait_ready) for r in new))
        return new

    def replica(self, name: str) -> Replica:
        """The replica named `name` (r0, r1, ...)."""
        return next(r for r in self.replicas if r.name == name)

    def leaders(self, shard: int = 0) -> tuple[str, ...]:
        """Who led `shard` at the latest scrape."""
        latest = self.scraper.latest
        return latest.leaders.get(shard, ()) if latest else ()

    async def wait_leader(
        self, shard: int = 0, timeout_s: float = 20.0, not_: Replica | None = None
    ) -> Replica:
        """The replica that leads `shard` alone at a scrape from now on (other than `not_`)."""

        def one(scrape: Scrape) -> bool:
            names = scrape.leaders.get(shard, ())
            return len(names) == 1 and (not_ is None or names[0] != not_.name)

        scrape = await self.scraper.wait(one, timeout_s, f"one leader of shard {shard}")
        return self.replica(scrape.leaders[shard][0])

    async def wait_no_leader(self, shard: int = 0, timeout_s: float = 20.0) -> None:
        """Wait for a scrape in which no replica leads `shard`."""
        await self.scraper.wait(lambda s: not s.leaders.get(shard), timeout_s, f"no leader of shard {shard}")

    async def stop_all(self, timeout_s: float = 15.0) -> dict[str, int]:
        """SIGTERM every running replica and collect exit codes (`exit_codes`, by name)."""
        running = [r for r in self.replicas if r.running]
        for replica in running:
            replica.terminate()
        codes = await asyncio.gather(*(r.wait_exit(timeout_s) for r in running))
        self.exit_codes.update({r.name: c for r, c in zip(running, codes, strict=True)})
        for replica in self.replicas:
            if replica.returncode is not None and not replica.killed:
                self.exit_codes.setdefault(replica.name, replica.returncode)
        return self.exit_codes

    async def finish(self, *, one_trigger: bool = True) -> None:
        """End of a test: stop every replica, then assert the invariants of HA.md (c)
        (`one_trigger=False` for T3, where a redelivery is allowed)."""
        await self.stop_all()
        await self.scraper.aclose()
        assert_single_leader(self.scraper)
        assert_exit_zero(self)
        if one_trigger:
            assert_one_trigger_per_episode(self.pagerduty.events)
        assert_no_trigger_after_resolve(self.pagerduty.events)
        assert self.pagerduty.problems == []

    async def aclose(self) -> None:
        """Tear down whatever is left (the fixture's cleanup): kill replicas, close servers."""
        if self._closed:
            return
        self._closed = True
        for replica in self.replicas:
            if replica.running:
                replica.resume()
                replica.kill()
                with contextlib.suppress(AssertionError):
                    await replica.wait_exit(5)
        await self.scraper.aclose()
        for replica in self.replicas:
            await replica.proxy.aclose()
        await self.pagerduty.aclose()
        await self.target.aclose()


# ---------------------------------------------------------------- invariants


def assert_single_leader(scraper: LeaderScraper) -> None:
    """No scrape round saw two leaders of one shard."""
    assert scraper.rounds, "the scraper never ran"
    assert scraper.errors == [], f"scrapes that could not be read: {scraper.errors[:3]}"
    assert scraper.violations == [], f"two leaders at once: {scraper.violations[:3]}"


def episodes(events: Iterable[PdEvent]) -> dict[tuple[str, str | None], list[PdEvent]]:
    """Events grouped by episode (dedup_key, since), in arrival order."""
    grouped: dict[tuple[str, str | None], list[PdEvent]] = defaultdict(list)
    for event in events:
        grouped[event.episode].append(event)
    return dict(grouped)


def assert_one_trigger_per_episode(events: Iterable[PdEvent]) -> None:
    """Every episode that paged got exactly one accepted trigger."""
    for episode, evs in episodes(events).items():
        triggers = [e for e in evs if e.event_action == "trigger" and e.accepted]
        if any(e.event_action == "trigger" for e in evs):
            assert len(triggers) == 1, f"episode {episode}: {len(triggers)} accepted triggers: {evs}"


def assert_no_trigger_after_resolve(events: Iterable[PdEvent]) -> None:
    """No episode got a trigger after its resolve (that would open a new incident)."""
    for episode, evs in episodes(events).items():
        resolved = [e.t for e in evs if e.event_action == "resolve"]
        if resolved:
            late = [e for e in evs if e.event_action == "trigger" and e.t > min(resolved)]
            assert late == [], f"episode {episode}: trigger after its resolve: {late}"


def assert_exit_zero(lab: HaLab) -> None:
    """Every replica the test did not kill -9 exited 0."""
    bad = {name: code for name, code in lab.exit_codes.items() if code != 0 and not lab.replica(name).killed}
    logs = "\n".join(f"--- {name}\n{lab.replica(name).log()[-4000:]}" for name in bad)
    assert bad == {}, f"replicas exited non-zero: {bad}\n{logs}"
    stray = [r.name for r in lab.replicas if r.running]
    assert stray == [], f"still running: {stray}"
