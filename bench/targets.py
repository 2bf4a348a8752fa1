"""Loopback targets besides nginx: a TCP listener and a WebSocket echo server, in one process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


async def _tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A TCP check only connects: wait for the client to close, then close our end.
    with contextlib.suppress(OSError):
        await reader.read(1)
    writer.close()


async def _echo(ws: ServerConnection) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for message in ws:
            await ws.send(message)


async def main_async(max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    tcp = await asyncio.start_server(_tcp_client, "127.0.0.1", 0, backlog=4096)
    async with serve(_echo, "127.0.0.1", 0, ping_interval=None, backlog=4096, close_timeout=0.5) as ws:
        ports = {
            "tcp_port": tcp.sockets[0].getsockname()[1],
            "ws_port": next(iter(ws.sockets)).getsockname()[1],
        }
        print(json.dumps(ports), flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(), max_seconds)  # until stdin closes
    tcp.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args(argv)
    # A handshake-only probe drops the connection without a closing handshake: not worth a log line.
    logging.basicConfig(level=logging.CRITICAL)
    import uvloop

    uvloop.run(main_async(args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
