"""HttpCheck against real loopback HTTP(S) servers, run through run_check's deadline."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from pydantic import ValidationError

from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from monitor.config import parse_config
from monitor.evaluation import CheckEvaluator
from monitor.models import RowState
from monitor.runner import run_check
from tests.fakes.servers import (
    LoopbackServers,
    json_handler,
    refused_port,
    text_handler,
    tls_server_context,
)

RUNBOOK_BODY = {"status": "ok", "uptime": 12345, "database": {"pool": {"checked_out": 3}}}
SECRET = "Bearer s3cr3t-health-token"


def make_check(session: aiohttp.ClientSession, url: str, **options: Any) -> HttpCheck:
    config = HttpCheckConfig.model_validate({"name": "web", "type": "http", "url": url, **options})
    return HttpCheck(config, CheckDeps(http=session))


# ---------------------------------------------------------------- success


async def test_runbook_health_endpoint_succeeds_with_expectations_and_metrics(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/health": json_handler(RUNBOOK_BODY)})
    check = make_check(
        http_session,
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


async def test_any_2xx_is_expected_by_default(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": text_handler("", status=204)})

    result = await run_check(make_check(http_session, f"{base}/"))

    assert result.up
    assert result.samples == {"status_code": 204, "body_bytes": 0}


async def test_expect_status_can_accept_a_non_2xx_status(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": text_handler("maintenance", status=503)})

    result = await run_check(make_check(http_session, f"{base}/", expect_status=[503]))

    assert result.up


async def test_metrics_read_list_indexes_and_booleans(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    body = {"replicas": [{"lag": 0.5}, {"lag": 2}], "ready": True, "degraded": False}
    base = await servers.http({"/": json_handler(body)})
    metrics = {"lag_1": "replicas.1.lag", "lag_0": "replicas.0.lag", "ready": "ready", "bad": "degraded"}

    result = await run_check(make_check(http_session, f"{base}/", metrics=metrics))

    assert result.up
    assert {k: result.samples[k] for k in metrics} == {"lag_1": 2, "lag_0": 0.5, "ready": 1, "bad": 0}


async def test_expect_body_regex_matches(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": text_handler("service: READY (v2)")})

    result = await run_check(make_check(http_session, f"{base}/", expect_body=r"READY \(v\d\)"))

    assert result.up


async def test_header_values_are_sent(servers: LoopbackServers, http_session: aiohttp.ClientSession) -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return web.Response(text="ok")

    base = await servers.http({"/": handler})

    result = await run_check(make_check(http_session, f"{base}/", headers={"Authorization": SECRET}))

    assert result.up
    assert seen == [SECRET]


async def test_method_is_used(servers: LoopbackServers, http_session: aiohttp.ClientSession) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.method)
        return web.Response()

    base = await servers.http({"/": handler})

    result = await run_check(make_check(http_session, f"{base}/", method="head"))

    assert result.up
    assert seen == ["HEAD"]


# ---------------------------------------------------------------- failures


async def test_refused_port(http_session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        result = await run_check(make_check(http_session, f"http://127.0.0.1:{port}/"))

    assert not result.up
    assert result.reason == "connection refused"
    assert result.outcome == "failure"


async def test_slow_server_costs_exactly_the_timeout(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(10)
        return web.Response()

    base = await servers.http({"/": slow})
    check = make_check(http_session, f"{base}/", timeout="500ms")

    result = await run_check(check)

    assert (result.up, result.reason, result.outcome) == (False, "timeout after 500ms", "timeout")
    assert 450 <= result.latency_ms < 2000


async def test_unexpected_status_fails_with_the_status(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": json_handler({"status": "down"}, status=503)})

    result = await run_check(make_check(http_session, f"{base}/", expect_status=[200]))

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
    http_session: aiohttp.ClientSession,
    body: Any,
    expect_json: dict[str, Any],
    reason: str,
) -> None:
    base = await servers.http({"/": json_handler(body)})

    result = await run_check(make_check(http_session, f"{base}/", expect_json=expect_json))

    assert (result.up, result.reason) == (False, reason)


async def test_metrics_are_kept_when_expect_json_fails(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    body = {**RUNBOOK_BODY, "status": "degraded"}
    base = await servers.http({"/": json_handler(body)})
    check = make_check(
        http_session,
        f"{base}/",
        expect_json={"status": "ok"},
        metrics={"pool_checked_out": "database.pool.checked_out"},
    )

    result = await run_check(check)

    assert result.reason == 'expect_json: status = "degraded"'
    assert result.samples["pool_checked_out"] == 3


async def test_invalid_json(servers: LoopbackServers, http_session: aiohttp.ClientSession) -> None:
    base = await servers.http({"/": text_handler("<html>oops</html>")})

    result = await run_check(make_check(http_session, f"{base}/", expect_json={"status": "ok"}))

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
    servers: LoopbackServers, http_session: aiohttp.ClientSession, path: str, reason: str
) -> None:
    base = await servers.http({"/": json_handler({"status": "ok", "database": {}})})

    result = await run_check(make_check(http_session, f"{base}/", metrics={"m": path}))

    assert (result.up, result.reason) == (False, reason)
    assert "m" not in result.samples


async def test_expect_body_mismatch(servers: LoopbackServers, http_session: aiohttp.ClientSession) -> None:
    base = await servers.http({"/": text_handler("starting up")})

    result = await run_check(make_check(http_session, f"{base}/", expect_body="^ready$"))

    assert (result.up, result.reason) == (False, "expect_body: /^ready$/ not found")


async def test_endless_body_stops_at_max_body_long_before_the_timeout(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 16_384
        while True:
            await response.write(chunk)

    base = await servers.http({"/": endless})
    check = make_check(http_session, f"{base}/", max_body="100KB", timeout="5s")

    result = await run_check(check)

    assert (result.up, result.reason, result.outcome) == (
        False,
        "body over max_body (100KB)",
        "failure",
    )
    assert result.latency_ms < 2000


async def test_declared_content_length_over_max_body_fails_before_reading(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": text_handler("x" * 5000)})

    result = await run_check(make_check(http_session, f"{base}/", max_body="1KiB"))

    assert (result.up, result.reason) == (False, "body over max_body (1KiB): Content-Length 5000")


async def test_body_at_max_body_is_accepted(
    servers: LoopbackServers, http_session: aiohttp.ClientSession
) -> None:
    base = await servers.http({"/": text_handler("x" * 1000)})

    result = await run_check(make_check(http_session, f"{base}/", max_body=1000))

    assert result.up
    assert result.samples["body_bytes"] == 1000


# ---------------------------------------------------------------- TLS


async def test_untrusted_certificate_fails_verification(
    servers: LoopbackServers, http_session: aiohttp.ClientSession, tls_ca: trustme.CA
) -> None:
    base = await servers.http({"/": text_handler("ok")}, ssl_context=tls_server_context(tls_ca))

    result = await run_check(make_check(http_session, f"{base}/"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("TLS verify failed: ")
    assert "\n" not in result.reason


async def test_tls_verify_false_accepts_an_untrusted_certificate(
    servers: LoopbackServers, http_session: aiohttp.ClientSession, tls_ca: trustme.CA
) -> None:
    context = tls_server_context(tls_ca, valid_for=timedelta(days=30))
    base = await servers.http({"/": text_handler("ok")}, ssl_context=context)

    result = await run_check(make_check(http_session, f"{base}/", tls_verify=False))

    assert result.up
    assert result.samples["tls_days_left"] in {29, 30}


@pytest.mark.parametrize(
    ("valid_for", "expected", "state"),
    [(timedelta(days=5), {4, 5}, RowState.WARNING), (timedelta(days=2), {1, 2}, RowState.CRITICAL)],
    ids=["5-days-warning", "2-days-critical"],
)
async def test_tls_days_left_from_the_peer_certificate(
    servers: LoopbackServers,
    trusting_session: aiohttp.ClientSession,
    tls_ca: trustme.CA,
    valid_for: timedelta,
    expected: set[int],
    state: RowState,
) -> None:
    context = tls_server_context(tls_ca, valid_for=valid_for)
    base = await servers.http({"/health": json_handler({"status": "ok"})}, ssl_context=context)

    result = await run_check(make_check(trusting_session, f"{base}/health", expect_json={"status": "ok"}))

    assert result.reason is None
    assert result.samples["tls_days_left"] in expected
    # The built-in row (warning 14, critical 3, direction below) judges it.
    config = parse_config(f'[[checks]]\nname = "web"\ntype = "http"\nurl = "{base}/health"\n', {})
    evaluator = CheckEvaluator("web", config.rows_for("web"))
    evaluator.observe(result, 0.0)
    assert evaluator.states()["tls_days_left"] is state


async def test_tls_days_left_is_reported_for_a_failed_status(
    servers: LoopbackServers, trusting_session: aiohttp.ClientSession, tls_ca: trustme.CA
) -> None:
    context = tls_server_context(tls_ca, valid_for=timedelta(days=10))
    base = await servers.http({"/": text_handler("down", status=500)}, ssl_context=context)

    result = await run_check(make_check(trusting_session, f"{base}/"))

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
def test_target_is_host_with_named_port(url: str, target: str) -> None:
    config = HttpCheckConfig.model_validate({"name": "web", "type": "http", "url": url})

    assert HttpCheck(config, CheckDeps(http=None)).target() == target  # type: ignore[arg-type]


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


async def test_unknown_host_is_a_dns_failure(http_session: aiohttp.ClientSession) -> None:
    # .invalid never resolves (RFC 6761); without a resolver the error is still a DNS one.
    result = await run_check(make_check(http_session, "http://monitor-test.invalid/", timeout="5s"))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("DNS: ")
