"""HttpCheck against real loopback HTTP(S) servers, run through run_check's deadline."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import ssl
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

from checks import httpclient
from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from monitor import __version__, tls
from monitor.config import parse_config
from monitor.evaluation import CheckEvaluator
from monitor.models import Level
from monitor.runner import run_check
from tests.checks.raw_servers import Ending, RawRequest, RawServers, Respond, answer, chunked, response
from tests.fakes.servers import (
    HOST,
    LoopbackServers,
    json_handler,
    refused_port,
    text_handler,
    tls_server_context,
    trusting_client_context,
)

RUNBOOK_BODY = {"status": "ok", "uptime": 12345, "database": {"pool": {"checked_out": 3}}}
SECRET = "Bearer s3cr3t-health-token"
JSON_BODY = json.dumps(RUNBOOK_BODY).encode()

MakeCheck = Callable[..., HttpCheck]


@pytest.fixture
def make_check(http_session: aiohttp.ClientSession) -> MakeCheck:
    """Builds a check with the deps the daemon gives every check (its one session, which the
    http check leaves to plugins: test_the_shared_session_is_never_used)."""
    deps = CheckDeps(http=http_session)

    def make(url: str, **options: Any) -> HttpCheck:
        config = HttpCheckConfig.model_validate({"name": "web", "type": "http", "url": url, **options})
        return HttpCheck(config, deps)

    return make


@pytest.fixture
def trust_tls_ca(monkeypatch: pytest.MonkeyPatch, tls_ca: trustme.CA) -> None:
    """The client's verifying context trusts `tls_ca`, as a daemon given it (SSL_CERT_FILE) would."""
    monkeypatch.setitem(tls._CONTEXTS, tls.TlsOptions(verify=True), trusting_client_context(tls_ca))


def untimed(samples: dict[str, float]) -> dict[str, float]:
    """`samples` without the connection timings every run has (test_proxy, test_eyeballs and
    test_websocket_limits check those)."""
    return {k: v for k, v in samples.items() if k not in ("dns_ms", "connect_ms", "tls_ms", "ttfb_ms")}


# ---------------------------------------------------------------- success


async def test_runbook_health_endpoint_succeeds_with_expectations_and_metrics(
    servers: LoopbackServers,
    make_check: MakeCheck,
) -> None:
    base = await servers.http({"/health": json_handler(RUNBOOK_BODY)})
    check = make_check(
        f"{base}/health",
        expect_status=[200],
        expect_json={"status": "ok", "database": {"pool": {}}},
        metrics={"uptime_s": "uptime", "pool_checked_out": "database.pool.checked_out"},
    )

    result = await run_check(check)

    assert result.reason is None
    assert result.up
    assert result.samples["status_code"] == 200
    assert result.samples["uptime_s"] == 12345
    assert result.samples["pool_checked_out"] == 3
    assert result.samples["body_bytes"] > 0
    assert "tls_days_left" not in result.samples
    assert result.latency_ms > 0


async def test_any_2xx_is_expected_by_default(servers: LoopbackServers, make_check: MakeCheck) -> None:
    base = await servers.http({"/": text_handler("", status=204)})

    result = await run_check(make_check(f"{base}/"))

    assert result.up
    assert untimed(result.samples) == {"status_code": 204, "body_bytes": 0}


async def test_expect_status_can_accept_a_non_2xx_status(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    base = await servers.http({"/": text_handler("maintenance", status=503)})

    result = await run_check(make_check(f"{base}/", expect_status=[503]))

    assert result.up


async def test_metrics_read_list_indexes_and_booleans(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    body = {"replicas": [{"lag": 0.5}, {"lag": 2}], "ready": True, "degraded": False}
    base = await servers.http({"/": json_handler(body)})
    metrics = {"lag_1": "replicas.1.lag", "lag_0": "replicas.0.lag", "ready": "ready", "bad": "degraded"}

    result = await run_check(make_check(f"{base}/", metrics=metrics))

    assert result.up
    assert {k: result.samples[k] for k in metrics} == {"lag_1": 2, "lag_0": 0.5, "ready": 1, "bad": 0}


async def test_expect_body_regex_matches(servers: LoopbackServers, make_check: MakeCheck) -> None:
    base = await servers.http({"/": text_handler("service: READY (v2)")})

    result = await run_check(make_check(f"{base}/", expect_body=r"READY \(v\d\)"))

    assert result.up


async def test_header_values_are_sent(servers: LoopbackServers, make_check: MakeCheck) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return web.Response(text="ok")

    base = await servers.http({"/": handler})

    result = await run_check(make_check(f"{base}/", headers={"Authorization": SECRET}))

    assert result.up
    assert seen == [SECRET]


async def test_method_is_used(servers: LoopbackServers, make_check: MakeCheck) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.method)
        return web.Response()

    base = await servers.http({"/": handler})

    result = await run_check(make_check(f"{base}/", method="head"))

    assert result.up
    assert seen == ["HEAD"]


async def test_the_shared_session_is_never_used(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    # The http check has its own client: given a closed session, one request through it would fail.
    base = await servers.http({"/health": json_handler(RUNBOOK_BODY)})
    await http_session.close()
    config = HttpCheckConfig.model_validate({"name": "web", "type": "http", "url": f"{base}/health"})

    result = await run_check(HttpCheck(config, CheckDeps(http=http_session)))

    assert (result.up, result.reason) == (True, None)


# ---------------------------------------------------------------- failures


async def test_refused_port(make_check: MakeCheck) -> None:
    with refused_port() as port:
        result = await run_check(make_check(f"http://127.0.0.1:{port}/"))

    assert not result.up
    assert result.reason == "connection refused"
    assert result.outcome == "failure"


async def test_slow_server_costs_exactly_the_timeout(servers: LoopbackServers, make_check: MakeCheck) -> None:
    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.Response()

    base = await servers.http({"/": slow})
    check = make_check(f"{base}/", timeout="500ms")

    result = await run_check(check)

    assert (result.up, result.reason, result.outcome) == (False, "timeout after 500ms", "timeout")
    assert 450 <= result.latency_ms < 2000


async def test_unexpected_status_fails_with_the_status(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    base = await servers.http({"/": json_handler({"status": "down"}, status=503)})

    result = await run_check(make_check(f"{base}/", expect_status=[200]))

    assert (result.up, result.reason) == (False, "status 503")
    assert result.samples["status_code"] == 503


@pytest.mark.parametrize(
    ("body", "expect_json", "reason"),
    [
        ({"status": "degraded"}, {"status": "ok"}, 'expect_json: status = "degraded"'),
        ({"uptime": 1}, {"status": "ok"}, "expect_json: status missing"),
        (
            {"database": {"pool": {"state": "exhausted"}}},
            {"database": {"pool": {"state": "ok"}}},
            'expect_json: database.pool.state = "exhausted"',
        ),
        ({"database": "down"}, {"database": {"up": True}}, 'expect_json: database = "down"'),
        ({"up": 1}, {"up": True}, "expect_json: up = 1"),
        (["ok"], {"status": "ok"}, 'expect_json: body = ["ok"]'),
        ({"nodes": ["a", "c"]}, {"nodes": ["a", "b"]}, 'expect_json: nodes.1 = "c"'),
    ],
    ids=["wrong-value", "missing-key", "nested", "not-an-object", "bool-vs-number", "root", "list"],
)
async def test_expect_json_mismatch_names_the_path_and_value(
    servers: LoopbackServers,
    body: Any,
    expect_json: dict[str, Any],
    reason: str,
    make_check: MakeCheck,
) -> None:
    base = await servers.http({"/": json_handler(body)})

    result = await run_check(make_check(f"{base}/", expect_json=expect_json))

    assert (result.up, result.reason) == (False, reason)


async def test_metrics_are_kept_when_expect_json_fails(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    body = {**RUNBOOK_BODY, "status": "degraded"}
    base = await servers.http({"/": json_handler(body)})
    check = make_check(
        f"{base}/",
        expect_json={"status": "ok"},
        metrics={"pool_checked_out": "database.pool.checked_out"},
    )

    result = await run_check(check)

    assert result.reason == 'expect_json: status = "degraded"'
    assert result.samples["pool_checked_out"] == 3


async def test_invalid_json(servers: LoopbackServers, make_check: MakeCheck) -> None:
    base = await servers.http({"/": text_handler("<html>oops</html>")})

    result = await run_check(make_check(f"{base}/", expect_json={"status": "ok"}))

    assert not result.up
    assert result.reason == "invalid JSON: Expecting value at line 1 column 1"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("database.pool.checked_out", 'metrics: path "database.pool.checked_out" not found'),
        ("status", 'metrics: path "status" is not a number ("ok")'),
        ("database.0", 'metrics: path "database.0" not found'),
    ],
    ids=["missing", "not-a-number", "index-into-object"],
)
async def test_metrics_path_failures(
    servers: LoopbackServers, path: str, reason: str, make_check: MakeCheck
) -> None:
    base = await servers.http({"/": json_handler({"status": "ok", "database": {}})})

    result = await run_check(make_check(f"{base}/", metrics={"m": path}))

    assert (result.up, result.reason) == (False, reason)
    assert "m" not in result.samples


async def test_expect_body_mismatch(servers: LoopbackServers, make_check: MakeCheck) -> None:
    base = await servers.http({"/": text_handler("starting up")})

    result = await run_check(make_check(f"{base}/", expect_body="^ready$"))

    assert (result.up, result.reason) == (False, "expect_body: /^ready$/ not found")


async def test_endless_body_stops_at_max_body_long_before_the_timeout(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 16_384
        while True:
            await response.write(chunk)

    base = await servers.http({"/": endless})
    check = make_check(f"{base}/", max_body="100KB", timeout="5s")

    result = await run_check(check)

    assert (result.up, result.reason, result.outcome) == (
        False,
        "body over max_body (100KB)",
        "failure",
    )
    assert result.latency_ms < 2000


async def test_declared_content_length_over_max_body_fails_before_reading(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    base = await servers.http({"/": text_handler("x" * 5000)})

    result = await run_check(make_check(f"{base}/", max_body="1KiB"))

    assert (result.up, result.reason) == (False, "body over max_body (1KiB): Content-Length 5000")


async def test_body_at_max_body_is_accepted(servers: LoopbackServers, make_check: MakeCheck) -> None:
    base = await servers.http({"/": text_handler("x" * 1000)})

    result = await run_check(make_check(f"{base}/", max_body=1000))

    assert result.up
    assert result.samples["body_bytes"] == 1000


# ---------------------------------------------------------------- TLS


async def test_untrusted_certificate_fails_verification(
    servers: LoopbackServers, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    base = await servers.http({"/": text_handler("ok")}, ssl_context=tls_server_context(tls_ca))

    result = await run_check(make_check(f"{base}/"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("TLS verify failed: ")
    assert "\n" not in result.reason


async def test_tls_verify_false_accepts_an_untrusted_certificate(
    servers: LoopbackServers, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    context = tls_server_context(tls_ca, valid_for=timedelta(days=30))
    base = await servers.http({"/": text_handler("ok")}, ssl_context=context)

    result = await run_check(make_check(f"{base}/", tls_verify=False))

    assert result.up
    assert result.samples["tls_days_left"] in {29, 30}


@pytest.mark.parametrize(
    ("valid_for", "expected", "level"),
    [(timedelta(days=5), {4, 5}, Level.WARNING), (timedelta(days=2), {1, 2}, Level.CRITICAL)],
    ids=["5-days-warning", "2-days-critical"],
)
async def test_tls_days_left_from_the_peer_certificate(
    servers: LoopbackServers,
    trust_tls_ca: None,
    tls_ca: trustme.CA,
    valid_for: timedelta,
    expected: set[int],
    level: Level,
    make_check: MakeCheck,
) -> None:
    context = tls_server_context(tls_ca, valid_for=valid_for)
    base = await servers.http({"/health": json_handler({"status": "ok"})}, ssl_context=context)

    result = await run_check(make_check(f"{base}/health", expect_json={"status": "ok"}))

    assert result.reason is None
    assert result.samples["tls_days_left"] in expected
    # The built-in row (warning 14, critical 3, direction below) judges it.
    config = parse_config(f'[[checks]]\nname = "web"\ntype = "http"\nurl = "{base}/health"\n', {})
    evaluator = CheckEvaluator("web", config.rows_for("web"))
    evaluator.observe(result, 0.0)
    assert evaluator.levels()["tls_days_left"] is level


async def test_tls_days_left_is_reported_for_a_failed_status(
    servers: LoopbackServers, trust_tls_ca: None, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    context = tls_server_context(tls_ca, valid_for=timedelta(days=10))
    base = await servers.http({"/": text_handler("down", status=500)}, ssl_context=context)

    result = await run_check(make_check(f"{base}/"))

    assert result.reason == "status 500"
    assert result.samples["tls_days_left"] in {9, 10}


# ---------------------------------------------------------------- config


def test_header_secret_never_shown() -> None:
    config = HttpCheckConfig.model_validate(
        {
            "name": "web",
            "type": "http",
            "url": "https://user:pw@api.example.com/health?token=q-secret",
            "headers": {"Authorization": SECRET},
        }
    )

    shown = [repr(config), str(config), str(config.model_dump()), config.model_dump_json()]

    for text in shown:
        assert SECRET not in text
        assert "s3cr3t" not in text
        assert "q-secret" not in text
        assert ":pw@" not in text
    assert config.headers["Authorization"].get_secret_value() == SECRET


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("https://backend.example.com/health", "backend.example.com"),
        ("http://backend.example.com:8080/health", "backend.example.com:8080"),
        ("https://user:pw@Backend.Example.com:443/x?token=1", "backend.example.com:443"),
        ("http://[::1]:9100/metrics", "[::1]:9100"),
    ],
    ids=["host", "port", "userinfo", "ipv6"],
)
async def test_target_is_host_with_named_port(url: str, target: str, make_check: MakeCheck) -> None:
    assert make_check(url).target() == target


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"url": "ftp://example.com/"}, "url", "invalid URL"),
        ({"url": "http:///path"}, "url", "invalid URL"),
        ({"url": "example.com/health"}, "url", "invalid URL"),
        ({"url": "http://example.com:99999/"}, "url", "invalid URL"),
        ({"expect_body": "(unclosed"}, "expect_body", "invalid regex"),
        ({"metrics": {"status_code": "code"}}, "metrics", "taken by a built-in sample"),
        ({"metrics": {"pool": "database..pool"}}, "metrics", "empty path part"),
        ({"headers": {"Bad Name": "x"}}, "headers", "invalid header name"),
        ({"expect_status": [200, 700]}, "expect_status", "less than or equal to 599"),
        ({"max_body": "lots"}, "max_body", "invalid size"),
        ({"method": "GET /"}, "method", "invalid HTTP method"),
        ({"verify": False}, "verify", "Extra inputs are not permitted"),
    ],
    ids=[
        "scheme",
        "no-host",
        "relative",
        "port",
        "regex",
        "metric-name",
        "metric-path",
        "header-name",
        "status",
        "size",
        "method",
        "unknown-key",
    ],
)
def test_invalid_config_is_rejected_at_its_key(options: dict[str, Any], field: str, message: str) -> None:
    table = {"name": "web", "type": "http", "url": "https://example.com/", **options}

    with pytest.raises(ValidationError) as caught:
        HttpCheckConfig.model_validate(table)

    errors = caught.value.errors()
    assert errors[0]["loc"][0] == field
    assert message in errors[0]["msg"]


def test_invalid_header_value_error_does_not_echo_the_secret() -> None:
    table = {"name": "web", "type": "http", "url": "https://example.com/"}
    table["headers"] = {"Authorization": "Bearer abc\r\nX-Injected: 1"}

    with pytest.raises(ValidationError) as caught:
        HttpCheckConfig.model_validate(table)

    assert "abc" not in str(caught.value)
    assert "line break" in str(caught.value)


async def test_unknown_host_is_a_dns_failure(make_check: MakeCheck) -> None:
    # .invalid never resolves (RFC 6761); without a resolver the error is still a DNS one.
    result = await run_check(make_check("http://monitor-test.invalid/", timeout="5s"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("DNS lookup failed: ")


# ---------------------------------------------------------------- the request on the wire


async def test_request_head_has_the_defaults_and_no_accept_encoding(
    raw: RawServers, make_check: MakeCheck
) -> None:
    server = await raw.start(answer(response(204)))

    result = await run_check(make_check(f"{server.base}/health?probe=1&x=%2F"))

    assert result.up
    [request] = server.requests
    assert (request.method, request.target) == ("GET", "/health?probe=1&x=%2F")
    assert request.headers == {
        "host": f"{HOST}:{server.port}",  # not the scheme's default port: named
        "user-agent": f"monitor/{__version__}",
        "accept": "*/*",
        "connection": "close",
    }


async def test_configured_headers_override_the_defaults_case_insensitively(
    raw: RawServers, make_check: MakeCheck
) -> None:
    server = await raw.start(answer(response(200)))
    headers = {"user-agent": "probe/2", "ACCEPT": "application/json", "Authorization": SECRET}

    result = await run_check(make_check(f"{server.base}/", headers=headers))

    assert result.up
    [request] = server.requests
    assert request.headers["user-agent"] == "probe/2"
    assert request.headers["accept"] == "application/json"
    assert request.headers["authorization"] == SECRET
    lines = request.raw.decode().lower().split("\r\n")
    assert sum(line.startswith("user-agent:") for line in lines) == 1
    assert sum(line.startswith("accept:") for line in lines) == 1


async def test_basic_auth_from_the_url_userinfo_never_shown(raw: RawServers, make_check: MakeCheck) -> None:
    expected = "Basic " + base64.b64encode(b"health:p@ss:w0rd").decode()

    def respond(request: RawRequest) -> tuple[bytes, Ending]:
        if request.headers.get("authorization") == expected:
            return response(200, b"hi"), "close"
        return response(401, b"who?"), "close"

    server = await raw.start(respond)
    url = f"http://health:p%40ss%3Aw0rd@{HOST}:{server.port}/"

    ok = await run_check(make_check(url))
    refused = await run_check(make_check(url.replace("w0rd", "wrong")))

    assert (ok.up, ok.reason) == (True, None)
    assert (refused.up, refused.reason) == (False, "status 401")
    assert server.requests[0].headers["authorization"] == expected
    assert server.requests[1].headers["authorization"] != expected
    for result in (ok, refused):
        assert "p@ss" not in repr(result)
        assert "w0rd" not in repr(result)
        assert "p%40ss" not in repr(result)


async def test_post_sends_an_empty_body(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(answer(response(200)))

    result = await run_check(make_check(f"{server.base}/hook", method="post"))

    assert result.up
    [request] = server.requests
    assert request.method == "POST"
    assert request.headers["content-length"] == "0"


# ---------------------------------------------------------------- response framing


async def test_chunked_body_is_decoded(raw: RawServers, make_check: MakeCheck) -> None:
    body = chunked(JSON_BODY[:7], JSON_BODY[7:30], JSON_BODY[30:])
    server = await raw.start(answer(response(200, body, {"Transfer-Encoding": "chunked"})))

    result = await run_check(make_check(server.base, metrics={"pool": "database.pool.checked_out"}))

    assert result.reason is None
    assert result.samples["pool"] == 3
    assert result.samples["body_bytes"] == len(JSON_BODY)


async def test_body_without_length_ends_with_the_connection(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(answer(response(200, b"service READY", content_length=False)))

    result = await run_check(make_check(server.base, expect_body="READY$"))

    assert (result.up, result.reason) == (True, None)
    assert result.samples["body_bytes"] == len(b"service READY")


async def test_head_ends_at_the_headers(raw: RawServers, make_check: MakeCheck) -> None:
    # Content-Length describes the GET body: a HEAD answer has none, and the server keeps the
    # connection open. Waiting for those bytes would be a timeout.
    server = await raw.start(answer(response(200, headers={"Content-Length": "5000"}), "hang"))

    result = await run_check(make_check(server.base, method="HEAD", timeout="5s"))

    assert (result.up, result.reason) == (True, None)
    assert untimed(result.samples) == {"status_code": 200, "body_bytes": 0}
    assert result.latency_ms < 2000
    assert server.requests[0].method == "HEAD"


async def test_interim_1xx_answers_are_skipped(raw: RawServers, make_check: MakeCheck) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    server = await raw.start(answer(interim + response(200, b"ready")))

    result = await run_check(make_check(server.base, expect_body="ready"))

    assert (result.up, result.reason) == (True, None)
    assert result.samples["status_code"] == 200


async def test_gzip_body_is_decompressed_for_expect_json(raw: RawServers, make_check: MakeCheck) -> None:
    compressed = gzip.compress(JSON_BODY)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    server = await raw.start(answer(response(200, compressed, headers)))

    result = await run_check(make_check(server.base, expect_json={"status": "ok"}))

    assert (result.up, result.reason) == (True, None)
    # body_bytes counts the body as decoded, as aiohttp's reader gave it.
    assert result.samples["body_bytes"] == len(JSON_BODY) != len(compressed)
    assert "accept-encoding" not in server.requests[0].headers


async def test_gzip_bomb_stops_at_max_body(raw: RawServers, make_check: MakeCheck) -> None:
    bomb = gzip.compress(b"\0" * 20_000_000)  # 20 KB on the wire
    server = await raw.start(answer(response(200, bomb, {"Content-Encoding": "gzip"})))

    result = await run_check(make_check(server.base, max_body="100KB"))

    assert (result.up, result.reason) == (False, "body over max_body (100KB)")


async def test_malformed_status_line_is_an_invalid_response(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(answer(b"HTTP/1.1 OK-ish\r\nContent-Length: 0\r\n\r\n"))

    result = await run_check(make_check(server.base))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("invalid response: ")
    assert "status" in result.reason.lower()
    assert "\n" not in result.reason
    assert untimed(result.samples) == {}


async def test_not_http_at_all_is_an_invalid_response(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(answer(b"SSH-2.0-OpenSSH_9.2\r\n", "hang"))

    result = await run_check(make_check(server.base, timeout="5s"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("invalid response: ")
    assert result.latency_ms < 2000


@pytest.mark.parametrize(
    ("head", "body", "reason"),
    [
        (
            {"Content-Length": "100"},
            b"short",
            "body: Not enough data to satisfy content length header (received 5 of 100 bytes)",
        ),
        (
            {"Transfer-Encoding": "chunked"},
            b"5\r\nhello\r\n",
            "body: Not enough data to satisfy transfer length header",
        ),
    ],
    ids=["content-length", "chunked"],
)
async def test_body_cut_short_fails(
    raw: RawServers, head: dict[str, str], body: bytes, reason: str, make_check: MakeCheck
) -> None:
    server = await raw.start(answer(response(200, body, head)))

    result = await run_check(make_check(server.base, expect_body="hello|short"))

    assert (result.up, result.reason) == (False, reason)
    assert untimed(result.samples) == {"status_code": 200}


@pytest.mark.parametrize(
    ("ending", "reason"), [("close", "server disconnected"), ("reset", "connection reset")], ids=str
)
async def test_connection_ended_before_an_answer(
    raw: RawServers, ending: Ending, reason: str, make_check: MakeCheck
) -> None:
    server = await raw.start(answer(b"", ending))

    result = await run_check(make_check(server.base))

    assert (result.up, result.reason, result.outcome) == (False, reason, "failure")
    assert len(server.requests) == 1


async def test_endless_body_without_length_stops_at_max_body(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(answer(response(200, b"x" * 300_000, content_length=False), "hang"))

    result = await run_check(make_check(server.base, max_body="100KiB", timeout="5s"))

    assert (result.up, result.reason) == (False, "body over max_body (100KiB)")
    assert result.latency_ms < 2000


# ---------------------------------------------------------------- redirects


def redirecting(location: Callable[[RawRequest], str | None], status: int = 302) -> Respond:
    """Redirects while `location` gives a Location; then answers 200 with method and target."""

    def respond(request: RawRequest) -> tuple[bytes, Ending]:
        target = location(request)
        if target is None:
            return response(200, f"{request.method} {request.target}".encode()), "close"
        return response(status, headers={"Location": target}), "close"

    return respond


async def test_relative_redirect_is_resolved_against_the_current_url(
    raw: RawServers, make_check: MakeCheck
) -> None:
    server = await raw.start(redirecting(lambda r: "../moved?to=here" if r.target == "/a/b/c" else None))

    result = await run_check(make_check(f"{server.base}/a/b/c", expect_body="^GET /a/moved\\?to=here$"))

    assert (result.up, result.reason) == (True, None)
    assert [r.target for r in server.requests] == ["/a/b/c", "/a/moved?to=here"]
    assert server.connections == 2  # each hop on a fresh connection


async def test_absolute_redirect_to_another_server(raw: RawServers, make_check: MakeCheck) -> None:
    final = await raw.start(answer(response(503, b"down")))
    first = await raw.start(redirecting(lambda _r: f"{final.base}/status", status=301))

    result = await run_check(make_check(f"{first.base}/"))

    assert (result.up, result.reason) == (False, "status 503")  # the final answer's status
    assert result.samples["status_code"] == 503
    assert [r.target for r in final.requests] == ["/status"]
    assert final.requests[0].headers["host"] == f"{HOST}:{final.port}"


async def test_redirect_loop_is_too_many_redirects(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(redirecting(lambda _r: "/again"))

    result = await run_check(make_check(f"{server.base}/"))

    assert (result.up, result.reason) == (False, "too many redirects")
    assert len(server.requests) == httpclient.MAX_REDIRECTS


async def test_nine_redirects_are_followed(raw: RawServers, make_check: MakeCheck) -> None:
    def hop(request: RawRequest) -> str | None:
        step = int(request.target.strip("/") or 0)
        return f"/{step + 1}" if step < 9 else None

    server = await raw.start(redirecting(hop))

    result = await run_check(make_check(f"{server.base}/", expect_body="^GET /9$"))

    assert (result.up, result.reason) == (True, None)


async def test_303_turns_post_into_get(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(redirecting(lambda r: "/result" if r.method == "POST" else None, status=303))

    result = await run_check(make_check(f"{server.base}/submit", method="POST", expect_body="^GET /result$"))

    assert (result.up, result.reason) == (True, None)
    assert [(r.method, r.target) for r in server.requests] == [("POST", "/submit"), ("GET", "/result")]
    assert "content-length" not in server.requests[1].headers


async def test_307_keeps_the_method(raw: RawServers, make_check: MakeCheck) -> None:
    server = await raw.start(redirecting(lambda r: "/there" if r.target == "/" else None, status=307))

    result = await run_check(make_check(f"{server.base}/", method="PUT", expect_body="^PUT /there$"))

    assert (result.up, result.reason) == (True, None)


async def test_https_redirect_is_followed_over_tls_as_configured(
    servers: LoopbackServers, tls_ca: trustme.CA, make_check: MakeCheck
) -> None:
    async def moved(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/health")

    context = tls_server_context(tls_ca, valid_for=timedelta(days=30))
    base = await servers.http({"/old": moved, "/health": json_handler({"status": "ok"})}, ssl_context=context)

    result = await run_check(make_check(f"{base}/old", tls_verify=False, expect_json={"status": "ok"}))

    assert (result.up, result.reason) == (True, None)
    assert result.samples["tls_days_left"] in {29, 30}


# ---------------------------------------------------------------- cancellation


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def settle(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.mark.parametrize(
    "stall",
    [b"", response(200, b"x" * 10, {"Content-Length": "1000"})],
    ids=["no-answer", "body-stalls"],
)
async def test_timed_out_runs_close_their_sockets(
    raw: RawServers, stall: bytes, make_check: MakeCheck
) -> None:
    server = await raw.start(answer(stall, "hang"))
    runs = 100
    before = open_fds()

    checks = [make_check(server.base, timeout="300ms") for _ in range(runs)]

    results = await asyncio.gather(*(run_check(check) for check in checks))

    assert {(r.outcome, r.reason) for r in results} == {("timeout", "timeout after 300ms")}
    assert server.connections == runs
    # The server sees every connection end: the client aborted its side when cancelled.
    assert await settle(lambda: server.closed == runs), f"{runs - server.closed} connections left open"
    assert await settle(lambda: open_fds() <= before), f"{open_fds() - before} fds leaked"


# ---------------------------------------------------------------- TLS, self-signed


def self_signed_server_context() -> ssl.SSLContext:
    """A server context whose certificate is self-signed: a fresh CA's own (it names no host)."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with ca.cert_pem.tempfile() as cert_path, ca.private_key_pem.tempfile() as key_path:
        context.load_cert_chain(cert_path, key_path)
    return context


async def test_tls_verify_false_accepts_a_self_signed_certificate(
    servers: LoopbackServers, make_check: MakeCheck
) -> None:
    base = await servers.http({"/": json_handler({"status": "ok"})}, ssl_context=self_signed_server_context())

    unverified = await run_check(make_check(f"{base}/", tls_verify=False, expect_json={"status": "ok"}))
    verified = await run_check(make_check(f"{base}/"))

    assert (unverified.up, unverified.reason) == (True, None)
    assert unverified.samples["tls_days_left"] > 365  # trustme's CA certificates last years
    assert verified.reason is not None
    assert verified.reason.startswith("TLS verify failed: ")
    assert "self-signed" in verified.reason or "self signed" in verified.reason
