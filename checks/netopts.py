"""How the http, websocket and tcp checks reach a target: name resolution, the Happy Eyeballs
connect (aiohappyeyeballs, the race aiohttp itself uses) with `ip_family`, and the CONNECT tunnel
through a proxy (monitor.proxies chooses it). The aiohttp paths (prometheus, notifiers) get the
same race from their connector.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

import aiohappyeyeballs

from monitor.neterrors import network_reason
from monitor.proxies import Proxy, ProxyError

__all__ = [
    "FAMILIES",
    "HAPPY_EYEBALLS_DELAY",
    "AddrInfo",
    "IpFamily",
    "addresses_of",
    "connect_any",
    "numeric_addrinfo",
    "open_proxy_socket",
    "open_socket",
    "open_stream",
    "open_tunnel",
    "resolve",
]

IpFamily = Literal["any", "ipv4", "ipv6"]
FAMILIES: Final[Mapping[str, int]] = {
    "any": socket.AF_UNSPEC,
    "ipv4": socket.AF_INET,
    "ipv6": socket.AF_INET6,
}
# RFC 8305 section 8: the recommended Connection Attempt Delay.
HAPPY_EYEBALLS_DELAY: Final = 0.25
# A CONNECT answer is a status line and a few headers; a proxy sending more is not one.
_MAX_CONNECT_HEAD: Final = 16 * 1024

AddrInfo = tuple[int, int, int, str, tuple[Any, ...]]


# ---------------------------------------------------------------- resolving and connecting


def numeric_addrinfo(host: str, port: int) -> list[AddrInfo] | None:
    """The address list of an IP-literal host, made without a lookup; None for a name."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.version == 6:
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]


async def resolve(host: str, port: int, family: int) -> list[AddrInfo]:
    """The addresses of `host`, in the resolver's order (RFC 6724): the step tests replace."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    if not infos:
        raise socket.gaierror(socket.EAI_NONAME, "no address")
    return infos


async def addresses_of(
    host: str,
    port: int,
    family: int,
    samples: dict[str, float] | None,
    known: list[AddrInfo] | None = None,
) -> list[AddrInfo]:
    """The addresses to connect to: `known` (an IP literal's, no lookup) or looked up, `dns_ms`
    into `samples` then."""
    if known is not None:
        if family != socket.AF_UNSPEC and known[0][0] != family:
            raise socket.gaierror(socket.EAI_FAMILY, "address family does not match ip_family")
        return known
    started = time.perf_counter()
    addresses = await resolve(host, port, family)
    if samples is not None:
        samples["dns_ms"] = (time.perf_counter() - started) * 1000
    return addresses


async def connect_any(addresses: list[AddrInfo], samples: dict[str, float] | None) -> socket.socket:
    """A connected non-blocking socket to the first address that answers, both families raced
    (RFC 8305: the next address gets its turn 250 ms after the one before); `connect_ms`."""
    started = time.perf_counter()
    sock = await aiohappyeyeballs.start_connection(addresses, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY)
    if samples is not None:
        samples["connect_ms"] = (time.perf_counter() - started) * 1000
    return sock


async def open_socket(
    host: str,
    port: int,
    family: int,
    samples: dict[str, float] | None,
    known: list[AddrInfo] | None = None,
) -> socket.socket:
    """`addresses_of`, then `connect_any`."""
    return await connect_any(await addresses_of(host, port, family, samples, known), samples)


async def open_proxy_socket(proxy: Proxy, family: int, samples: dict[str, float] | None) -> socket.socket:
    """A socket connected to the proxy; a failure is ProxyError `proxy host:port: <why>`."""
    try:
        return await open_socket(
            proxy.host, proxy.port, family, samples, numeric_addrinfo(proxy.host, proxy.port)
        )
    except OSError as exc:
        raise ProxyError(f"proxy {proxy.shown}: {network_reason(exc)}") from None


async def open_tunnel(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """`CONNECT host:port` on a socket connected to `proxy`; ProxyError unless it answers 2xx."""
    loop = asyncio.get_running_loop()
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
    head = b""
    try:
        await loop.sock_sendall(sock, request)
        while b"\r\n\r\n" not in head:
            data = await loop.sock_recv(sock, 4096)
            if not data:
                raise ProxyError(f"proxy {proxy.shown}: closed the connection during CONNECT")
            head += data
            if len(head) > _MAX_CONNECT_HEAD:
                raise ProxyError(f"proxy {proxy.shown}: CONNECT answer over {_MAX_CONNECT_HEAD} bytes")
    except OSError as exc:
        raise ProxyError(f"proxy {proxy.shown}: {network_reason(exc)}") from None
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise ProxyError(f"proxy {proxy.shown}: invalid CONNECT answer")
    status = int(status_line[1])
    if not 200 <= status < 300:
        raise ProxyError(f"proxy CONNECT answered {status}")


async def open_stream(
    host: str,
    port: int,
    family: int,
    proxy: Proxy | None,
    samples: dict[str, float] | None,
    addresses: list[AddrInfo] | None = None,
) -> socket.socket:
    """A socket to `host:port` itself, or through a CONNECT tunnel of `proxy`; closed on failure."""
    if proxy is None:
        return await open_socket(host, port, family, samples, addresses)
    sock = await open_proxy_socket(proxy, family, samples)
    try:
        await open_tunnel(sock, proxy, host, port)
    except BaseException:
        sock.close()
        raise
    return sock
