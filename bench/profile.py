"""Sampling profile of the running daemon with py-spy: a flame graph and the top costs."""

from __future__ import annotations

import asyncio
import collections
import re
import shutil
import sys
from pathlib import Path
from typing import Any

# Where samples go, by the file of the innermost frame (py-spy names files by module path).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("prometheus_client/", "metrics (prometheus_client)"),
    ("monitor/scheduler", "scheduler"),
    ("aiohttp/web", "HTTP server (aiohttp.web)"),
    ("aiohttp/", "HTTP client (aiohttp)"),
    ("aiohappyeyeballs/", "HTTP client (aiohttp)"),
    ("multidict/", "HTTP client (aiohttp)"),
    ("yarl/", "HTTP client (aiohttp)"),
    ("websockets/", "websockets"),
    ("alerts/", "alerting (alerts/)"),
    ("aiosqlite/", "state store (aiosqlite)"),
    ("monitor/store", "state store (aiosqlite)"),
    ("monitor/evaluation", "evaluation"),
    ("monitor/daemon", "daemon (recording results)"),
    ("monitor/runner", "runner"),
    ("monitor/api", "HTTP server (aiohttp.web)"),
    ("monitor/", "monitor (other)"),
    ("checks/httpclient", "HTTP client (checks/httpclient)"),
    ("checks/httpexchange", "HTTP client (checks/httpclient)"),
    ("httptools/", "HTTP client (checks/httpclient)"),
    ("checks/", "checks"),
    ("uvloop/", "event loop (uvloop)"),
    ("logging/", "logging"),
    ("json/", "json"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("ssl.py", "ssl"),
    ("socket.py", "socket"),
    ("threading.py", "threads (idle waits)"),
)
# On every stack of the event-loop thread: asyncio's loop, or uvloop's (its C frames are invisible,
# so time spent inside uvloop itself lands on its Python entry point).
_LOOP_FRAMES = ("BaseEventLoop.run_forever", "uvloop/__init__.py")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path, fmt: str, log: Path) -> bool:
    """`py-spy record` for `seconds`; False when py-spy is missing or failed.

    Blocking mode (py-spy pauses the process for each sample): without it a third of the
    samples of a busy asyncio process are torn stacks. It runs after the measurement window.
    """
    binary = py_spy()
    if binary is None:
        return False
    with open(log, "ab") as err:  # noqa: ASYNC230 -- a local log file, opened once
        proc = await asyncio.create_subprocess_exec(
            binary, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "100",
            "--format", fmt, "--output", str(out),
            stdout=err, stderr=err,
        )  # fmt: skip
        try:
            await asyncio.wait_for(proc.wait(), seconds + 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return proc.returncode == 0 and await asyncio.to_thread(out.exists)


def _component(file: str) -> str:
    for needle, name in COMPONENTS:
        if file.startswith(needle) or "/" + needle in file:
            return name
    return "other"


def summarize(collapsed: Path, top: int = 20) -> dict[str, Any]:
    """Top functions by self time, and each component's self and inclusive share of the event
    loop thread's samples (the daemon's work; other threads mostly wait)."""
    leaf: collections.Counter[str] = collections.Counter()
    self_by: collections.Counter[str] = collections.Counter()
    incl_by: collections.Counter[str] = collections.Counter()
    incl_fn: collections.Counter[str] = collections.Counter()
    total = every = 0
    for raw in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        every += count
        if not any(marker in stack for marker in _LOOP_FRAMES):
            continue  # another thread (aiosqlite's, the executor's): mostly waits py-spy counts as busy
        total += count
        frames = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame.strip())
            if m:
                frames.append((m["func"], m["file"], m["line"]))
        if not frames:
            continue
        func, file, line = frames[-1]
        leaf[f"{func} ({_short(file)}:{line})"] += count
        self_by[_component(frames[-1][1])] += count
        for name in {_component(f) for _, f, _ in frames}:
            incl_by[name] += count
        for name in {f"{fn} ({_short(f)})" for fn, f, _ in frames}:
            incl_fn[name] += count
    if total == 0:
        return {"samples": 0}

    def pct(counter: collections.Counter[str], n: int) -> list[dict[str, Any]]:
        return [{"name": k, "pct": round(v / total * 100, 1)} for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "samples_all_threads": every,
        "note": "percentages of the event-loop thread's samples",
        "top_self": pct(leaf, top),
        "components_self": pct(self_by, len(self_by)),
        "components_inclusive": pct(incl_by, len(incl_by)),
        "top_inclusive": pct(incl_fn, top * 2),
    }


def _short(file: str) -> str:
    for marker in ("site-packages/", "lib/python3.", "/main/"):
        if marker in file:
            return (
                file.split(marker, 1)[1].split("/", 1)[-1]
                if marker == "lib/python3."
                else file.split(marker, 1)[1]
            )
    return file
