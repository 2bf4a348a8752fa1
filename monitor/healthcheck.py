"""`monitor healthcheck`, the image's HEALTHCHECK: GET `/healthz` on the config's `monitor.listen`.

It reads only `[monitor] listen` from the file, not the whole config: the probe runs every few
seconds, so it costs an interpreter start and one GET (no aiohttp, no validation of the checks);
and a config file being edited into something invalid does not make the daemon that runs
unhealthy, since the daemon keeps its running config until a reload accepts the new one.
"""

from __future__ import annotations

import http.client
import os
import time
import tomllib
from pathlib import Path

from monitor.interpolation import interpolate
from monitor.neterrors import network_reason

TIMEOUT_S = 4.0  # the whole probe, connect to status line (SPEC section 2)
DEFAULT_LISTEN = "0.0.0.0:9100"  # MonitorSection.listen's default (tests/test_healthcheck.py keeps them equal)
_WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # listening everywhere: ask loopback


class ListenError(ValueError):
    """`monitor.listen` cannot be read from the file; the message names the key or the file."""


def listen_address(path: str | Path) -> tuple[str, int]:
    """The (host, port) to probe for the config at `path`, a wildcard host replaced by loopback."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ListenError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ListenError(f"{path}: not valid TOML: {exc}") from None
    section = doc.get("monitor", {})
    value = section.get("listen", DEFAULT_LISTEN) if isinstance(section, dict) else DEFAULT_LISTEN
    errors: dict[str, str] = {}
    value = interpolate(value, os.environ, ("monitor", "listen"), errors)
    if errors:
        raise ListenError("; ".join(f"{key}: {message}" for key, message in errors.items()))
    host, sep, port = value.rpartition(":") if isinstance(value, str) else ("", "", "")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ListenError(f'monitor.listen: invalid listen address {value!r}: use "host:port"')
    host = host.strip("[]")
    return _WILDCARDS.get(host, host), int(port)


def url_of(host: str, port: int) -> str:
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def probe(host: str, port: int, timeout_s: float = TIMEOUT_S) -> str | None:
    """GET /healthz within `timeout_s` in all: None when it answers 200, else why not (a line
    starting with the URL). Blocking: this runs as a command of its own, not on a daemon's loop."""
    url = url_of(host, port)
    deadline = time.monotonic() + timeout_s
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        conn.connect()
        assert conn.sock is not None
        conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))  # what is left of the one limit
        conn.request("GET", "/healthz", headers={"Connection": "close"})
        status = conn.getresponse().status
    except TimeoutError:
        return f"{url}: no answer within {timeout_s:g}s"
    except OSError as exc:
        return f"{url}: {network_reason(exc)}"
    except http.client.HTTPException as exc:
        return f"{url}: not an HTTP answer ({type(exc).__name__})"
    finally:
        conn.close()
    return None if status == 200 else f"{url}: status {status}"
