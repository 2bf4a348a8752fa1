"""Child processes of a benchmark run: nginx, the other targets, the daemon, the exporter, loads."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import aiohttp

from bench.tls import HOSTNAME, Certificates

_PR_SET_PDEATHSIG = 1
BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 12.0  # the daemon may take its 8 s grace period, then closes in reverse order


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_binary(name: str) -> str | None:
    """`name` on PATH, or in the sbin directories a non-root PATH leaves out."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def pinned(argv: list[str], cpus: list[int] | None) -> list[str]:
    """`argv` under `taskset -c CPUS` when pinning is possible."""
    if not cpus or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", ",".join(map(str, cpus)), *argv]


def _die_with_parent() -> None:
    """In the child before exec: killed when the harness dies, even by SIGKILL (Linux).

    SIGKILL, not SIGTERM: an overloaded asyncio process can lose a SIGTERM (seen with the daemon
    at 20,000 checks: "Exception ignored when trying to write to the signal wakeup fd").
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


STARTED: list[Child] = []  # every child of this run, for the last-resort kill_leftovers()


def kill_leftovers() -> None:
    """SIGKILL every child still running (each by its own pid): the harness is exiting."""
    for child in STARTED:
        if child.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)


class Child:
    """One started process, stopped by its own pid (never by name)."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: IO[bytes]) -> None:
        self.name = name
        self.proc = proc
        self.log = log
        self.ready = True

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    async def line(self, timeout_s: float) -> dict[str, Any]:
        """The next JSON line the child prints on stdout."""
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise RuntimeError(f"{self.name} exited (code {await self.proc.wait()}), see {self.log.name}")
        return json.loads(raw)

    async def mark(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Counters of a load process (bench/load.py) right now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"mark\n")
        await self.proc.stdin.drain()
        return await self.line(timeout_s)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        if self.alive():
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError, RuntimeError):
                    self.proc.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self.log.close()
        return self.proc.returncode


async def start(
    name: str,
    argv: list[str],
    workdir: Path,
    cpus: list[int] | None,
    *,
    pipes: bool = False,
    env: dict[str, str] | None = None,
) -> Child:
    """Start `argv` pinned to `cpus`; stderr (and stdout unless `pipes`) go to WORKDIR/NAME.log.
    `env` is added to the harness's environment."""
    # A local log file, opened once per child and closed by Child.stop.
    log = open(workdir / f"{name}.log", "ab")  # noqa: ASYNC230, SIM115
    proc = await asyncio.create_subprocess_exec(
        *pinned(argv, cpus),
        stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE if pipes else log,
        stderr=log,
        cwd=str(REPO_DIR),
        start_new_session=True,  # a Ctrl-C of bench/run reaches the harness, which stops these
        preexec_fn=_die_with_parent,
        limit=2**20,
        env={**os.environ, **env} if env else None,
    )
    child = Child(name, proc, log)
    STARTED.append(child)
    return child


async def wait_port(port: int, child: Child, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited (code {child.proc.returncode}), see {child.log.name}")
        with contextlib.suppress(OSError):
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{child.name} did not listen on port {port} within {timeout_s:g}s")


async def wait_http(
    session: aiohttp.ClientSession, url: str, child: Child, timeout_s: float = START_TIMEOUT_S
) -> None:
    """Until `url` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited (code {child.proc.returncode}), see {child.log.name}")
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:g}s, see {child.log.name}")


async def start_nginx(workdir: Path, cpus: list[int] | None) -> tuple[Child, int, Path]:
    """nginx serving /health and /flip/N; returns the child, its port and the flip directory."""
    child, port, _, flipdir = await _nginx(workdir, cpus, None)
    return child, port, flipdir


async def start_nginx_https(
    workdir: Path, cpus: list[int] | None, certs: Certificates
) -> tuple[Child, int, int, Path]:
    """nginx as start_nginx's, and /health over TLS with `certs` on a second port; returns the
    child, the HTTP port, the HTTPS port and the flip directory."""
    child, port, https_port, flipdir = await _nginx(workdir, cpus, certs)
    assert https_port is not None
    return child, port, https_port, flipdir


async def _nginx(
    workdir: Path, cpus: list[int] | None, certs: Certificates | None
) -> tuple[Child, int, int | None, Path]:
    binary = find_binary("nginx")
    if binary is None:
        raise RuntimeError("nginx is not installed (bench/run installs it: apt-get install nginx)")
    port = free_port()
    flipdir = workdir / "flip"
    flipdir.mkdir(exist_ok=True)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / "nginx-tmp" / sub).mkdir(parents=True, exist_ok=True)
    # As root, nginx's worker would run as nobody, who may not traverse a private temp directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = (BENCH_DIR / "nginx.conf.template").read_text(encoding="utf-8")
    https_port = None
    https_server = ""
    if certs is not None:
        https_port = free_port()
        https_server = (BENCH_DIR / "nginx-https.conf.template").read_text(encoding="utf-8")
        for key, value in {
            "https_port": str(https_port),
            "hostname": HOSTNAME,
            "cert_file": str(certs.cert_file),
            "key_file": str(certs.key_file),
        }.items():
            https_server = https_server.replace("{" + key + "}", value)
    for key, value in {
        "user": user,
        "workdir": str(workdir),
        "port": str(port),
        "flipdir": str(flipdir),
        "https_server": https_server,
    }.items():
        conf = conf.replace("{" + key + "}", value)
    (workdir / "nginx.conf").write_text(conf, encoding="utf-8")
    argv = [
        binary,
        "-p",
        str(workdir),
        "-c",
        str(workdir / "nginx.conf"),
        "-e",
        str(workdir / "nginx-error.log"),
    ]
    child = await start("nginx", argv, workdir, cpus)
    await wait_port(port, child)
    if https_port is not None:
        await wait_port(https_port, child)
    return child, port, https_port, flipdir


async def start_targets(workdir: Path, cpus: list[int] | None) -> tuple[Child, int, int]:
    """The TCP listener and WebSocket echo server; returns the child and (tcp port, ws port)."""
    child = await start("targets", [sys.executable, "-m", "bench.targets"], workdir, cpus, pipes=True)
    ports = await child.line(START_TIMEOUT_S)
    return child, int(ports["tcp_port"]), int(ports["ws_port"])


def monitor_binary() -> str:
    beside = Path(sys.executable).with_name("monitor")
    if beside.exists():
        return str(beside)
    found = shutil.which("monitor")
    if found is None:
        raise RuntimeError("the monitor command is not installed (pip install -e . in the venv)")
    return found


async def start_daemon(
    name: str,
    config_text: str,
    workdir: Path,
    cpus: list[int] | None,
    session: aiohttp.ClientSession,
    port: int,
    ready_timeout_s: float,
    *,
    strict: bool = True,
    env: dict[str, str] | None = None,
) -> Child:
    """`monitor run` on a generated config, once /readyz answers 200 (every check scheduled).

    Not `strict`: a daemon still running but not ready in time is returned (`ready` False).
    """
    config = workdir / f"{name}.toml"
    await asyncio.to_thread(config.write_text, config_text, encoding="utf-8")
    child = await start(name, [monitor_binary(), "run", "-c", str(config)], workdir, cpus, env=env)
    try:
        await wait_http(session, f"http://127.0.0.1:{port}/readyz", child, ready_timeout_s)
    except RuntimeError:
        if strict or not child.alive():
            await child.stop()
            raise
        child.ready = False
    return child


def blackbox_config(workdir: Path, ca_file: str) -> Path:
    """bench/blackbox.yml with the `https` kind's module, which trusts the bench CA."""
    text = (BENCH_DIR / "blackbox.yml").read_text(encoding="utf-8")
    text += (
        "  https_health:           # as http_health, over TLS, verified against the bench CA\n"
        "    prober: http\n"
        "    timeout: 5s\n"
        "    http:\n"
        "      method: GET\n"
        "      valid_status_codes: [200]\n"
        '      fail_if_body_not_matches_regexp: [\'"status": ?"ok"\']\n'
        "      preferred_ip_protocol: ip4\n"
        "      ip_protocol_fallback: false\n"
        "      tls_config:\n"
        f"        ca_file: {json.dumps(ca_file)}\n"
    )
    path = workdir / "blackbox.yml"
    path.write_text(text, encoding="utf-8")
    return path


async def start_blackbox(
    workdir: Path, cpus: list[int] | None, config: Path | None = None
) -> tuple[Child, int]:
    binary = find_binary("prometheus-blackbox-exporter")
    if binary is None:
        raise RuntimeError("prometheus-blackbox-exporter is not installed")
    port = free_port()
    argv = [
        binary,
        f"--config.file={config or BENCH_DIR / 'blackbox.yml'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    child = await start("blackbox", argv, workdir, cpus)
    await wait_port(port, child)
    return child, port


async def start_load(
    name: str, args: list[str], workdir: Path, cpus: list[int] | None, max_seconds: float
) -> Child:
    argv = [sys.executable, "-m", "bench.load", *args, f"--max-seconds={max_seconds:g}"]
    child = await start(name, argv, workdir, cpus, pipes=True)
    await child.line(START_TIMEOUT_S)  # {"ready": true}
    return child
