"""`monitor run` as a real process on loopback, for end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import aiohttp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonProcess:
    """Starts `python -m monitor run -c CONFIG`; `url` is its HTTP interface."""

    def __init__(self, config: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: asyncio.subprocess.Process | None = None
        self.output = ""

    async def start(self) -> Self:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "run",
            "-c",
            str(self.config),
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await self.poll("/readyz", lambda body: body.get("status") == "ready")
        return self

    async def stop(self) -> int:
        """SIGTERM; returns the exit code (the test asserts it)."""
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 15)
        self.output += out.decode()
        return self.proc.returncode if self.proc.returncode is not None else -1

    async def kill(self) -> None:
        """kill -9: no cleanup at all, as a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 15)
        self.output += out.decode()

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return resp.status, await resp.text()

    async def poll(
        self, path: str, accept: Callable[[Any], bool], timeout_s: float = 20.0, as_json: bool = True
    ) -> Any:
        """GET `path` until `accept(body)`; fails with the last body seen."""
        last: Any = None
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"monitor exited with {self.proc.returncode}: {self.output}")
            try:
                status, text = await self.get(path)
                last = json.loads(text) if as_json else text
                if status == 200 and accept(last):
                    return last
            except (aiohttp.ClientError, json.JSONDecodeError):
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"{path}: condition not met in {timeout_s}s; last: {last}")

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the daemon's own /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        _, text = await self.get("/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
        return None
