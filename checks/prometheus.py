"""Prometheus check: instant queries against a Prometheus-compatible API, each giving one sample."""

from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import aiohttp
from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError
from yarl import URL

from checks.base import Check, CheckConfig, CheckDeps
from checks.http import (
    MaskedUrlRepr,
    parse_json,
    scrub_url_secrets,
    url_target,
    validate_headers,
    validate_url,
)
from checks.netopts import FAMILIES, HAPPY_EYEBALLS_DELAY, IpFamily, numeric_addrinfo
from monitor.models import CheckResult, ConfigModel, MaskedUrl, Secret
from monitor.neterrors import network_reason
from monitor.proxies import ProxySetting, aiohttp_proxy_reason, choose_proxy
from monitor.text import one_line, shorten
from monitor.tls import TlsKeys, session_ssl

__all__ = ["PrometheusCheck", "PrometheusCheckConfig", "PrometheusQueryConfig"]

_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What every check or the evaluator already produces: a query metric must not shadow it.
_RESERVED_METRICS = frozenset(
    {
        "up",
        "latency_ms",
        "query_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "error_rate_pct",
        "availability_pct",
    }
)
# An instant query answering one series is a few hundred bytes; an answer this large is a query
# matching a great many series (or not a Prometheus), and is never read whole into memory.
_MAX_ANSWER_BYTES = 1_000_000
_MAX_ANSWER_SHOWN = "1MB"
# Parsing a JSON answer larger than this on the event loop would delay every other check.
_JSON_IN_THREAD_BYTES = 256 * 1024
_ERROR_CHARS = 160  # Prometheus' own error text (a parse error quotes the query)
_SHOWN_CHARS = 40  # a non-numeric value
_REASON_CHARS = 600


class PrometheusQueryConfig(ConfigModel):
    """One instant query; its scalar or one-series vector result is the sample `metric`."""

    metric: str = Field(max_length=200)
    promql: str = Field(min_length=1)

    @field_validator("metric")
    @classmethod
    def _metric(cls, name: str) -> str:
        if not _METRIC_NAME.match(name):
            raise PydanticCustomError(
                "invalid_metric",
                "invalid metric name {name}: use letters, digits and _",
                {"name": repr(name)},
            )
        if name in _RESERVED_METRICS:
            raise PydanticCustomError(
                "invalid_metric", "metric name {name} is taken by a built-in sample", {"name": repr(name)}
            )
        return name

    @field_validator("promql")
    @classmethod
    def _promql(cls, promql: str) -> str:
        if not promql.strip():
            raise PydanticCustomError("empty_promql", "promql is empty")
        return promql


class PrometheusCheckConfig(MaskedUrlRepr, TlsKeys, CheckConfig):
    """`type = "prometheus"`: `queries` against `{url}/api/v1/query`, concurrently."""

    type: Literal["prometheus"]
    url: MaskedUrl  # the API's base URL, as Grafana's data source setting takes it
    headers: dict[str, Secret] = {}
    queries: list[PrometheusQueryConfig]
    proxy: ProxySetting = None
    ip_family: IpFamily = "any"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_url(value, ("http", "https"))

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return validate_headers(value)

    @field_validator("queries")
    @classmethod
    def _queries(cls, queries: list[PrometheusQueryConfig]) -> list[PrometheusQueryConfig]:
        if not queries:
            raise PydanticCustomError("no_queries", "at least one query is needed")
        seen: set[str] = set()
        for query in queries:
            if query.metric in seen:
                raise PydanticCustomError(
                    "duplicate_metric", "duplicate metric {name}", {"name": repr(query.metric)}
                )
            seen.add(query.metric)
        return queries


# ---------------------------------------------------------------- one query


class _NoData(Exception):
    """The query matched nothing: no sample, and not a failure."""


class _Failed(Exception):
    """The answer cannot give a sample: the run fails with this reason."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    metric: str
    query_ms: float
    value: float | None = None
    failure: str | None = None  # the run fails
    no_data: bool = False


def _parse_json(body: bytes) -> Any:
    try:
        return parse_json(body)
    except ValueError as exc:
        raise _Failed(f"invalid JSON: {exc}") from None


def _api_error(document: Any) -> str | None:
    """Prometheus' `errorType: error` of an error answer, shortened; None for another body."""
    if not isinstance(document, dict) or document.get("status") != "error":
        return None
    error = one_line(str(document.get("error") or "no error text"))
    kind = document.get("errorType")
    text = f"{kind}: {error}" if isinstance(kind, str) and kind else error
    return shorten(text, _ERROR_CHARS)


def _number(value: Any) -> float:
    """A sample's value: Prometheus sends `[timestamp, "1.5"]`, the number as a string."""
    if not isinstance(value, list) or len(value) != 2:
        raise _Failed(f"unexpected answer: value {shorten(json.dumps(value), _SHOWN_CHARS)}")
    raw = value[1]
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise _Failed(f"value is not a number: {shorten(json.dumps(raw), _SHOWN_CHARS)}") from None
    if math.isnan(number):
        raise _Failed("value is NaN")
    if math.isinf(number):
        raise _Failed(f"value is {'+' if number > 0 else '-'}Inf")
    return number


def _sample(document: Any) -> float:
    """The one number of a successful instant query's answer; raises _NoData or _Failed."""
    if error := _api_error(document):
        raise _Failed(f"query error: {error}")
    if not isinstance(document, dict) or document.get("status") != "success":
        raise _Failed("unexpected answer: no status success")
    data = document.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind in ("scalar", "string"):
        return _number(result)
    if kind == "matrix":
        raise _Failed("query returned a range vector: an instant vector or a scalar is needed")
    if kind != "vector" or not isinstance(result, list):
        raise _Failed(f"unexpected answer: resultType {shorten(json.dumps(kind), _SHOWN_CHARS)}")
    if not result:
        raise _NoData
    if len(result) > 1:
        raise _Failed(f"query returned {len(result)} series")
    series = result[0]
    return _number(series.get("value") if isinstance(series, dict) else None)


async def _read_capped(response: aiohttp.ClientResponse) -> bytes:
    """The body as decoded, refused past _MAX_ANSWER_BYTES without reading the rest."""
    too_large = f"answer over {_MAX_ANSWER_SHOWN}"
    if response.content_length is not None and response.content_length > _MAX_ANSWER_BYTES:
        raise _Failed(f"{too_large}: Content-Length {response.content_length}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > _MAX_ANSWER_BYTES:
            raise _Failed(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


def _request_reason(exc: aiohttp.ClientError | OSError) -> str:
    """One line for a request that got no answer."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return network_reason(exc.certificate_error)
    if proxy_reason := aiohttp_proxy_reason(exc):
        return proxy_reason
    if isinstance(exc, aiohttp.ClientConnectorError):
        return network_reason(exc.os_error)
    if isinstance(exc, aiohttp.ClientError):
        detail = one_line(str(exc)) or type(exc).__name__
        return shorten(f"request failed: {detail}", _ERROR_CHARS)
    return network_reason(exc)


# ---------------------------------------------------------------- the check


class PrometheusCheck(Check):
    """Every query at once through the daemon's session; the run fails if any query fails.

    The check's timeout (enforced by the runner) covers all queries together.
    """

    __slots__ = ("_endpoint", "_family", "_family_mismatch", "_headers", "_request_options")

    type: ClassVar[str] = "prometheus"
    config_model: ClassVar[type[CheckConfig]] = PrometheusCheckConfig
    config: PrometheusCheckConfig

    def __init__(self, config: PrometheusCheckConfig, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        base = URL(self.config.url)  # a query string in the base URL (an API key) is kept
        self._endpoint = base.with_path(base.path.rstrip("/") + "/api/v1/query", keep_query=True)
        self._headers = {"Accept": "application/json"} | {
            name: value.get_secret_value() for name, value in self.config.headers.items()
        }
        config = self.config
        self._request_options: dict[str, Any] = {
            "ssl": session_ssl(config.tls_options),
            "server_hostname": config.tls_server_name,
        }
        proxy = choose_proxy(config.proxy, base.scheme == "https", base.host or "")
        if proxy is not None:
            self._request_options.update(proxy.aiohttp_kwargs())
        self._family = FAMILIES[config.ip_family]
        # aiohttp's connector trips on an address literal of the other family (an assertion).
        literal = numeric_addrinfo(base.host or "", base.port or 0)
        self._family_mismatch = literal is not None and self._family not in (socket.AF_UNSPEC, literal[0][0])

    def target(self) -> str:
        return url_target(self.config.url)

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        if self._family_mismatch:
            return CheckResult.failure("DNS lookup failed: address family does not match ip_family", 0.0)
        if self._family == socket.AF_UNSPEC:
            outcomes = await self._queries(self.deps.http)
        else:
            # The family is the connector's: a session of this run's own (a few a minute at most).
            connector = aiohttp.TCPConnector(
                family=self._family, force_close=True, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
            )
            async with aiohttp.ClientSession(connector=connector, headers=self.deps.http.headers) as session:
                outcomes = await self._queries(session)
        latency_ms = (time.perf_counter() - started) * 1000
        samples = {o.metric: o.value for o in outcomes if o.value is not None}
        samples["query_ms"] = max(o.query_ms for o in outcomes)
        notes = [
            f"{o.metric}: {o.failure}" if o.failure is not None else f"{o.metric}: no data"
            for o in outcomes
            if o.failure is not None or o.no_data
        ]
        if not notes:
            return CheckResult.success(latency_ms, **samples)
        reason = shorten("; ".join(notes), _REASON_CHARS)
        if any(o.failure is not None for o in outcomes):
            return CheckResult.failure(reason, latency_ms, **samples)
        # Succeeded, but a query without data says so: its row keeps its state.
        return CheckResult(True, latency_ms, samples, reason)

    async def _queries(self, session: aiohttp.ClientSession) -> list[_Outcome]:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(self._query(session, q.metric, q.promql)) for q in self.config.queries]
        return [task.result() for task in tasks]

    async def _query(self, session: aiohttp.ClientSession, metric: str, promql: str) -> _Outcome:
        started = time.perf_counter()
        try:
            value = await self._fetch(session, promql)
        except _NoData:
            return _Outcome(metric, (time.perf_counter() - started) * 1000, no_data=True)
        except _Failed as exc:
            failure = str(exc)
        except (aiohttp.ClientError, OSError) as exc:
            failure = _request_reason(exc)
        else:
            return _Outcome(metric, (time.perf_counter() - started) * 1000, value=value)
        failure = scrub_url_secrets(failure, self.config.url)
        return _Outcome(metric, (time.perf_counter() - started) * 1000, failure=failure)

    async def _fetch(self, session: aiohttp.ClientSession, promql: str) -> float:
        async with session.get(
            self._endpoint, params={"query": promql}, headers=self._headers, **self._request_options
        ) as response:
            body = await _read_capped(response)
            status = response.status
        ok = 200 <= status < 300
        try:
            if len(body) > _JSON_IN_THREAD_BYTES:
                document = await asyncio.to_thread(_parse_json, body)
            else:
                document = _parse_json(body)
        except _Failed:
            if not ok:
                raise _Failed(f"status {status}") from None
            raise
        if not ok:
            # 400 bad_data, 422 execution, 503 timeout/canceled: Prometheus says why in the body.
            error = _api_error(document)
            raise _Failed(f"status {status}: {error}" if error else f"status {status}")
        return _sample(document)
