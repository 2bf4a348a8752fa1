"""A lean HTTP/1.1 client for the http check: one request per fresh connection, nothing pooled.

Why not aiohttp's client: its per-request CPU cost, at thousands of checks on one core (README:
Performance). A health check needs none of what it buys (pooling, cookies, proxies, streaming
APIs): it opens a fresh connection every run, since a pooled one can miss a listener that died.
A bare `asyncio.Protocol` (checks.httpexchange) writes request bytes built once and parses the
answer with httptools' `HttpResponseParser` (llhttp).

What it does, aiohttp's defaults kept where the check relied on them: `Host`, `User-Agent`,
`Accept: */*`, Basic auth from the URL's userinfo, `Connection: close`; redirects followed (the
10th redirect answer is "too many redirects"); chunked, Content-Length and EOF-delimited bodies;
gzip/deflate bodies decompressed (none is asked for: no Accept-Encoding is sent); 1xx interim
answers skipped. The caller owns the deadline: cancelling a request aborts its connection.
"""

from __future__ import annotations

import asyncio
import base64
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
from checks.tls import TlsOptions, client_context
from monitor import __version__

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


def _build_request(method: str, target: _Target, headers: Mapping[str, str]) -> bytes:
    """The request head; `headers` (configured) override the defaults case-insensitively."""
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
    lines = [f"{method} {target.path} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in fields.values())
    lines.append("\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- the public face


class Response:
    """The final response: status and head now; `read()` for the body; `close()` in a finally."""

    __slots__ = ("_exchange", "charset", "content_length", "peer_cert", "status")

    def __init__(self, exchange: Exchange) -> None:
        headers = exchange.head
        self._exchange = exchange
        self.status = exchange.status
        self.peer_cert = exchange.peer_cert
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

    It keeps what a run needs (request bytes, where to connect) and, for redirects, the method,
    URL and headers it was built from; the rest of a `_Target` is derived again on a redirect
    only: one is kept per check.
    """

    __slots__ = (
        "_headers",
        "_host",
        "_https",
        "_keep_body",
        "_limit",
        "_method",
        "_port",
        "_request",
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
    ) -> None:
        target = _Target(url)
        self._method = method
        self._url = url
        self._headers = dict(headers) if headers else _NO_HEADERS
        self._host = target.host
        self._port = target.port
        self._https = target.https
        self._tls = tls
        self._keep_body = keep_body
        self._limit = max_body
        self._request = _build_request(method, target, self._headers)

    async def send(self) -> Response:
        """The final response with its head read; OSError or HttpClientError when it failed.

        Cancelling it (the run's deadline) aborts the connection in hand.
        """
        # Only an https URL reports a certificate (tls_days_left), as before: not one reached by a redirect.
        https = self._https
        exchange = await self._exchange(self._host, self._port, https, self._request, self._method, https)
        if exchange.status in _REDIRECTS:
            return await self._follow(exchange)
        return Response(exchange)

    async def _follow(self, exchange: Exchange) -> Response:
        """Redirects from the first answer on; each hop's target and request are built here."""
        method, headers = self._method, self._headers
        target = _Target(self._url)
        want_cert = target.https  # as on the first hop, whatever the scheme redirected to
        redirects = 0
        while exchange.status in _REDIRECTS:
            # The same order as aiohttp: count, then look at Location.
            redirects += 1
            if redirects >= MAX_REDIRECTS:
                exchange.abort()
                raise TooManyRedirects()
            status = exchange.status
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method = "GET"
                headers = {k: v for k, v in headers.items() if k.lower() != "content-length"}
            location = exchange.location
            if location is None:
                break  # a 3xx without Location is the answer
            exchange.abort()  # its body is not wanted
            new_target = _redirect_target(target.url, location)
            if new_target.origin != target.origin:
                # Credentials stay with their origin (the URL's userinfo too: new_target has its own).
                headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
            elif new_target.auth is None:
                new_target.auth = target.auth
            target = new_target
            request = _build_request(method, target, headers)
            exchange = await self._exchange(
                target.host, target.port, target.https, request, method, want_cert
            )
        return Response(exchange)

    async def _exchange(
        self, host: str, port: int, https: bool, request: bytes, method: str, want_cert: bool
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
        try:
            if https:
                await loop.create_connection(
                    lambda: exchange, host, port, ssl=client_context(self._tls), server_hostname=host
                )
            else:
                await loop.create_connection(lambda: exchange, host, port)
        except BaseException:
            exchange.abort()  # connected, then cancelled before create_connection returned
            exchange._parser = None
            raise
        try:
            await exchange.headers()
        except BaseException:
            exchange.abort()
            raise
        return exchange


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
