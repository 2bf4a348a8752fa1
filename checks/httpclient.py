"""A lean HTTP/1.1 client for the http check: one request per fresh connection, nothing pooled.

Why not aiohttp's client: its per-request CPU cost, at thousands of checks on one core (README:
Performance). A health check needs none of what it buys (pooling, cookies, proxies, streaming
APIs): it opens a fresh connection every run, since a pooled one can miss a listener that died.
A bare `asyncio.Protocol` (checks.httpexchange) writes request bytes built once and parses the
answer with httptools' `HttpResponseParser` (llhttp).

It connects through checks.netopts (Happy Eyeballs, `ip_family`, a proxy: CONNECT for https,
the absolute-form request for http) and fills the first hop's timing samples.

What it does, aiohttp's defaults kept where the check relied on them: `Host`, `User-Agent`,
`Accept: */*`, Basic auth from the URL's userinfo, `Connection: close`; redirects followed (the
10th redirect answer is "too many redirects"); chunked, Content-Length and EOF-delimited bodies;
gzip/deflate bodies decompressed (none is asked for: no Accept-Encoding is sent); 1xx interim
answers skipped; a redirect to another origin carries none of the configured headers and no
userinfo. The caller owns the deadline: cancelling a request aborts its connection.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final
from urllib.parse import quote, unquote, urljoin, urlsplit

from checks.httpexchange import (
    BodyError,
    BodyTooLarge,
    Exchange,
    HttpClientError,
    InvalidRedirect,
    InvalidResponse,
    ServerDisconnected,
    TooManyRedirects,
    content_length,
)
from checks.netopts import (
    AddrInfo,
    addresses_of,
    connect_any,
    numeric_addrinfo,
    open_proxy_socket,
    open_stream,
)
from monitor import __version__
from monitor.proxies import Proxy, choose_proxy
from monitor.tls import TlsOptions, client_context

__all__ = [
    "BodyError",
    "BodyTooLarge",
    "HttpClientError",
    "InvalidRedirect",
    "InvalidResponse",
    "PreparedRequest",
    "Response",
    "ServerDisconnected",
    "TooManyRedirects",
]

USER_AGENT: Final = f"monitor/{__version__}"
# aiohttp's default: the 10th redirect answer in a row fails the request.
MAX_REDIRECTS: Final = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Methods that carry no body: others get `Content-Length: 0`, as aiohttp sends for them.
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# aiohttp labels an empty POST/PUT/PATCH body application/octet-stream; some servers want a type.
_TYPED_METHODS = frozenset({"POST", "PUT", "PATCH"})
# Characters sent as written in a request target; anything else (non-ASCII, controls, `"<>\^`{|}`)
# is percent-encoded as UTF-8. Existing %XX escapes are kept as given.
_TARGET_SAFE: Final = "!#$%&'()*+,/:;=?@[]~"

# Shared by every request that has no configured headers (most): not an empty dict each.
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})

# ---------------------------------------------------------------- URLs and request bytes


class _Target:
    """Where one request goes: connect address, Host header, request target, auth from userinfo.

    Short-lived: built to prepare a request and for each redirect, never kept between runs.
    """

    __slots__ = ("auth", "host", "host_header", "https", "origin", "path", "port", "url")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(url)
        host = parts.hostname  # lowercase, without brackets
        if not host.isascii():
            host = host.encode("idna").decode("ascii")
        port = parts.port  # ValueError when out of range
        default_port = _DEFAULT_PORTS[scheme]
        shown = f"[{host}]" if ":" in host else host
        self.url = url
        self.https = scheme == "https"
        self.host = host
        self.port = default_port if port is None else port
        self.host_header = shown if port is None or port == default_port else f"{shown}:{port}"
        self.origin = (scheme, host, self.port)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        self.path = quote(path, safe=_TARGET_SAFE, errors="surrogateescape")
        self.auth: str | None = None
        if parts.username is not None or parts.password is not None:
            # As aiohttp: percent-decoded user and password, latin-1 (UTF-8 when it cannot encode).
            credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            try:
                raw = credentials.encode("latin-1")
            except UnicodeEncodeError:
                raw = credentials.encode("utf-8")
            self.auth = "Basic " + base64.b64encode(raw).decode("ascii")


def _build_request(
    method: str, target: _Target, headers: Mapping[str, str], proxy: Proxy | None = None
) -> bytes:
    """The request head; `headers` (configured) override the defaults case-insensitively. With a
    `proxy` (plain http through it) the target is in absolute form, with the proxy's credentials."""
    fields: dict[str, tuple[str, str]] = {
        "host": ("Host", target.host_header),
        "user-agent": ("User-Agent", USER_AGENT),
        "accept": ("Accept", "*/*"),
    }
    for name, value in headers.items():
        fields[name.lower()] = (name, value)
    # A configured Authorization header wins over the URL's userinfo.
    if target.auth is not None and "authorization" not in fields:
        fields["authorization"] = ("Authorization", target.auth)
    framed = "content-length" in fields or "transfer-encoding" in fields
    if method not in _BODYLESS_METHODS and not framed:
        fields["content-length"] = ("Content-Length", "0")
    if method in _TYPED_METHODS and "content-type" not in fields:
        fields["content-type"] = ("Content-Type", "application/octet-stream")
    if "connection" not in fields:
        fields["connection"] = ("Connection", "close")
    path = target.path
    if proxy is not None:
        path = f"http://{target.host_header}{path}"
        if proxy.authorization:
            fields["proxy-authorization"] = ("Proxy-Authorization", proxy.authorization)
    lines = [f"{method} {path} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in fields.values())
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- the public face


class Response:
    """The final response: status and head now; `read()` for the body; `close()` in a finally."""

    __slots__ = ("_exchange", "charset", "content_length", "peer_cert", "status")

    def __init__(self, exchange: Exchange, peer_cert: bytes | None) -> None:
        headers = exchange.head
        self._exchange = exchange
        self.status = exchange.status
        self.peer_cert = peer_cert  # the first hop's: the configured URL's host
        self.content_length = content_length(headers)
        self.charset = _charset(headers.get(b"content-type"))

    @property
    def body_size(self) -> int:
        """Body bytes received so far, after chunked and content decoding."""
        return self._exchange._body_size

    async def read(self) -> bytes:
        """The whole body (b"" unless kept); BodyTooLarge past the limit, BodyError when cut short."""
        return await self._exchange.body()

    def close(self) -> None:
        self._exchange.abort()


def _charset(content_type: bytes | None) -> str | None:
    """The `charset` parameter of a Content-Type value, if any."""
    if not content_type or b"charset" not in content_type.lower():
        return None
    for param in content_type.decode("latin-1").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip('"').strip() or None
    return None


class PreparedRequest:
    """A request built once (for a check's whole life) and sent once per run, redirects included.

    It keeps what a run needs (request bytes, where to connect, the TLS context, the proxy) and,
    for redirects, the method, URL and headers it was built from; the rest of a `_Target` is
    derived again on a redirect only: one is kept per check.
    """

    __slots__ = (
        "_addresses",
        "_context",
        "_family",
        "_headers",
        "_host",
        "_https",
        "_keep_body",
        "_limit",
        "_method",
        "_origin",
        "_port",
        "_proxy",
        "_proxy_setting",
        "_request",
        "_server_name",
        "_tls",
        "_url",
    )

    def __init__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        tls: TlsOptions,
        keep_body: bool,
        max_body: int,
        proxy: str | None = None,
        family: int = socket.AF_UNSPEC,
        server_name: str | None = None,
    ) -> None:
        target = _Target(url)
        self._method = method
        self._url = url
        self._headers = dict(headers) if headers else _NO_HEADERS
        self._host = target.host
        self._port = target.port
        self._https = target.https
        self._origin = target.origin
        self._tls = tls
        self._keep_body = keep_body
        self._limit = max_body
        self._family = family
        self._server_name = server_name
        self._proxy_setting = proxy
        # Chosen once: the proxy environment is read once, and the configured host never changes.
        self._proxy = choose_proxy(proxy, target.https, target.host)
        self._addresses = numeric_addrinfo(target.host, target.port) if self._proxy is None else None
        self._context = client_context(tls) if target.https else None
        plain_proxy = self._proxy if not target.https else None
        self._request = _build_request(method, target, self._headers, plain_proxy)

    async def send(self, samples: dict[str, float] | None = None) -> Response:
        """The final response with its head read; OSError, ProxyError or HttpClientError when it
        failed. `samples` gets the first hop's `dns_ms` (a name looked up), `connect_ms`,
        `tls_ms` (https) and `ttfb_ms`.

        Cancelling it (the run's deadline) aborts the connection in hand.
        """
        https = self._https
        exchange = await self._exchange(
            self._host,
            self._port,
            https,
            self._request,
            self._method,
            self._proxy,
            self._addresses,
            samples,
            want_cert=https,
        )
        if exchange.status in _REDIRECTS:
            return await self._follow(exchange)
        return Response(exchange, exchange.peer_cert)

    async def _follow(self, exchange: Exchange) -> Response:
        """Redirects from the first answer on; each hop's target and request are built here."""
        peer_cert = exchange.peer_cert  # tls_days_left is the configured host's
        method = self._method
        target = _Target(self._url)
        redirects = 0
        while exchange.status in _REDIRECTS:
            # The same order as aiohttp: count, then look at Location.
            redirects += 1
            if redirects >= MAX_REDIRECTS:
                exchange.abort()
                raise TooManyRedirects()
            status = exchange.status
            to_get = (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST")
            if to_get:
                method = "GET"
            location = exchange.location
            if location is None:
                break  # a 3xx without Location is the answer
            exchange.abort()  # its body is not wanted
            new_target = _redirect_target(target.url, location)
            if new_target.origin == self._origin:
                headers = self._headers
                if new_target.auth is None:
                    new_target.auth = _Target(self._url).auth
            else:
                # The configured headers and the URL's userinfo belong to the configured origin.
                headers = _NO_HEADERS
            if to_get and headers:
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            target = new_target
            proxy = choose_proxy(self._proxy_setting, target.https, target.host)
            request = _build_request(method, target, headers, proxy if not target.https else None)
            addresses = numeric_addrinfo(target.host, target.port) if proxy is None else None
            exchange = await self._exchange(
                target.host, target.port, target.https, request, method, proxy, addresses, None
            )
        return Response(exchange, peer_cert)

    async def _exchange(
        self,
        host: str,
        port: int,
        https: bool,
        request: bytes,
        method: str,
        proxy: Proxy | None,
        addresses: list[AddrInfo] | None,
        samples: dict[str, float] | None,
        *,
        want_cert: bool = False,
    ) -> Exchange:
        loop = asyncio.get_running_loop()
        exchange = Exchange(
            loop,
            request,
            is_head=method == "HEAD",
            keep_body=self._keep_body,
            limit=self._limit,
            want_cert=want_cert,
        )
        if proxy is None:
            if addresses is None or self._family:  # an address literal, any family: nothing to do
                addresses = await addresses_of(host, port, self._family, samples, addresses)
            if len(addresses) == 1 and not https:
                # The most common run, kept inline: the loop's own connect, no race to run.
                address = addresses[0][4]
                started = time.perf_counter()
                try:
                    await loop.create_connection(lambda: exchange, address[0], address[1])
                except BaseException:
                    exchange.abort()  # connected, then cancelled before create_connection returned
                    exchange._parser = None
                    raise
                if samples is not None:
                    samples["connect_ms"] = (exchange.sent_at - started) * 1000
            elif len(addresses) == 1:
                await self._connect_tls_direct(loop, exchange, addresses[0], host, samples)
            else:
                await self._connect_sock(
                    loop, exchange, await connect_any(addresses, samples), host, https, samples
                )
        elif https:
            sock = await open_stream(host, port, self._family, proxy, samples)  # a CONNECT tunnel
            await self._connect_sock(loop, exchange, sock, host, https, samples)
        else:
            sock = await open_proxy_socket(proxy, self._family, samples)
            await self._connect_sock(loop, exchange, sock, host, https, samples)
        try:
            await exchange.headers()
        except BaseException:
            exchange.abort()
            raise
        if samples is not None and exchange.first_byte_at:
            samples["ttfb_ms"] = (exchange.first_byte_at - exchange.sent_at) * 1000
        return exchange

    def _server_hostname(self, host: str) -> str:
        # tls_server_name names the configured host only, not a redirect's other host.
        return self._server_name if self._server_name and host == self._host else host

    async def _connect_tls_direct(
        self,
        loop: asyncio.AbstractEventLoop,
        exchange: Exchange,
        address: AddrInfo,
        host: str,
        samples: dict[str, float] | None,
    ) -> None:
        """One address for https: the loop's own connect (no race to run), then TLS started on
        the connected transport, so that each step is timed."""
        sockaddr = address[4]  # an address: the loop skips the lookup, and knows its family
        started = time.perf_counter()
        try:
            transport, _ = await loop.create_connection(asyncio.Protocol, sockaddr[0], sockaddr[1])
        except BaseException:
            exchange._parser = None
            raise
        connected = time.perf_counter()
        try:
            context = self._context or client_context(self._tls)
            tls = await loop.start_tls(
                transport, exchange, context, server_hostname=self._server_hostname(host)
            )
        except BaseException:
            transport.abort()
            exchange._parser = None
            raise
        if samples is not None:
            samples["connect_ms"] = (connected - started) * 1000
            samples["tls_ms"] = (time.perf_counter() - connected) * 1000
        exchange.connection_made(tls)  # start_tls hands the protocol over without calling it

    async def _connect_sock(
        self,
        loop: asyncio.AbstractEventLoop,
        exchange: Exchange,
        sock: socket.socket,
        host: str,
        https: bool,
        samples: dict[str, float] | None,
    ) -> None:
        """A socket connected already (the race's winner, a proxy, a tunnel) into the exchange."""
        try:
            if https:
                started = time.perf_counter()
                context = self._context or client_context(self._tls)
                name = self._server_hostname(host)
                await loop.create_connection(lambda: exchange, sock=sock, ssl=context, server_hostname=name)
                if samples is not None:
                    samples["tls_ms"] = (time.perf_counter() - started) * 1000
            else:
                await loop.create_connection(lambda: exchange, sock=sock)
        except BaseException:
            exchange.abort()  # connected, then cancelled before create_connection returned
            exchange._parser = None
            sock.close()
            raise


def _redirect_target(current: str, location: str) -> _Target:
    """Where a Location points, resolved against the current URL (both relative and absolute)."""
    try:
        url = urljoin(current, quote(location.strip(), safe=_TARGET_SAFE, errors="surrogateescape"))
        scheme = urlsplit(url).scheme
        if scheme.lower() not in _DEFAULT_PORTS:
            raise InvalidRedirect(f"not an HTTP URL ({scheme}:)")
        return _Target(url)
    except ValueError:
        raise InvalidRedirect("Location is not a URL") from None
