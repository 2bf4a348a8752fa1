"""Loopback peers and daemon launching shared by the deploy tests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXAMPLES = ROOT / "examples"
# A copy of the runbooks the product was derived from (SPEC section 10), kept with the tests so
# that a clone alone can run them.
RUNBOOKS = ROOT / "tests" / "data" / "runbooks"

# SPEC sections 7 and 9: the only metric names a rule or a panel may use (plus Prometheus' own `up`).
SPEC_METRICS = {
    "monitor_check_up",
    "monitor_check_duration_seconds",
    "monitor_check_runs_total",
    "monitor_check_value",
    "monitor_alert_state",
    "monitor_alerts_firing",
    "monitor_notifications_total",
    "monitor_outbox_pending",
    "monitor_scheduler_lag_seconds",
    "monitor_config_reloads_total",
    "monitor_build_info",
    "monitor_cluster_leader",
    "monitor_cluster_epoch",
    "monitor_cluster_transitions_total",
    "monitor_cluster_fenced_total",
    "monitor_outbox_redelivered_total",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused at once."""
    return free_port()


def metric_names(expr: str) -> set[str]:
    """The monitor_* metric names an expression uses, histogram suffixes folded onto the base name."""
    names = set(re.findall(r"\bmonitor_[a-z_]+\b", expr))
    return {
        re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
        for n in names
    }


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to '-'."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    return {github_slug(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M)}


# ---------------------------------------------------------------- a loopback HTTP peer


Route = Callable[["Request"], tuple[int, dict[str, str], bytes]]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class LoopbackHttp:
    """A threaded HTTP server on 127.0.0.1 with scripted routes; it records every request."""

    routes: dict[str, Route]
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoopbackHttp:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = Request(
                    self.command, self.path, dict(self.headers.items()), self.rfile.read(length)
                )
                with owner._lock:
                    owner.requests.append(request)
                route = owner.routes.get(self.path.split("?")[0])
                status, headers, body = route(request) if route else (404, {}, b"not found")
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        threading.Thread(target=self._server.serve_forever, name="loopback-http", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def seen(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A check that timed out, or a daemon stopped mid-request, hangs up: that is no error here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def json_reply(status: int, body: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {}, json.dumps(body).encode()


# ---------------------------------------------------------------- the daemon as a process


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_http(url: str, status: int = 200, timeout_s: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            code, body = http_get(url, timeout=2)
            if code == status:
                return body
            last = code
        except OSError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout_s:.0f}s (last: {last})")


@dataclass
class DaemonProcess:
    """`python -m monitor run -c CONFIG` on a free loopback port; stopped with SIGTERM."""

    config: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 30.0) -> DaemonProcess:
        log = (self.config.parent / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "-c", str(self.config)],
            cwd=self.config.parent,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_http(f"{self.url}/readyz", timeout_s=ready_timeout_s)
        except TimeoutError as exc:
            self.stop()
            raise TimeoutError(f"{exc}\n--- daemon log ---\n{self.log()}") from None
        return self

    def log(self) -> str:
        return (self.config.parent / "daemon.log").read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        code, self.proc = self.proc.returncode, None
        return code
