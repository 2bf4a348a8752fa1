"""checks.httpclient: request bytes, redirects, decoding and limits, against raw loopback servers."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import gzip
import zlib
from collections.abc import Iterator

import pytest

from checks import httpclient, httpexchange
from checks.httpclient import (
    BodyError,
    InvalidRedirect,
    InvalidResponse,
    PreparedRequest,
    Response,
)
from monitor import __version__
from monitor.tls import TlsOptions
from tests.checks.raw_servers import Ending, RawRequest, RawServers, answer, response
from tests.fakes.servers import HOST

UA = f"monitor/{__version__}"


def prepared(
    url: str, method: str = "GET", keep_body: bool = True, max_body: int = 1_000_000, **headers: str
) -> PreparedRequest:
    return PreparedRequest(method, url, headers, tls=TlsOptions(), keep_body=keep_body, max_body=max_body)


async def fetch(request: PreparedRequest) -> tuple[Response, bytes]:
    response = await request.send()
    try:
        return response, await response.read()
    finally:
        response.close()


# ---------------------------------------------------------------- request bytes


def head_lines(request: PreparedRequest) -> list[str]:
    return request._request.decode().split("\r\n")


@pytest.mark.parametrize(
    ("url", "request_line", "host"),
    [
        ("http://example.com", "GET / HTTP/1.1", "example.com"),
        ("http://Example.COM:80/a?b=%2F+c#frag", "GET /a?b=%2F+c HTTP/1.1", "example.com"),
        ("https://example.com:443/x", "GET /x HTTP/1.1", "example.com"),
        ("https://example.com:8443/x", "GET /x HTTP/1.1", "example.com:8443"),
        ("http://[::1]/metrics", "GET /metrics HTTP/1.1", "[::1]"),
        ("http://[::1]:9100/metrics", "GET /metrics HTTP/1.1", "[::1]:9100"),
        ("http://example.com/caf\u00e9 menu", "GET /caf%C3%A9%20menu HTTP/1.1", "example.com"),
        ("http://b\u00fccher.example/", "GET / HTTP/1.1", "xn--bcher-kva.example"),
    ],
    ids=["bare", "default-port", "https-default", "https-port", "ipv6", "ipv6-port", "non-ascii", "idna"],
)
def test_request_line_and_host(url: str, request_line: str, host: str) -> None:
    lines = head_lines(prepared(url))

    assert lines[0] == request_line
    assert lines[1:] == [f"Host: {host}", f"User-Agent: {UA}", "Accept: */*", "Connection: close", "", ""]


def test_userinfo_is_percent_decoded_into_basic_auth() -> None:
    lines = head_lines(prepared("http://us%40er:p%3Ass@example.com/"))

    assert "Authorization: Basic " + base64.b64encode(b"us@er:p:ss").decode() in lines


def test_configured_authorization_wins_over_the_userinfo() -> None:
    lines = head_lines(prepared("http://user:pw@example.com/", Authorization="Bearer t"))

    assert [line for line in lines if line.lower().startswith("authorization")] == ["Authorization: Bearer t"]


@pytest.mark.parametrize(
    ("method", "added"),
    [
        ("POST", ["Content-Length: 0", "Content-Type: application/octet-stream"]),
        ("DELETE", ["Content-Length: 0"]),
        ("OPTIONS", []),
    ],
)
def test_methods_with_a_body_say_it_is_empty(method: str, added: list[str]) -> None:
    lines = head_lines(prepared("http://example.com/", method))

    assert lines[0] == f"{method} / HTTP/1.1"
    assert lines[4:-3] == added


# ---------------------------------------------------------------- redirects


async def test_credentials_stay_with_their_origin(raw: RawServers) -> None:
    final = await raw.start(answer(response(200)))

    def respond(request: RawRequest) -> tuple[bytes, Ending]:
        if request.target == "/":
            return response(302, headers={"Location": "/same"}), "close"
        # "localhost" is another origin than 127.0.0.1, on the same port.
        return response(302, headers={"Location": f"http://localhost:{final.port}/other"}), "close"

    first = await raw.start(respond)
    request = prepared(f"http://user:pw@{HOST}:{first.port}/", Cookie="c=1", **{"X-Probe": "1"})

    response_, _body = await fetch(request)

    assert response_.status == 200
    same, other = first.requests[1], final.requests[0]
    assert same.headers["authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    assert same.headers["cookie"] == "c=1"
    assert "authorization" not in other.headers
    assert "cookie" not in other.headers
    assert "x-probe" not in other.headers  # none of the configured headers leave their origin
    assert other.headers["host"] == f"localhost:{final.port}"


async def test_location_is_percent_encoded(raw: RawServers) -> None:
    def respond(request: RawRequest) -> tuple[bytes, Ending]:
        if request.target == "/":
            # UTF-8 on the wire (`response` writes the head as latin-1).
            location = "/caf\u00e9 menu?q=a b".encode().decode("latin-1")
            return response(301, headers={"Location": location}), "close"
        return response(200), "close"

    server = await raw.start(respond)

    await fetch(prepared(f"{server.base}/"))

    assert server.requests[1].target == "/caf%C3%A9%20menu?q=a%20b"


async def test_redirect_without_location_is_the_answer(raw: RawServers) -> None:
    server = await raw.start(answer(response(302, b"nowhere")))

    response_, body = await fetch(prepared(f"{server.base}/"))

    assert (response_.status, body) == (302, b"nowhere")


async def test_redirect_to_another_scheme_fails(raw: RawServers) -> None:
    server = await raw.start(answer(response(302, headers={"Location": "ftp://files.example.com/x"})))

    with pytest.raises(InvalidRedirect) as caught:
        await fetch(prepared(f"{server.base}/"))

    assert str(caught.value) == "invalid redirect: not an HTTP URL (ftp:)"


# ---------------------------------------------------------------- response bodies


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw-deflate"])
async def test_deflate_bodies_are_decompressed(raw: RawServers, wbits: int) -> None:
    compressor = zlib.compressobj(wbits=wbits)
    body = compressor.compress(b"deflated " * 100) + compressor.flush()
    server = await raw.start(answer(response(200, body, {"Content-Encoding": "deflate"})))

    response_, received = await fetch(prepared(server.base))

    assert received == b"deflated " * 100
    assert response_.body_size == 900


async def test_a_truncated_gzip_stream_is_a_body_error(raw: RawServers) -> None:
    body = gzip.compress(b"z" * 5000)[:-12]
    server = await raw.start(answer(response(200, body, {"Content-Encoding": "gzip"})))

    with pytest.raises(BodyError) as caught:
        await fetch(prepared(server.base))

    assert str(caught.value) == "body: Can not decode content-encoding: gzip"


async def test_body_is_not_kept_unless_asked_but_still_counted(raw: RawServers) -> None:
    server = await raw.start(answer(response(200, b"x" * 5000)))

    response_, body = await fetch(prepared(server.base, keep_body=False))

    assert (body, response_.body_size) == (b"", 5000)


async def test_charset_and_content_length_from_the_head(raw: RawServers) -> None:
    head = {"Content-Type": 'text/plain; format=flowed; Charset="ISO-8859-1"'}
    server = await raw.start(answer(response(200, b"caf\xe9", head)))

    response_, body = await fetch(prepared(server.base))

    assert (response_.charset, response_.content_length, body) == ("ISO-8859-1", 4, b"caf\xe9")


async def test_bare_lf_line_ends_are_accepted(raw: RawServers) -> None:
    # As aiohttp's response parser took them: some embedded servers write them.
    server = await raw.start(answer(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok"))

    response_, body = await fetch(prepared(server.base))

    assert (response_.status, body) == (200, b"ok")


async def test_bytes_after_the_response_are_ignored(raw: RawServers) -> None:
    server = await raw.start(answer(response(200, b"ok") + b"NOT HTTP\r\n\r\n"))

    response_, body = await fetch(prepared(server.base))

    assert (response_.status, body) == (200, b"ok")


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"".join(b"X-%d: v\r\n" % i for i in range(129)), "invalid response: Too many headers received"),
        (b"X-Big: " + b"a" * 9000 + b"\r\n", "invalid response: header field over 8190 bytes"),
    ],
    ids=["count", "field-size"],
)
async def test_head_limits(raw: RawServers, head: bytes, reason: str) -> None:
    server = await raw.start(answer(b"HTTP/1.1 200 OK\r\n" + head + b"Content-Length: 0\r\n\r\n"))

    with pytest.raises(InvalidResponse) as caught:
        await fetch(prepared(server.base))

    assert str(caught.value) == reason


async def test_endless_head_is_cut_off(raw: RawServers) -> None:
    endless = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(400))
    server = await raw.start(answer(endless, "hang"))

    with pytest.raises(InvalidResponse) as caught:
        await fetch(prepared(server.base))

    assert str(caught.value) in {
        f"invalid response: head over {httpexchange._MAX_HEAD_BYTES} bytes",
        "invalid response: Too many headers received",
    }


# ---------------------------------------------------------------- resources


@pytest.fixture
def gc_disabled() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "answered",
    [
        response(200, b"ok"),
        response(200, b"short", {"Content-Length": "100"}),
        b"SSH-2.0-OpenSSH_9.2\r\n",
        b"",
    ],
    ids=["complete", "cut-short", "not-http", "no-answer"],
)
async def test_an_exchange_is_freed_without_the_garbage_collector(
    raw: RawServers, gc_disabled: None, answered: bytes
) -> None:
    # Parser and protocol refer to each other until the connection is lost, and a failed
    # exchange's error to its traceback: 2,000 runs a second must not leave a cycle each.
    server = await raw.start(answer(answered))
    for _ in range(5):
        with contextlib.suppress(httpclient.HttpClientError):
            await fetch(prepared(server.base))
    await asyncio.sleep(0.05)  # connection_lost runs soon after the close

    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        cycles = [thing for thing in gc.garbage if isinstance(thing, httpexchange.Exchange)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()

    assert cycles == []
