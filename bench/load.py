"""Load processes of the benchmark: the raw aiohttp floor and the blackbox_exporter driver.

Both start the same checks at the same rate as the daemon (every item once per interval, spread
evenly) with no scheduler, no evaluation and no metrics. They are steered over stdin: a line
`mark` answers one JSON line of counters on stdout, `stop` (or EOF) ends the process; it also
ends by itself after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import aiohttp

from bench import tls

# One deadline per run, as the daemon's checks have in the generated config.
RUN_TIMEOUT_S = 5.0
# More runs in flight than this means the process cannot keep up: further starts are dropped.
MAX_IN_FLIGHT = 4096
# The shortest sleep of the dispatch loop between starting the runs that fell due.
TICK_S = 0.005
_BLACKBOX_MODULES = {
    "http": "http_health",
    "https": "https_health",
    "tcp": "tcp_connect",
    "websocket": "ws_handshake",
}


@dataclass(slots=True)
class Counters:
    started: int = 0
    ok: int = 0
    failed: int = 0
    dropped: int = 0
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    def snapshot(self) -> dict[str, float]:
        return {
            "t": time.monotonic(),
            "started": self.started,
            "ok": self.ok,
            "failed": self.failed,
            "dropped": self.dropped,
            "in_flight": len(self.in_flight),
        }


Run = Callable[[], Awaitable[bool]]


def _items(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(kind, target) per check, interleaved the same way every time."""
    items = (
        [("http", args.http_url)] * args.http
        + [("https", args.https_url)] * args.https
        + [("tcp", args.tcp_target)] * args.tcp
        + [("websocket", args.ws_url)] * args.websocket
    )
    random.Random(5).shuffle(items)
    return items


def _floor_runs(session: aiohttp.ClientSession) -> dict[str, Callable[[str], Awaitable[bool]]]:
    async def http(url: str) -> bool:
        # https: a full handshake every run (force_close, no session reuse), verified against the bench CA.
        async with session.get(url) as response:
            body = await response.read()
        return response.status == 200 and json.loads(body).get("status") == "ok"

    async def tcp(target: str) -> bool:
        host, _, port = target.rpartition(":")
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def websocket(url: str) -> bool:
        ws = await session.ws_connect(url, autoping=False)
        await ws.close()
        return True

    return {"http": http, "https": http, "tcp": tcp, "websocket": websocket}


def _blackbox_runs(
    session: aiohttp.ClientSession, blackbox_url: str
) -> dict[str, Callable[[str], Awaitable[bool]]]:
    def probe(kind: str) -> Callable[[str], Awaitable[bool]]:
        module = _BLACKBOX_MODULES[kind]

        async def run(target: str) -> bool:
            if kind == "websocket":  # the tcp prober does the handshake: it takes host:port
                target = urlsplit(target).netloc
            query = urlencode({"module": module, "target": target})
            async with session.get(f"{blackbox_url}/probe?{query}") as response:
                body = await response.read()
            return response.status == 200 and b"\nprobe_success 1" in body

        return run

    return {kind: probe(kind) for kind in _BLACKBOX_MODULES}


async def _one(counters: Counters, run: Callable[[str], Awaitable[bool]], target: str) -> None:
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            ok = await run(target)
    except Exception:  # a failed run is counted, as the daemon counts a failed check
        ok = False
    if ok:
        counters.ok += 1
    else:
        counters.failed += 1


async def _dispatch(
    counters: Counters,
    items: list[tuple[str, str]],
    runs: dict[str, Callable[[str], Awaitable[bool]]],
    interval_s: float,
) -> None:
    """Starts item i at start + i * interval / len(items), round and round."""
    rate = len(items) / interval_s
    start = time.monotonic()
    done = 0
    while True:
        due = int((time.monotonic() - start) * rate)
        while done < due:
            kind, target = items[done % len(items)]
            done += 1
            if len(counters.in_flight) >= MAX_IN_FLIGHT:
                counters.dropped += 1
                continue
            counters.started += 1
            task = asyncio.create_task(_one(counters, runs[kind], target))
            counters.in_flight.add(task)
            task.add_done_callback(counters.in_flight.discard)
        # Sleep until the next run falls due, at least one tick (a few runs start together at a high rate).
        await asyncio.sleep(max(TICK_S, start + (done + 1) / rate - time.monotonic()))


async def _control(counters: Counters, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).strip():
        if line == b"mark":
            print(json.dumps(counters.snapshot()), flush=True)
        elif line == b"stop":
            break
    stop.set()


async def main_async(args: argparse.Namespace) -> None:
    counters = Counters()
    if args.mode == "floor":
        ssl_context = tls.client_context(Path(args.ca_file)) if args.ca_file else True
        # A fresh connection per run.
        connector = aiohttp.TCPConnector(force_close=True, limit=0, ssl=ssl_context)
    else:
        connector = aiohttp.TCPConnector(limit=512)  # keep-alive to the exporter, as Prometheus does
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), trust_env=False
    ) as session:
        runs = _floor_runs(session) if args.mode == "floor" else _blackbox_runs(session, args.blackbox_url)
        stop = asyncio.Event()
        dispatch = asyncio.create_task(_dispatch(counters, _items(args), runs, args.interval))
        control = asyncio.create_task(_control(counters, stop))
        print(json.dumps({"ready": True}), flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), args.max_seconds)
        dispatch.cancel()
        control.cancel()
        if counters.in_flight:
            await asyncio.wait(set(counters.in_flight), timeout=RUN_TIMEOUT_S + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["floor", "blackbox"])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    parser.add_argument("--interval", type=float, required=True)
    parser.add_argument("--http", type=int, default=0, help="number of HTTP checks")
    parser.add_argument("--tcp", type=int, default=0, help="number of TCP checks")
    parser.add_argument("--websocket", type=int, default=0, help="number of WebSocket checks")
    parser.add_argument("--https", type=int, default=0, help="number of HTTPS checks")
    parser.add_argument("--https-url", default="")
    parser.add_argument("--ca-file", default="", help="the CA the floor trusts for --https-url")
    parser.add_argument("--http-url", default="")
    parser.add_argument("--tcp-target", default="", help="host:port")
    parser.add_argument("--ws-url", default="")
    parser.add_argument("--blackbox-url", default="", help="http://host:port of the exporter")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    if args.http + args.https + args.tcp + args.websocket <= 0:
        parser.error("no checks")
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main_async(args))
    else:
        asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
