"""Bad input to the HTTP API: a 4xx `{"error": ...}` answer, nothing stored, and GET keeps working."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.store import make_store
from tests.fakes.postgres import PostgresCluster
from tests.test_api import firing_alert

TOKEN = "api-secret-token"
OUT_OF_RANGE_END = "9999-12-31T23:59:59-12:00"  # year 10000 in UTC
GOOD_SILENCE = {"checks": ["database"], "end": "2099-01-01T00:00:00Z", "comment": "migration"}


@contextlib.asynccontextmanager
async def started(state: str = "memory") -> AsyncIterator[Daemon]:
    """A daemon with an API token and one check whose connections are refused (so an alert fires)."""
    with socket.socket() as closed:  # bound, not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        toml = f"""\
            [monitor]
            listen = "127.0.0.1:0"
            state = "{state}"
            api_token = "{TOKEN}"
            [thresholds.up]
            trigger_after = 1
            [[checks]]
            name = "database"
            type = "tcp"
            host = "127.0.0.1"
            port = {port}
            interval = "0.2s"
            timeout = "0.1s"
            """
        daemon = Daemon(parse_config(textwrap.dedent(toml), {}), registry=CollectorRegistry())
        await daemon.start()
        try:
            yield daemon
        finally:
            await daemon.stop()


@pytest.fixture
async def api() -> AsyncIterator[Daemon]:
    async with started() as daemon:
        yield daemon


async def send(
    daemon: Daemon,
    method: str,
    path: str,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
    token: str | None = TOKEN,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """Raw bytes in; the status and the parsed JSON answer out (the test fails if it is not JSON)."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method, f"http://127.0.0.1:{daemon.bound_port}{path}", data=data, headers=sent
        ) as resp,
    ):
        text = await resp.text()
        assert resp.content_type == "application/json", (resp.status, text[:200])
        return resp.status, json.loads(text) if text else None, resp


async def send_json(daemon: Daemon, method: str, path: str, body: object) -> tuple[int, Any]:
    status, answer, _ = await send(daemon, method, path, json.dumps(body).encode())
    return status, answer


async def assert_nothing_stored(daemon: Daemon) -> None:
    status, listed, _ = await send(daemon, "GET", "/api/v1/silences")
    assert (status, listed) == (200, {"silences": []})
    assert await daemon.store.load_silences() == []


def assert_error(status: int, answer: Any, expected_status: int, *words: str) -> None:
    assert status == expected_status, answer
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    assert isinstance(answer["error"], str) and answer["error"], answer
    for word in words:
        assert word in answer["error"], (word, answer)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Bodies that are no JSON object at all, or that the parser cannot take: each is a 400 (or 413).
RAW_BODIES = [
    pytest.param(b'{"checks": ["\xff\xfe"], "end": "2099-01-01T00:00:00Z"}', 400, "UTF-8", id="not-utf8"),
    pytest.param(
        b'{"checks": ["\xc0\xaf"], "end": "2099-01-01T00:00:00Z"}', 400, "UTF-8", id="overlong-utf8"
    ),
    pytest.param(b"\xef\xbb\xbf{}", 400, "JSON", id="utf8-bom"),
    pytest.param(nested(100_000), 413, "bytes", id="nested-100000-over-size-limit"),
    pytest.param(nested(20_000), 400, "nested", id="nested-20000"),
    pytest.param(b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400, "nested", id="nested-objects-10000"),
    pytest.param(b'{"comment": ' + nested(33) + b"}", 400, "nested", id="nested-33"),
    pytest.param(b'{"comment": ' + b"1" * 5000 + b"}", 400, "number", id="5000-digit-number"),
    pytest.param(b'{"comment": NaN}', 400, "NaN", id="nan-constant"),
    pytest.param(b'{"comment": Infinity}', 400, "Infinity", id="infinity-constant"),
    pytest.param(b'{"checks": ', 400, "invalid JSON", id="truncated"),
    pytest.param(b"[1, 2]", 400, "JSON object", id="list"),
    pytest.param(b'"text"', 400, "JSON object", id="string"),
    pytest.param(b"null", 400, "JSON object", id="null"),
    pytest.param(b'{"comment": "' + b"x" * 100_000 + b'"}', 413, "bytes", id="100KB-string"),
]


@pytest.mark.parametrize(("data", "expected", "word"), RAW_BODIES)
async def test_bad_silence_bodies_are_4xx_json_and_store_nothing(
    api: Daemon, data: bytes, expected: int, word: str
) -> None:
    status, answer, _ = await send(api, "POST", "/api/v1/silences", data)
    assert_error(status, answer, expected, word)
    await assert_nothing_stored(api)


@pytest.mark.parametrize(("data", "expected", "word"), RAW_BODIES)
async def test_bad_ack_bodies_are_4xx_json_and_acknowledge_nothing(
    api: Daemon, data: bytes, expected: int, word: str
) -> None:
    alert = await firing_alert(api)
    status, answer, _ = await send(api, "POST", f"/api/v1/alerts/{alert['id']}/ack", data)
    assert_error(status, answer, expected, word)
    _, listed, _ = await send(api, "GET", "/api/v1/alerts")
    assert [a["acknowledged"] for a in listed["alerts"]] == [False]


@pytest.mark.parametrize(
    "content_type",
    ["application/json; charset=no-such-charset", "application/json; charset=latin-1"],
    ids=["unknown-charset", "latin-1-charset"],
)
async def test_a_declared_charset_does_not_change_json_decoding(api: Daemon, content_type: str) -> None:
    data = b'{"checks": ["caf\xe9"], "end": "2099-01-01T00:00:00Z"}'  # latin-1 bytes: not UTF-8
    status, answer, _ = await send(api, "POST", "/api/v1/silences", data, {"Content-Type": content_type})
    assert_error(status, answer, 400, "UTF-8")
    await assert_nothing_stored(api)


async def test_a_100kb_body_is_a_json_413(api: Daemon) -> None:
    body = {**GOOD_SILENCE, "comment": "x" * 100_000}
    status, answer = await send_json(api, "POST", "/api/v1/silences", body)
    assert_error(status, answer, 413, "65536 bytes")
    await assert_nothing_stored(api)


async def test_an_end_past_year_9999_in_utc_is_a_400_and_get_keeps_working(api: Daemon) -> None:
    status, answer = await send_json(
        api, "POST", "/api/v1/silences", {**GOOD_SILENCE, "end": OUT_OF_RANGE_END}
    )
    assert_error(status, answer, 400, "end: out of range")
    await assert_nothing_stored(api)
    status, created = await send_json(api, "POST", "/api/v1/silences", GOOD_SILENCE)
    assert status == 201, created
    status, listed, _ = await send(api, "GET", "/api/v1/silences")
    assert (status, listed) == (200, {"silences": [created]})


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({**GOOD_SILENCE, "end": OUT_OF_RANGE_END}, "end", id="end-year-10000-utc"),
        pytest.param(
            {**GOOD_SILENCE, "end": "9999-12-31T23:59:59.999999-00:01"}, "end", id="end-minute-late"
        ),
        pytest.param({**GOOD_SILENCE, "start": "0001-01-01T00:00:00+01:00"}, "start", id="start-year-0-utc"),
        pytest.param(
            {**GOOD_SILENCE, "start": "0001-01-01T00:30:00+00:31"}, "start", id="start-minute-early"
        ),
    ],
)
async def test_times_outside_years_1_to_9999_in_utc_are_a_400_naming_the_field(
    api: Daemon, body: dict[str, Any], field: str
) -> None:
    status, answer = await send_json(api, "POST", "/api/v1/silences", body)
    assert_error(status, answer, 400, f"{field}: out of range")
    await assert_nothing_stored(api)


@pytest.mark.parametrize(
    ("query", "word"),
    [
        pytest.param(f"since={OUT_OF_RANGE_END}", "since: out of range", id="year-10000"),
        pytest.param("since=%ff", "since", id="not-utf8"),
        pytest.param("since=%00", "since", id="nul"),
        pytest.param("since=2026-01-01T00:00:00%2B99:00", "since", id="offset-99h"),
    ],
)
async def test_bad_since_is_a_400_naming_it(api: Daemon, query: str, word: str) -> None:
    status, answer, _ = await send(api, "GET", f"/api/v1/alerts?state=resolved&{query}")
    assert_error(status, answer, 400, word)


# One wrong type or value per field: each is a 400 whose message starts with the field's name.
SILENCE_FIELDS = [
    pytest.param({"checks": "database"}, "checks", id="checks-string"),
    pytest.param({"checks": []}, "checks", id="checks-empty"),
    pytest.param({"checks": None}, "checks", id="checks-null"),
    pytest.param({"checks": {"a": 1}}, "checks", id="checks-object"),
    pytest.param({"checks": [1]}, "checks", id="checks-number-item"),
    pytest.param({"checks": [""]}, "checks", id="checks-empty-glob"),
    pytest.param({"checks": [["a"]]}, "checks", id="checks-list-item"),
    pytest.param({"checks": ["a\u0000b"]}, "checks", id="checks-nul"),
    pytest.param({"checks": ["\ud800"]}, "checks", id="checks-lone-surrogate"),
    pytest.param({"start": 0}, "start", id="start-zero"),
    pytest.param({"start": 1_700_000_000}, "start", id="start-number"),
    pytest.param({"start": False}, "start", id="start-false"),
    pytest.param({"start": True}, "start", id="start-true"),
    pytest.param({"start": []}, "start", id="start-empty-list"),
    pytest.param({"start": ""}, "start", id="start-empty-string"),
    pytest.param({"start": {"at": "now"}}, "start", id="start-object"),
    pytest.param({"end": 4_102_444_800}, "end", id="end-number"),
    pytest.param({"end": None}, "end", id="end-null"),
    pytest.param({"end": ["2099-01-01T00:00:00Z"]}, "end", id="end-list"),
    pytest.param({"end": True}, "end", id="end-bool"),
    pytest.param({"end": "2099-13-01T00:00:00Z"}, "end", id="end-month-13"),
    pytest.param({"comment": ["a"]}, "comment", id="comment-list"),
    pytest.param({"comment": 5}, "comment", id="comment-number"),
    pytest.param({"comment": {"a": "b"}}, "comment", id="comment-object"),
    pytest.param({"comment": None}, "comment", id="comment-null"),
    pytest.param({"comment": "a\u0000b"}, "comment", id="comment-nul"),
    pytest.param({"comment": "\udfff"}, "comment", id="comment-lone-surrogate"),
    pytest.param({"chekcs": ["a"]}, "chekcs", id="unknown-key"),
]


@pytest.mark.parametrize(("change", "field"), SILENCE_FIELDS)
async def test_wrong_silence_fields_are_a_400_naming_the_field(
    api: Daemon, change: dict[str, Any], field: str
) -> None:
    status, answer = await send_json(api, "POST", "/api/v1/silences", {**GOOD_SILENCE, **change})
    assert_error(status, answer, 400)
    assert answer["error"].startswith(f"{field}: "), answer
    await assert_nothing_stored(api)


ACK_FIELDS = [
    pytest.param({"by": {"name": "alice"}}, "by", id="by-object"),
    pytest.param({"by": 7}, "by", id="by-number"),
    pytest.param({"by": ["alice"]}, "by", id="by-list"),
    pytest.param({"by": True}, "by", id="by-bool"),
    pytest.param({"by": "a\u0000"}, "by", id="by-nul"),
    pytest.param({"comment": ["on it"]}, "comment", id="comment-list"),
    pytest.param({"comment": 1.5}, "comment", id="comment-number"),
    pytest.param({"comment": {"a": 1}}, "comment", id="comment-object"),
    pytest.param({"comment": "\ud800"}, "comment", id="comment-lone-surrogate"),
    pytest.param({"byy": "alice"}, "byy", id="unknown-key"),
]


@pytest.mark.parametrize(("body", "field"), ACK_FIELDS)
async def test_wrong_ack_fields_are_a_400_naming_the_field(
    api: Daemon, body: dict[str, Any], field: str
) -> None:
    alert = await firing_alert(api)
    status, answer = await send_json(api, "POST", f"/api/v1/alerts/{alert['id']}/ack", body)
    assert_error(status, answer, 400)
    assert answer["error"].startswith(f"{field}: "), answer
    _, listed, _ = await send(api, "GET", "/api/v1/alerts")
    assert [a["acknowledged"] for a in listed["alerts"]] == [False]


async def raw_request(daemon: Daemon, head: bytes, body: bytes = b"") -> tuple[int, Any]:
    """Bytes no HTTP client would send (a header that is not UTF-8), over a plain socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.bound_port)
    try:
        writer.write(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    headers, _, text = rest.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in headers.lower(), answer[:300]
    return int(status_line.split()[1]), json.loads(text)


@pytest.mark.parametrize(
    "token",
    [b"\xff\xfe", b"api-secret-token\xff", b"\xc3\xa9"],
    ids=["not-utf8", "token-then-not-utf8", "non-ascii"],
)
async def test_a_bearer_token_that_is_not_ascii_is_a_401(api: Daemon, token: bytes) -> None:
    head = b"POST /api/v1/silences HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token + b"\r\n"
    status, answer = await raw_request(api, head, json.dumps(GOOD_SILENCE).encode())
    assert_error(status, answer, 401, "token")
    await assert_nothing_stored(api)


@pytest.mark.parametrize(
    ("method", "path", "expected", "allow"),
    [
        pytest.param("GET", "/api/v1/nope", 404, None, id="unknown-path"),
        pytest.param("GET", "/api/v1", 404, None, id="api-root"),
        pytest.param("GET", "/api/v1/silences/abc/extra", 404, None, id="too-deep"),
        pytest.param("POST", "/api/v1/checks", 405, "GET", id="post-checks"),
        pytest.param("GET", "/api/v1/alerts/x/ack", 405, "POST", id="get-ack"),
        pytest.param("PUT", "/api/v1/silences", 405, "GET", id="put-silences"),
        pytest.param("DELETE", "/api/v1/silences", 405, "GET", id="delete-without-id"),
    ],
)
async def test_unknown_routes_and_wrong_methods_answer_json(
    api: Daemon, method: str, path: str, expected: int, allow: str | None
) -> None:
    status, answer, resp = await send(api, method, path, b"{}")
    assert_error(status, answer, expected)
    if allow is not None:
        assert allow in resp.headers["Allow"]


async def test_an_unexpected_failure_is_a_json_500_with_a_logged_traceback(
    api: Daemon, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(api, "checks_view", broken)
    with caplog.at_level(logging.ERROR):
        status, answer, _ = await send(api, "GET", "/api/v1/checks")
    assert_error(status, answer, 500)
    assert "a bug" not in answer["error"]  # internals stay in the log
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is RuntimeError and getattr(record, "path", None) == "/api/v1/checks"


# Rows written before the API checked its input (or by hand): each must be skipped, not fatal.
BAD_ROWS = [
    pytest.param({"end": 253_402_343_999.0}, id="end-year-10000"),  # what 9999-12-31T23:59:59-12:00 stored
    pytest.param({"start": -62_135_600_400.0}, id="start-year-0"),
    pytest.param({"end": float("nan")}, id="end-nan"),
    pytest.param({"end": "2099-01-01T00:00:00Z"}, id="end-string"),
    pytest.param({"end": None}, id="end-null"),
    pytest.param({"checks": 5}, id="checks-number"),
    pytest.param({"checks": "database"}, id="checks-string"),
    pytest.param({"comment": ["x"]}, id="comment-list"),
    pytest.param({"surprise": 1}, id="unknown-key"),
    pytest.param({"end": ...}, id="end-missing"),
]


@pytest.mark.parametrize("change", BAD_ROWS)
async def test_a_bad_stored_silence_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: dict[str, Any]
) -> None:
    state = f"sqlite:///{tmp_path / 'state.db'}"
    good = {
        "id": "good",
        "checks": ["database"],
        "start": 1.0e9,
        "end": 4.1e9,
        "comment": "",
        "created_by": None,
    }
    bad = {k: v for k, v in {**good, "id": "bad", **change}.items() if v is not ...}
    store = make_store(state)
    await store.open()
    try:
        await store.save_silence("good", good)
        await store.save_silence("bad", bad)
    finally:
        await store.close()

    with caplog.at_level(logging.WARNING):
        async with started(state) as daemon:
            status, listed, _ = await send(daemon, "GET", "/api/v1/silences")
            assert status == 200, listed
            assert [s["id"] for s in listed["silences"]] == ["good"]
            _, checks, _ = await send(daemon, "GET", "/api/v1/checks")
            assert checks["checks"][0]["suppressed"] == "silence"  # the good row still applies
    skipped = [r for r in caplog.records if r.getMessage() == "stored silence skipped"]
    assert [getattr(r, "silence", None) for r in skipped] == ["bad"], [vars(r) for r in skipped]
    assert all(getattr(r, "reason", "") for r in skipped)  # and why it was skipped


@pytest.fixture
async def pg_state(pg_cluster: PostgresCluster) -> AsyncIterator[str]:
    """A fresh database on the session's PostgreSQL server, as a `state` URL."""
    async with pg_cluster.database("api_bad_input") as db:
        yield pg_cluster.dsn(database=db)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param(
            "silences", {**GOOD_SILENCE, "comment": "a\u0000b"}, "comment", id="silence-comment-nul"
        ),
        pytest.param(
            "silences", {**GOOD_SILENCE, "checks": ["\udc80*"]}, "checks", id="silence-glob-surrogate"
        ),
        pytest.param("ack", {"by": "\u0000"}, "by", id="ack-by-nul"),
        pytest.param("ack", {"comment": "\ud83d"}, "comment", id="ack-comment-surrogate"),
    ],
)
async def test_text_postgresql_cannot_keep_is_a_400_there(
    pg_state: str, path: str, body: dict[str, Any], field: str
) -> None:
    async with started(pg_state) as daemon:
        alert = await firing_alert(daemon)
        url = "/api/v1/silences" if path == "silences" else f"/api/v1/alerts/{alert['id']}/ack"
        status, answer = await send_json(daemon, "POST", url, body)
        assert_error(status, answer, 400)
        assert answer["error"].startswith(f"{field}: "), answer
        await assert_nothing_stored(daemon)
        unicode = {**GOOD_SILENCE, "comment": "café ✓ 🚧"}  # what PostgreSQL can keep still goes in
        status, created = await send_json(daemon, "POST", "/api/v1/silences", unicode)
        assert status == 201 and created["comment"] == "café ✓ 🚧"
