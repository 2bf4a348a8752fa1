"""One HTTP/1.1 exchange on one fresh connection for checks.httpclient: the request written when
connected, one response parsed with httptools' llhttp (1xx answers skipped); and the client's errors.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Mapping
from typing import Final, NoReturn, cast

import httptools

from monitor.neterrors import network_reason

__all__ = [
    "BodyError",
    "BodyTooLarge",
    "Exchange",
    "HttpClientError",
    "InvalidRedirect",
    "InvalidResponse",
    "ServerDisconnected",
    "TooManyRedirects",
    "content_length",
]

# llhttp has no limits of its own; these are aiohttp's, so a head it took is still taken, and a
# server sending headers forever costs memory up to _MAX_HEAD_BYTES, no more.
_MAX_FIELD_BYTES: Final = 8190
_MAX_HEADERS: Final = 128
_MAX_HEAD_BYTES: Final = 2 * _MAX_HEADERS * _MAX_FIELD_BYTES
_WANTED_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"content-encoding", b"content-type"})
_LOCATION_HEADERS = frozenset({b"location", b"uri"})


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


# ---------------------------------------------------------------- one exchange


def content_length(headers: Mapping[bytes, bytes]) -> int | None:
    """The Content-Length of a response head; None when absent or not a number."""
    value = headers.get(b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:  # llhttp refuses such a head; never an exception here all the same
        return None


def _new_decoder(encoding: bytes, first: bytes) -> zlib._Decompress:
    if encoding == b"gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    # "deflate" should be zlib-wrapped (RFC 9110); some servers send raw deflate, as aiohttp allows.
    return zlib.decompressobj(zlib.MAX_WBITS if first[0] & 0x0F == 8 else -zlib.MAX_WBITS)


class Exchange(asyncio.Protocol):
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
        "first_byte_at",
        "head",
        "location",
        "peer_cert",
        "sent_at",
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
        # Made once connected (a refused connect, a storm's every run, needs none) and dropped when
        # the connection is lost: parser and protocol refer to each other, and a cycle per run
        # would be left to the garbage collector.
        self._parser: httptools.HttpResponseParser | None = None
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
        # perf_counter() when the request was written and the answer's first byte came (ttfb_ms).
        self.sent_at = 0.0
        self.first_byte_at = 0.0

    # -------------------------------------------------- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)
        parser = self._parser = httptools.HttpResponseParser(self)
        # The leniencies aiohttp's response parser has: bare LF line ends, odd header bytes.
        parser.set_dangerous_leniencies(
            lenient_headers=True, lenient_optional_cr_before_lf=True, lenient_spaces_after_chunk_size=True
        )
        if self._want_cert:
            # Read now: once the response is complete the connection is closed.
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                self.peer_cert = ssl_object.getpeercert(binary_form=True)
        transport.write(self._request)
        self.sent_at = time.perf_counter()

    def data_received(self, data: bytes) -> None:
        if not self.first_byte_at:
            self.first_byte_at = time.perf_counter()
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
        elif isinstance(exc, ConnectionError):
            # A reset mid-body cuts it short however it is framed, and says why.
            length = content_length(self.head) if self._framed else None
            of = "" if length is None else f" of {length}"
            self._fail(BodyError(f"{network_reason(exc)} (received {self._wire_size}{of} bytes)"))
        elif self._framed:
            length = content_length(self.head)
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
