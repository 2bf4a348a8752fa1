"""PrometheusCheck against a fake Prometheus query API on loopback, run through run_check's deadline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from checks import check_types
from checks.base import CheckDeps
from checks.prometheus import PrometheusCheck, PrometheusCheckConfig
from monitor.config import ConfigError, parse_config
from monitor.evaluation import CheckEvaluator
from monitor.models import Level
from monitor.runner import run_check
from tests.fakes.servers import (
    LoopbackServers,
    client_session,
    refused_port,
    tls_server_context,
    trusting_client_context,
)

SECRET = "Bearer prom-s3cr3t-token"
TOKEN = SECRET.removeprefix("Bearer ")
# Fly.io's managed Prometheus lives under a path: the check appends /api/v1/query to it.
BASE_PATH = "/prometheus/acme"
TS = 1_700_000_000.123

Answer = Callable[[web.Request], Awaitable[web.StreamResponse]]


def success(result_type: str, result: Any) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": result_type, "result": result}}


def vector(*values: str) -> dict[str, Any]:
    return success(
        "vector", [{"metric": {"instance": f"m{i}"}, "value": [TS, v]} for i, v in enumerate(values)]
    )


def scalar(value: str) -> dict[str, Any]:
    return success("scalar", [TS, value])


def reply(body: Any, *, status: int = 200, delay_s: float = 0.0) -> Answer:
    """Answers with `body` (JSON unless bytes/str) after `delay_s`."""

    async def answer(_request: web.Request) -> web.StreamResponse:
        if delay_s:
            await asyncio.sleep(delay_s)
        if isinstance(body, bytes | str):
            return web.Response(body=body, status=status, content_type="text/plain")
        return web.json_response(body, status=status)

    return answer


class FakePrometheus:
    """`/api/v1/query` under BASE_PATH: answers each `query` from a script, records the requests."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: list[web.Request] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        promql = request.query.get("query", "")
        answer = self.answers.get(promql)
        if answer is None:
            return web.json_response(
                {"status": "error", "errorType": "bad_data", "error": f"unscripted query {promql!r}"},
                status=400,
            )
        return await answer(request)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with client_session() as opened:
        yield opened


@pytest.fixture
async def fake(servers: LoopbackServers) -> tuple[FakePrometheus, str]:
    prometheus = FakePrometheus()
    base = await servers.http({f"{BASE_PATH}/api/v1/query": prometheus.handle})
    return prometheus, f"{base}{BASE_PATH}"


def make_check(
    session: aiohttp.ClientSession, url: str, queries: dict[str, str], **options: Any
) -> PrometheusCheck:
    config = PrometheusCheckConfig.model_validate(
        {
            "name": "backend-machines",
            "type": "prometheus",
            "url": url,
            "queries": [{"metric": metric, "promql": promql} for metric, promql in queries.items()],
            **options,
        }
    )
    return PrometheusCheck(config, CheckDeps(http=session))


# ---------------------------------------------------------------- answers that give a sample


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        (scalar("42.5"), 42.5),
        (vector("12.25"), 12.25),
        (vector("0"), 0.0),
        (vector("-3e2"), -300.0),
        (success("string", [TS, "7"]), 7.0),
    ],
    ids=["scalar", "one-series-vector", "zero", "exponent", "numeric-string"],
)
async def test_a_scalar_or_one_series_gives_the_sample(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession, answer: dict[str, Any], value: float
) -> None:
    prometheus, url = fake
    prometheus.answers["cpu"] = reply(answer)

    result = await run_check(make_check(session, url, {"cpu_pct": "cpu"}))

    assert result.reason is None
    assert result.up
    assert result.samples["cpu_pct"] == value
    assert 0 < result.samples["query_ms"] <= result.latency_ms
    assert set(result.samples) == {"cpu_pct", "query_ms"}


async def test_every_query_gives_its_own_sample(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    prometheus.answers.update(cpu=reply(vector("71")), mem=reply(scalar("55.5")), err=reply(vector("0.4")))

    result = await run_check(
        make_check(session, url, {"cpu_pct": "cpu", "memory_pct": "mem", "http_error_rate_pct": "err"})
    )

    assert result.up
    assert result.samples == {
        "cpu_pct": 71.0,
        "memory_pct": 55.5,
        "http_error_rate_pct": 0.4,
        "query_ms": result.samples["query_ms"],
    }


async def test_the_query_is_sent_encoded_with_the_headers(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    # Characters a query string gets wrong unless encoded: + & # ' = { } and spaces.
    promql = "100 * (1 - avg(rate(fly_instance_cpu{app='x', mode=~'idle|steal'}[5m])) + 0) # &a=b"
    prometheus.answers[promql] = reply(vector("3"))

    result = await run_check(
        make_check(session, url, {"cpu_pct": promql}, headers={"Authorization": SECRET, "X-Org": "acme"})
    )

    assert result.reason is None
    [request] = prometheus.requests
    assert request.method == "GET"
    assert request.path == f"{BASE_PATH}/api/v1/query"
    assert request.query.getall("query") == [promql]
    assert request.headers["Authorization"] == SECRET
    assert request.headers["X-Org"] == "acme"
    assert request.headers["Accept"] == "application/json"


async def test_a_trailing_slash_and_a_query_string_in_the_base_url_are_kept_apart(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    prometheus.answers["cpu"] = reply(vector("1"))

    result = await run_check(make_check(session, f"{url}/?tenant=acme-4242", {"cpu_pct": "cpu"}))

    assert result.reason is None
    [request] = prometheus.requests
    assert request.path == f"{BASE_PATH}/api/v1/query"
    assert dict(request.query) == {"tenant": "acme-4242", "query": "cpu"}


# ---------------------------------------------------------------- no data


async def test_an_empty_vector_gives_no_sample_and_the_run_succeeds(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    prometheus.answers.update(cpu=reply(vector()), mem=reply(vector("40")), err=reply(vector()))

    result = await run_check(
        make_check(session, url, {"cpu_pct": "cpu", "memory_pct": "mem", "http_error_rate_pct": "err"})
    )

    assert result.up
    assert result.outcome == "success"
    assert result.reason == "cpu_pct: no data; http_error_rate_pct: no data"
    assert "cpu_pct" not in result.samples
    assert result.samples["memory_pct"] == 40


async def test_a_row_keeps_its_state_through_a_run_without_data(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    config = parse_config(
        f'[thresholds.cpu_pct]\nwarning = 80\ncritical = 90\n\n[[checks]]\nname = "backend-machines"\n'
        f'type = "prometheus"\nurl = "{url}"\nqueries = [{{ metric = "cpu_pct", promql = "cpu" }}]\n',
        {},
    )
    check = PrometheusCheck(config.checks[0], CheckDeps(http=session))
    evaluator = CheckEvaluator("backend-machines", config.rows_for("backend-machines"))

    prometheus.answers["cpu"] = reply(vector("95"))
    evaluator.observe(await run_check(check), 0.0)
    assert evaluator.levels()["cpu_pct"] is Level.CRITICAL

    prometheus.answers["cpu"] = reply(vector())
    evaluator.observe(await run_check(check), 1.0)
    assert evaluator.levels()["cpu_pct"] is Level.CRITICAL
    assert evaluator.levels()["up"] is Level.OK


# ---------------------------------------------------------------- answers that fail the run


_FAILURES = [
    ("3-series", reply(vector("1", "2", "3")), "cpu_pct: query returned 3 series"),
    ("nan", reply(vector("NaN")), "cpu_pct: value is NaN"),
    ("plus-inf", reply(vector("+Inf")), "cpu_pct: value is +Inf"),
    ("minus-inf", reply(scalar("-Inf")), "cpu_pct: value is -Inf"),
    ("non-numeric", reply(vector("lots")), 'cpu_pct: value is not a number: "lots"'),
    ("value-null", reply(vector(None)), "cpu_pct: value is not a number: null"),  # type: ignore[arg-type]
    (
        "status-error",
        reply(
            {
                "status": "error",
                "errorType": "execution",
                "error": "query processing would load too many samples",
            }
        ),
        "cpu_pct: query error: execution: query processing would load too many samples",
    ),
    (
        "http-400-with-error",
        reply(
            {
                "status": "error",
                "errorType": "bad_data",
                "error": 'invalid parameter "query": 1:5: parse error',
            },
            status=400,
        ),
        'cpu_pct: status 400: bad_data: invalid parameter "query": 1:5: parse error',
    ),
    ("http-500", reply("upstream exploded", status=500), "cpu_pct: status 500"),
    ("http-503-json", reply({"oops": 1}, status=503), "cpu_pct: status 503"),
    (
        "invalid-json",
        reply("<html>login</html>"),
        "cpu_pct: invalid JSON: Expecting value at line 1 column 1",
    ),
    ("not-utf8", reply(b"\xff\xfe\xfa"), "cpu_pct: invalid JSON: not UTF-8/16/32 text"),
    ("no-status", reply({"data": {}}), "cpu_pct: unexpected answer: no status success"),
    (
        "matrix",
        reply(success("matrix", [{"metric": {}, "values": [[TS, "1"]]}])),
        "cpu_pct: query returned a range vector: an instant vector or a scalar is needed",
    ),
    ("unknown-type", reply(success("histogram", [])), 'cpu_pct: unexpected answer: resultType "histogram"'),
    ("bad-value-shape", reply(success("vector", [{"metric": {}}])), "cpu_pct: unexpected answer: value null"),
]


@pytest.mark.parametrize(("answer", "reason"), [f[1:] for f in _FAILURES], ids=[f[0] for f in _FAILURES])
async def test_an_answer_without_one_number_fails_the_run_naming_the_metric(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession, answer: Answer, reason: str
) -> None:
    prometheus, url = fake
    prometheus.answers["cpu"] = answer

    result = await run_check(make_check(session, url, {"cpu_pct": "cpu"}))

    assert not result.up
    assert result.outcome == "failure"
    assert result.reason == reason
    assert "cpu_pct" not in result.samples
    assert result.samples["query_ms"] > 0


async def test_a_long_error_text_is_shortened(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    error = "parse error:\n" + "x" * 5000
    prometheus.answers["cpu"] = reply(
        {"status": "error", "errorType": "bad_data", "error": error}, status=400
    )

    result = await run_check(make_check(session, url, {"cpu_pct": "cpu"}))

    assert result.reason is not None
    assert result.reason.startswith("cpu_pct: status 400: bad_data: parse error: xxx")
    assert result.reason.endswith("…")
    assert "\n" not in result.reason
    assert len(result.reason) < 200


async def test_a_failed_query_fails_the_run_but_the_others_keep_their_samples(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    prometheus.answers.update(
        cpu=reply(vector("1", "2", "3")),
        mem=reply(vector("61")),
        err=reply(vector()),
        disk=reply(scalar("NaN")),
    )

    result = await run_check(
        make_check(
            session,
            url,
            {"cpu_pct": "cpu", "memory_pct": "mem", "http_error_rate_pct": "err", "disk_pct": "disk"},
        )
    )

    assert not result.up
    assert result.reason == (
        "cpu_pct: query returned 3 series; http_error_rate_pct: no data; disk_pct: value is NaN"
    )
    assert result.samples["memory_pct"] == 61


async def test_an_oversized_answer_fails_without_being_read_whole(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    sent = [0]

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it up front
        await response.prepare(request)
        await response.write(b'{"status": "success", "data": {"resultType": "vector", "result": [')
        for _ in range(1000):  # 64 MB if read to the end
            await response.write(b" " * 65536)
            sent[0] += 65536
        return response

    prometheus.answers.update(big=endless, declared=reply("x" * 2_000_000))

    result = await run_check(make_check(session, url, {"cpu_pct": "big", "memory_pct": "declared"}))

    assert not result.up
    assert result.reason == "cpu_pct: answer over 1MB; memory_pct: answer over 1MB: Content-Length 2000000"
    assert sent[0] < 16 * 2**20


async def test_a_large_answer_under_the_cap_is_parsed(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    answer = vector("5")
    answer["data"]["result"][0]["metric"]["padding"] = "p" * 600_000  # parsed off the event loop
    prometheus.answers["cpu"] = reply(answer)

    result = await run_check(make_check(session, url, {"cpu_pct": "cpu"}))

    assert result.reason is None
    assert result.samples["cpu_pct"] == 5


# ---------------------------------------------------------------- timing


async def test_a_slow_query_times_the_run_out(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    prometheus.answers.update(fast=reply(vector("1")), slow=reply(vector("2"), delay_s=30))

    started = time.perf_counter()
    result = await run_check(make_check(session, url, {"a": "fast", "b": "slow"}, timeout="300ms"))

    assert time.perf_counter() - started < 2
    assert not result.up
    assert result.outcome == "timeout"
    assert result.reason == "timeout after 300ms"


async def test_queries_run_concurrently(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake
    delay_s = 0.5
    prometheus.answers.update(a=reply(vector("1"), delay_s=delay_s), b=reply(scalar("2"), delay_s=delay_s))

    started = time.perf_counter()
    result = await run_check(make_check(session, url, {"a": "a", "b": "b"}, timeout="5s"))
    elapsed_s = time.perf_counter() - started

    assert result.reason is None
    assert delay_s <= elapsed_s < 1.5 * delay_s  # one delay, not two
    # query_ms is the slowest query, not their sum.
    assert delay_s * 1000 <= result.samples["query_ms"] < 1.5 * delay_s * 1000


# ---------------------------------------------------------------- network and TLS


async def test_a_refused_connection_fails_every_query(session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        result = await run_check(
            make_check(session, f"http://127.0.0.1:{port}", {"cpu_pct": "cpu", "memory_pct": "mem"})
        )

    assert not result.up
    assert result.reason == "cpu_pct: connection refused; memory_pct: connection refused"


async def test_an_unknown_host_is_a_dns_failure(session: aiohttp.ClientSession) -> None:
    result = await run_check(make_check(session, "http://prometheus.invalid", {"cpu_pct": "cpu"}))

    assert not result.up
    assert result.reason is not None
    assert result.reason.startswith("cpu_pct: DNS lookup failed: ")


async def test_tls_is_verified_unless_tls_verify_is_false(
    servers: LoopbackServers, tls_ca: trustme.CA, session: aiohttp.ClientSession
) -> None:
    prometheus = FakePrometheus()
    prometheus.answers["cpu"] = reply(vector("9"))
    base = await servers.http({"/api/v1/query": prometheus.handle}, ssl_context=tls_server_context(tls_ca))

    untrusted = await run_check(make_check(session, base, {"cpu_pct": "cpu"}))
    unverified = await run_check(make_check(session, base, {"cpu_pct": "cpu"}, tls_verify=False))
    async with client_session(trusting_client_context(tls_ca)) as trusting:
        trusted = await run_check(make_check(trusting, base, {"cpu_pct": "cpu"}))

    assert untrusted.reason is not None
    assert untrusted.reason.startswith("cpu_pct: TLS verify failed: ")
    assert unverified.samples["cpu_pct"] == 9
    assert trusted.reason is None
    assert trusted.samples["cpu_pct"] == 9


# ---------------------------------------------------------------- secrets


async def test_a_secret_echoed_back_never_reaches_the_reason(
    fake: tuple[FakePrometheus, str], session: aiohttp.ClientSession
) -> None:
    prometheus, url = fake

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers["Authorization"]
        error = f"unauthorized: token {auth.removeprefix('Bearer ')} is not valid (header {auth!r})"
        return web.json_response({"status": "error", "errorType": "unauthorized", "error": error}, status=401)

    async def echo_in_value(request: web.Request) -> web.StreamResponse:
        return web.json_response(vector(request.headers["Authorization"]))

    prometheus.answers.update(cpu=echo, mem=echo_in_value)
    check = make_check(
        session, url, {"cpu_pct": "cpu", "memory_pct": "mem"}, headers={"Authorization": SECRET}
    )

    result = await run_check(check)

    assert result.reason is not None
    assert result.reason.startswith("cpu_pct: status 401: unauthorized: unauthorized: token ***")
    assert "memory_pct: value is not a number" in result.reason
    assert TOKEN not in result.reason
    assert TOKEN not in json.dumps(result.samples)


async def test_a_secret_in_the_base_url_is_neither_shown_nor_in_the_reason(
    session: aiohttp.ClientSession,
) -> None:
    with refused_port() as port:
        url = f"http://admin:pw-4f9a2c@127.0.0.1:{port}/prom?api_key=key-77e1b0"
        check = make_check(session, url, {"cpu_pct": "cpu"})
        result = await run_check(check)
    config = PrometheusCheckConfig.model_validate(
        {"name": "m", "type": "prometheus", "url": url, "queries": [{"metric": "a", "promql": "1"}]}
    )

    assert check.target() == f"127.0.0.1:{port}"
    assert result.reason == "cpu_pct: connection refused"
    for text in (repr(config), config.model_dump_json(), repr(check.config)):
        assert "pw-4f9a2c" not in text
        assert "key-77e1b0" not in text


# ---------------------------------------------------------------- config


def _config(queries: str, extra: str = "") -> str:
    return (
        f'[[checks]]\nname = "m"\ntype = "prometheus"\nurl = "https://prom.example.com:9090"\n'
        f"queries = {queries}\n{extra}"
    )


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (_config("[]"), "checks[0].queries: at least one query is needed"),
        (
            '[[checks]]\nname = "m"\ntype = "prometheus"\nurl = "https://prom.example.com"\n',
            "checks[0].queries: required key missing",
        ),
        (
            _config('[{ metric = "cpu-pct", promql = "1" }]'),
            "checks[0].queries[0].metric: invalid metric name 'cpu-pct': use letters, digits and _",
        ),
        (
            _config('[{ metric = "ok", promql = "1" }, { metric = "query_ms", promql = "1" }]'),
            "checks[0].queries[1].metric: metric name 'query_ms' is taken by a built-in sample",
        ),
        (
            _config('[{ metric = "up", promql = "1" }]'),
            "checks[0].queries[0].metric: metric name 'up' is taken by a built-in sample",
        ),
        (
            _config('[{ metric = "latency_ms", promql = "1" }]'),
            "checks[0].queries[0].metric: metric name 'latency_ms' is taken by a built-in sample",
        ),
        (
            _config('[{ metric = "cpu", promql = "1" }, { metric = "cpu", promql = "2" }]'),
            "checks[0].queries: duplicate metric 'cpu'",
        ),
        (_config('[{ metric = "cpu", promql = "  " }]'), "checks[0].queries[0].promql: promql is empty"),
        (_config('[{ metric = "cpu", sql = "1" }]'), "checks[0].queries[0].sql: unknown key"),
        (
            '[[checks]]\nname = "m"\ntype = "prometheus"\nurl = "ftp://prom"\n'
            'queries = [{ metric = "a", promql = "1" }]\n',
            "checks[0].url: invalid URL",
        ),
        (
            _config('[{ metric = "a", promql = "1" }]', 'headers = { "Bad Name" = "x" }\n'),
            "invalid header name",
        ),
    ],
    ids=[
        "no-queries",
        "queries-missing",
        "bad-name",
        "query-ms",
        "up",
        "latency-ms",
        "duplicate",
        "empty-promql",
        "unknown-key",
        "bad-url",
        "bad-header",
    ],
)
def test_config_errors_name_their_key(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, {})

    assert any(error in line for line in info.value.errors), info.value.errors


def test_headers_are_interpolated_and_kept_secret() -> None:
    config = parse_config(
        _config(
            '[{ metric = "cpu_pct", promql = "1" }]',
            'headers = { Authorization = "Bearer ${FLY_API_TOKEN}" }\n',
        ),
        {"FLY_API_TOKEN": TOKEN},
    )
    [check_config] = config.checks

    assert check_config.headers["Authorization"].get_secret_value() == SECRET
    assert TOKEN not in repr(check_config)
    assert check_config.tls_verify is True


def test_the_type_is_registered_and_its_target_is_host_and_port() -> None:
    assert check_types()["prometheus"] is PrometheusCheck
    config = PrometheusCheckConfig.model_validate(
        {
            "name": "m",
            "type": "prometheus",
            "url": "https://api.fly.io/prometheus/acme",
            "queries": [{"metric": "cpu_pct", "promql": "1"}],
        }
    )
    assert PrometheusCheck(config, CheckDeps(http=None)).target() == "api.fly.io"  # type: ignore[arg-type]
