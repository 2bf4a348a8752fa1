"""A real Prometheus server (the Debian binary) on a free loopback port, in a temp dir."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.fakes.managed import Managed

HOST = "127.0.0.1"
_START_ATTEMPTS = 3  # a free port found by binding can be taken by someone else before we listen
_READY_TIMEOUT_S = 60.0


class PrometheusNotInstalled(RuntimeError):
    """prometheus or promtool is missing: scripts/test installs them (Debian package prometheus)."""


class PrometheusError(RuntimeError):
    """Prometheus did not start, or its HTTP API answered with an error."""


def find(binary: str, package: str = "prometheus") -> str:
    found = shutil.which(binary) or next(
        (str(p) for p in (Path("/usr/bin") / binary, Path("/usr/sbin") / binary) if p.is_file()), None
    )
    if found is None:
        raise PrometheusNotInstalled(f"`{binary}` not found: install the Debian package `{package}`")
    return found


def promtool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([find("promtool"), *args], capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PrometheusServer(Managed):
    """`prometheus` with the given config (a dict, written as YAML) and its TSDB in a temp dir.

    Rule files named in the config are used as they are (give absolute paths). The API helpers
    raise PrometheusError with Prometheus' own message, so a bad PromQL expression reads clearly.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.binary = find("prometheus")
        self.port = 0
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def tmpdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("prometheus is not started")
        return self._tmp

    def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="monitor-prometheus-"))
        try:
            config_file = self.tmpdir / "prometheus.yml"
            config_file.write_text(yaml.safe_dump(self.config, sort_keys=False))
            for attempt in range(1, _START_ATTEMPTS + 1):
                self.port = free_port()
                self._spawn(config_file)
                try:
                    self._wait_ready()
                    return
                except PrometheusError:
                    self._terminate()
                    if attempt == _START_ATTEMPTS or "address already in use" not in self.log_tail():
                        raise
        except BaseException:
            self.stop()
            raise

    def _spawn(self, config_file: Path) -> None:
        with (self.tmpdir / "prometheus.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config_file}",
                    f"--storage.tsdb.path={self.tmpdir / 'data'}",
                    f"--web.listen-address={HOST}:{self.port}",
                    "--web.enable-lifecycle",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
            )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {_READY_TIMEOUT_S:.0f}s:\n{self.log_tail()}")

    def _terminate(self) -> None:
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def stop(self) -> None:
        """Stop the server by its PID, then delete its files (reverse order of start)."""
        try:
            self._terminate()
        finally:
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.tmpdir / "prometheus.log").read_text(errors="replace")
        except (OSError, RuntimeError):
            return "(no prometheus log)"
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------ HTTP API

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; returns `data`, raises PrometheusError with `error` on failure."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:  # 400 bad_data, 422 execution errors: the body says why
            body = json.load(exc)
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result as a list of series (a scalar becomes one series)."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step=f"{step:g}")
        return data["result"]

    def wait_for(self, expr: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns series; raises with the last answer if it never does."""
        deadline = time.monotonic() + timeout_s
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.5)
        raise PrometheusError(f"no data for {expr!r} after {timeout_s:.0f}s; targets: {self.api('targets')}")
