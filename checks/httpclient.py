"""A lean HTTP/1.1 client for the http check: one request per fresh connection, nothing pooled.

Why not aiohttp's client: its per-request CPU cost, at thousands of checks on one core (README:
Performance). A health check needs none of what it buys (pooling, cookies, proxies, streaming
APIs): it opens a fresh connection every run, since a pooled one can miss a listener that died.
A bare `asyncio.Protocol` writes request bytes built once and parses the answer with httptools'
`HttpResponseParser` (llhttp).

What it does, aiohttp's defaults kept where the check relied on them: `Host`, `User-Agent`,
`Accept: */*`, Basic auth from the URL's userinfo, `Connection: close`; redirects followed (the
10th redirect answer is "too many redirects"); chunked, Content-Length and EOF-delimited bodies;
gzip/deflate bodies decompressed (none is asked for: no Accept-Encoding is sent); 1xx interim
answers skipped. The caller owns the deadline: cancelling a request aborts its connection.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, NoReturn, cast
from urllib.parse import quote, unquote, urljoin, urlsplit

import httptools

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
    "tls_context",
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
# llhttp has no limits of its own; these are aiohttp's, so a head it took is still taken, and a
# server sending headers forever costs memory up to _MAX_HEAD_BYTES, no more.
_MAX_FIELD_BYTES: Final = 8190
_MAX_HEADERS: Final = 128
_MAX_HEAD_BYTES: Final = 2 * _MAX_HEADERS * _MAX_FIELD_BYTES
# Characters sent as written in a request target; anything else (non-ASCII, controls, `"<>\^`{|}`)
# is percent-encoded as UTF-8. Existing %XX escapes are kept as given.
_TARGET_SAFE: Final = "!#$%&'()*+,/:;=?@[]~"
_WANTED_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"content-type"})
_LOCATION_HEADERS = frozenset({b"location", b"uri"})

# Shared by every request that has no configured headers (most): not an empty dict each.
_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})

_TLS_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def tls_context(verify: bool) -> ssl.SSLContext:
    """The process's client context for `verify`, built on first use.

    Built once: loading the system CA store costs milliseconds of CPU, too much for every run.
    """
    context = _TLS_CONTEXTS.get(verify)
    if context is None:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context = _TLS_CONTEXTS.setdefault(verify, context)
    return context


# ---------------------------------------------------------------- errors


class HttpClientError(Exception):
    """An exchange that failed after connecting; `str()` is the one-line reason for people."""


class ServerDisconnected(HttpClientError):
    def __init__(self) -> None:
        super().__init__("server disconnected")


class InvalidResponse(HttpClientError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid response: {detail}")


class BodyError(HttpClientError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"body: {detail}")


class TooManyRedirects(HttpClientError):
    def __init__(self) -> None:
        super().__init__("too many redirects")


class InvalidRedirect(HttpClientError):
    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid redirect: {detail}")


class BodyTooLarge(HttpClientError):
    """The decoded body passed `max_body` while it streamed; the caller words the reason."""

    def __init__(self) -> None:
        super().__init__("body over max_body")


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


# ---------------------------------------------------------------- one exchange


def _new_decoder(encoding: bytes, first: bytes) -> zlib._Decompress:
    if encoding == b"gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # "deflate" should be zlib-wrapped (RFC 9110); some servers send raw deflate, as aiohttp allows.
    return zlib.decompressobj(zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS)


class _Exchange(asyncio.Protocol):
    """One connection: writes the request when connected, parses one response (1xx skipped)."""

    __slots__ = (
        "_body_parts",
        "_body_size",
        "_complete",
        "_decoder",
        "_encoding",
        "_error",
        "_framed",
        "_head_bytes",
        "_header_count",
        "_headers_done",
        "_interim",
        "_is_head",
        "_keep_body",
        "_limit",
        "_loop",
        "_over",
        "_parser",
        "_request",
        "_transport",
        "_waiter",
        "_want_cert",
        "_wire_size",
        "head",
        "location",
        "peer_cert",
        "status",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        request: bytes,
        *,
        is_head: bool,
        keep_body: bool,
        limit: int,
        want_cert: bool,
    ) -> None:
        self._loop = loop
        self._request = request
        self._is_head = is_head
        self._keep_body = keep_body
        self._limit = limit
        self._want_cert = want_cert
        # Dropped when the connection is lost: parser and protocol refer to each other, and a cycle
        # per run would be left to the garbage collector.
        parser = httptools.HttpResponseParser(self)
        # The leniencies aiohttp's response parser has: bare LF line ends, odd header bytes.
        parser.set_dangerous_leniencies(
            lenient_headers=True, lenient_optional_cr_before_lf=True, lenient_spaces_after_chunk_size=True
        )
        self._parser: httptools.HttpResponseParser | None = parser
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.head: dict[bytes, bytes] = {}
        self._head_bytes = 0
        self._headers_done = False
        self._interim = False
        self._complete = False
        self._framed = False
        self._over = False  # complete or failed: nothing more to read
        self._error: BaseException | None = None  # why it failed, until raised
        self._encoding = b""
        self._decoder: zlib._Decompress | None = None
        self._body_parts: list[bytes] = []
        self._body_size = 0
        self._wire_size = 0
        self._header_count = 0
        self.status = 0
        self.location: str | None = None
        self.peer_cert: bytes | None = None

    # -------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        if self._want_cert:
            # Read now: once the response is complete the connection is closed.
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.peer_cert = ssl_object.getpeercert(binary_form=True)
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self._over:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # 101 Switching Protocols: the head is the whole answer.
            if not self._over:
                self._finish()
        except httptools.HttpParserError as exc:
            # Bytes after the end of the response are none of our business.
            if not self._over:
                self._fail(InvalidResponse(str(exc) or type(exc).__name__))
        if not self._headers_done and not self._over:
            self._head_bytes += len(data)
            if self._head_bytes > _MAX_HEAD_BYTES:
                self._fail(InvalidResponse(f"head over {_MAX_HEAD_BYTES} bytes"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._parser = None
        if self._over:
            self._wake()
        elif not self._headers_done:
            # A reset or TLS error says more than "disconnected"; a clean close says no more.
            self._fail(exc if isinstance(exc, OSError) else ServerDisconnected())
        elif self._framed:
            length = _content_length(self.head)
            if length is None:
                self._fail(BodyError("Not enough data to satisfy transfer length header"))
            else:
                received = f"received {self._wire_size} of {length} bytes"
                self._fail(BodyError(f"Not enough data to satisfy content length header ({received})"))
        else:
            # Neither Content-Length nor chunked: the body ends where the connection does.
            self._finish()

    # -------------------------------------------------- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._over:
            return
        self._header_count += 1
        if self._header_count > _MAX_HEADERS:
            self._fail(InvalidResponse("Too many headers received"))
        elif len(value) > _MAX_FIELD_BYTES or len(name) > _MAX_FIELD_BYTES:
            self._fail(InvalidResponse(f"header field over {_MAX_FIELD_BYTES} bytes"))
        name = name.lower()
        if name in _WANTED_HEADERS or name in _LOCATION_HEADERS:
            self.head.setdefault(name, value)  # the first, as aiohttp's headers.get() gave

    def on_headers_complete(self) -> None:
        if self._over or self._parser is None:
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # An interim answer (100 Continue, 103 Early Hints): the real one follows.
            self._interim = True
            self.head = {}
            self._header_count = 0
            return
        headers = self.head
        encoding = headers.get(b"content-encoding", b"").strip().lower()
        if encoding in (b"br", b"zstd") and not self._is_head and status not in (204, 304):
            # Never asked for (no Accept-Encoding is sent), and no decoder here.
            self._fail(InvalidResponse(f"Can not decode content-encoding: {encoding.decode()}"))
            return
        if encoding not in (b"gzip", b"deflate"):
            encoding = b""  # identity, or a coding aiohttp passed through as well
        self._encoding = encoding
        self.status = status
        self._headers_done = True
        self._framed = b"content-length" in headers or headers.get(
            b"transfer-encoding", b""
        ).lower().rstrip().endswith(b"chunked")
        location = headers.get(b"location") or headers.get(b"uri")
        if location is not None:
            self.location = location.decode("utf-8", "surrogateescape")
        if self._is_head:
            self._finish()
        else:
            self._wake()

    def on_body(self, data: bytes) -> None:
        if self._over:
            return
        self._wire_size += len(data)
        if self._encoding:
            data = self._decode(data)
            if self._over:
                return
        self._body_size += len(data)
        if self._body_size > self._limit:
            # Stop reading now: a server streaming forever must cost max_body, not memory.
            self._fail(BodyTooLarge())
        elif self._keep_body:
            self._body_parts.append(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        elif not self._over:
            self._finish()

    # -------------------------------------------------- internals

    def _decode(self, data: bytes) -> bytes:
        encoding = self._encoding
        if not data:
            return data
        if self._decoder is None:
            self._decoder = _new_decoder(encoding, data)
        try:
            # One byte over the limit is enough to tell: a compression bomb never expands in full.
            out = self._decoder.decompress(data, self._limit - self._body_size + 1)
        except zlib.error:
            self._fail(BodyError(f"Can not decode content-encoding: {encoding.decode()}"))
            return b""
        if self._decoder.unconsumed_tail:
            self._fail(BodyTooLarge())
        return out

    def _finish(self) -> None:
        decoder = self._decoder
        if decoder is not None and not decoder.eof:
            # A compressed stream cut short: what came is not the body the server meant.
            self._fail(BodyError(f"Can not decode content-encoding: {self._encoding.decode()}"))
            return
        self._complete = self._over = True
        if self._transport is not None:
            self._transport.close()
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._over:
            self._over = True
            self._error = error
        if self._transport is not None:
            self._transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _raise(self) -> NoReturn:
        # Not kept once raised: its traceback refers to this exchange, a cycle left to the collector.
        error, self._error = self._error, None
        try:
            raise error or HttpClientError("exchange failed")
        finally:
            del error  # the same for this frame's own reference

    async def headers(self) -> None:
        """Until the final response's head is in (or the exchange failed)."""
        while not self._headers_done and not self._over:
            await self._wait()
        if not self._headers_done:
            self._raise()

    async def body(self) -> bytes:
        """Until the response is complete; the body when kept, else b""."""
        while not self._over:
            await self._wait()
        if not self._complete:
            self._raise()
        return b"".join(self._body_parts)

    def abort(self) -> None:
        """Drop the connection unless the response is complete (then it is closed already)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.abort()


# ---------------------------------------------------------------- the public face


class Response:
    """The final response: status and head now; `read()` for the body; `close()` in a finally."""

    __slots__ = ("_exchange", "charset", "content_length", "peer_cert", "status")

    def __init__(self, exchange: _Exchange) -> None:
        headers = exchange.head
        self._exchange = exchange
        self.status = exchange.status
        self.peer_cert = exchange.peer_cert
        self.content_length = _content_length(headers)
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


def _content_length(headers: Mapping[bytes, bytes]) -> int | None:
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:  # llhttp refuses such a head; never an exception here all the same
        return None


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
        "_tls_verify",
        "_url",
    )

    def __init__(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        *,
        tls_verify: bool,
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
        self._tls_verify = tls_verify
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

    async def _follow(self, exchange: _Exchange) -> Response:
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
    ) -> _Exchange:
        loop = asyncio.get_running_loop()
        exchange = _Exchange(
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
                    lambda: exchange, host, port, ssl=tls_context(self._tls_verify), server_hostname=host
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
