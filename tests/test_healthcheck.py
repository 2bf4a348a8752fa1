"""`monitor healthcheck` (the image's HEALTHCHECK) against a real daemon, a dead port, a wrong
answer, a peer that never answers, and bad configs: once as a process, else through `main` in
this process, which saves an interpreter start per case."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor import healthcheck as probe_module
from monitor.cli import main
from monitor.config import MonitorSection
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
    monkeypatch.setattr(probe_module.probe, "__defaults__", (0.5,))  # the 4 s limit, shortened for the test
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


def test_an_unreadable_listen_is_unhealthy_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad_listen = write(tmp_path / "listen.toml", "nowhere")
    unset = write(tmp_path / "unset.toml", "127.0.0.1:${MONITOR_PORT}")
    not_toml = tmp_path / "broken.toml"
    not_toml.write_text("[monitor\n")
    missing = tmp_path / "absent.toml"
    monkeypatch.delenv("MONITOR_PORT", raising=False)
    assert run_main(capsys, bad_listen) == (
        1,
        "unhealthy: monitor.listen: invalid listen address 'nowhere': use \"host:port\"",
    )
    assert run_main(capsys, unset) == (
        1,
        "unhealthy: monitor.listen: environment variable MONITOR_PORT is not set",
    )
    code, out = run_main(capsys, not_toml)
    assert code == 1 and out.startswith(f"unhealthy: {not_toml}: not valid TOML: ")
    code, out = run_main(capsys, missing)
    assert code == 1 and out.startswith(f"unhealthy: {missing}: cannot read")


def test_only_listen_is_read_so_a_config_being_edited_keeps_the_daemon_healthy(
    daemon: DaemonProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The running daemon keeps its config until a reload accepts a new one: a half-edited file
    # (an unknown key, a check without a URL) says nothing about the daemon's health.
    editing = write(
        tmp_path / "editing.toml", f"127.0.0.1:{daemon.port}", 'lisen = "x"\n[[checks]]\nname = "a"\n'
    )
    assert run_main(capsys, editing) == (0, f"healthy: http://127.0.0.1:{daemon.port}/healthz")


def test_listen_from_the_environment_and_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert MonitorSection().listen == probe_module.DEFAULT_LISTEN
    monkeypatch.setenv("MONITOR_PORT", "1")
    with refused_port() as dead:
        monkeypatch.setenv("MONITOR_PORT", str(dead))
        from_env = run_main(capsys, write(tmp_path / "env.toml", "127.0.0.1:${MONITOR_PORT}"))
    assert from_env == (1, f"unhealthy: http://127.0.0.1:{dead}/healthz: connection refused")
    assert probe_module.listen_address(write(tmp_path / "none.toml", "[::]:1").with_name("none.toml")) == (
        "::1",
        1,
    )
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert probe_module.listen_address(empty) == ("127.0.0.1", 9100)


def test_the_probe_loads_neither_aiohttp_nor_the_config_models(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "127.0.0.1:1")
    code = (
        "import sys; from monitor.cli import main; main(['healthcheck', '-c', sys.argv[1]]); "
        "print(sorted(m for m in ('aiohttp', 'monitor.config', 'checks', 'alerts') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(config)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"
