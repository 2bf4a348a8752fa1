"""`monitor healthcheck` (the image's HEALTHCHECK) against a real daemon, a dead port, a wrong
answer, a peer that never answers, and bad configs: once as a process, else through `main` in
this process, which saves an interpreter start per case."""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor import once
from monitor.cli import main
from tests.deploy.helpers import DaemonProcess, LoopbackHttp, free_port, json_reply
from tests.fakes.servers import refused_port

MONITOR = [sys.executable, "-m", "monitor"]


async def healthcheck(*args: str) -> tuple[int, str, float]:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *MONITOR,
        "healthcheck",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip(), time.monotonic() - started


def write(path: Path, listen: str, extra: str = "") -> Path:
    path.write_text(f'[monitor]\nlisten = "{listen}"\nstate = "memory"\n{extra}')
    return path


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """`monitor run` on a loopback port, with no checks."""
    port = free_port()
    config = write(tmp_path_factory.mktemp("daemon") / "monitor.toml", f"127.0.0.1:{port}")
    process = DaemonProcess(config, port, {}).start()
    yield process
    process.stop()


def run_main(capsys: pytest.CaptureFixture[str], config: Path) -> tuple[int, str]:
    code = main(["healthcheck", "-c", str(config)])
    return code, capsys.readouterr().out.strip()


async def test_a_running_daemon_is_healthy(daemon: DaemonProcess) -> None:
    code, out, elapsed = await healthcheck("-c", str(daemon.config))
    assert (code, out) == (0, f"healthy: http://127.0.0.1:{daemon.port}/healthz")
    assert elapsed < 10


def test_a_wildcard_listen_is_probed_on_loopback(
    daemon: DaemonProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A config listening on every address of the daemon's port (the daemon stays on 127.0.0.1).
    wildcard = write(tmp_path / "wildcard.toml", f"0.0.0.0:{daemon.port}")
    assert run_main(capsys, wildcard) == (0, f"healthy: http://127.0.0.1:{daemon.port}/healthz")


def test_config_comes_from_monitor_config_then_the_working_directory(
    daemon: DaemonProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MONITOR_CONFIG", raising=False)
    with refused_port() as dead:
        write(tmp_path / "monitor.toml", f"127.0.0.1:{dead}")  # ./monitor.toml: a dead port
        from_cwd = main(["healthcheck"]), capsys.readouterr().out.strip()
        monkeypatch.setenv("MONITOR_CONFIG", str(daemon.config))
        from_env = main(["healthcheck"]), capsys.readouterr().out.strip()
    assert from_cwd == (1, f"unhealthy: http://127.0.0.1:{dead}/healthz: connection refused")
    assert from_env == (0, f"healthy: http://127.0.0.1:{daemon.port}/healthz")


def test_a_wrong_answer_is_unhealthy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server = LoopbackHttp({"/healthz": lambda _: json_reply(503, {"status": "starting"})}).start()
    try:
        result = run_main(capsys, write(tmp_path / "a.toml", f"127.0.0.1:{server.port}"))
    finally:
        server.stop()
    assert result == (1, f"unhealthy: http://127.0.0.1:{server.port}/healthz: status 503")


def test_no_answer_within_the_limit_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(once, "HEALTHCHECK_TIMEOUT_S", 0.5)  # the 4 s limit, shortened for the test
    # Listening but never accepting: the kernel completes the handshake, nobody ever answers.
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        started = time.monotonic()
        result = run_main(capsys, write(tmp_path / "b.toml", f"127.0.0.1:{port}"))
        elapsed = time.monotonic() - started
    assert result == (1, f"unhealthy: http://127.0.0.1:{port}/healthz: no answer within 0.5s")
    assert 0.5 <= elapsed < 2.5


def test_ipv6_wildcard_is_probed_on_ipv6_loopback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused, and on ::1 only
        result = run_main(capsys, write(tmp_path / "v6.toml", f"[::]:{port}"))
    assert result == (1, f"unhealthy: http://[::1]:{port}/healthz: connection refused")


def test_an_invalid_config_is_unhealthy_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_listen = write(tmp_path / "listen.toml", "nowhere")
    unknown_key = write(tmp_path / "key.toml", "127.0.0.1:1", 'lisen = "x"\n')
    missing = tmp_path / "absent.toml"
    code, out = run_main(capsys, bad_listen)
    assert code == 1 and out.startswith(f"unhealthy: {bad_listen}: invalid configuration: monitor.listen: ")
    code, out = run_main(capsys, unknown_key)
    assert code == 1 and out.startswith(f"unhealthy: {unknown_key}: invalid configuration: monitor.lisen: ")
    code, out = run_main(capsys, missing)
    assert code == 1 and out.startswith(
        f"unhealthy: {missing}: invalid configuration: {missing}: cannot read"
    )
