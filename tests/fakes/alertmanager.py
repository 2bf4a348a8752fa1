"""The real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) on a loopback port.

    with Alertmanager(tmp_path) as am:
        ...  # an alertmanager notifier with url=am.url
        alerts = am.alerts(check="backend-api")

Clustering is off, storage is in the given directory, and the only receiver is a null one, so
nothing leaves the machine. Missing binary: an error saying what to install (tests never skip
for want of it; `scripts/test` installs it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

HOST = "127.0.0.1"
BINARY = "prometheus-alertmanager"
CONFIG = """\
route:
  receiver: "null"
  group_wait: 1h
receivers:
  - name: "null"
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Alertmanager:
    def __init__(self, workdir: Path, *, binary: str = BINARY, ready_timeout_s: float = 20.0) -> None:
        self.workdir = workdir
        self.binary = binary
        self.ready_timeout_s = ready_timeout_s
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = workdir / "alertmanager.log"

    def start(self) -> Self:
        path = shutil.which(self.binary)
        if path is None:
            raise RuntimeError(
                f"{self.binary} not found: install the Debian package prometheus-alertmanager "
                "(scripts/test does)"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "alertmanager.yml"
        config.write_text(CONFIG)
        for _attempt in range(3):  # the free port may be taken between probe and bind
            port = _free_port()
            self.url = f"http://{HOST}:{port}"
            with self._log.open("wb") as log:
                self._proc = subprocess.Popen(
                    [
                        path,
                        f"--config.file={config}",
                        f"--storage.path={self.workdir / 'data'}",
                        f"--web.listen-address={HOST}:{port}",
                        "--cluster.listen-address=",
                        "--log.level=warn",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if self._wait_ready():
                return self
            self.stop()
        raise RuntimeError(f"alertmanager did not become ready:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp,
            ):
                if resp.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """`GET /api/v2/alerts` filtered on label equality: what Alertmanager holds as active
        (resolved alerts are not listed). Blocking: call it from async code via `to_thread`."""
        query = "&".join(f"filter={quote(f'{k}={json.dumps(v)}')}" for k, v in labels.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as resp:
            return json.loads(resp.read())
