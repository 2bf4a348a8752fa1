"""HTTP(S) check: status, body size and content, JSON expectations and metrics, certificate expiry."""

from __future__ import annotations

import asyncio
import codecs
import functools
import json
import math
import re
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_core import PydanticCustomError

from checks.base import Check, CheckConfig, CheckDeps
from checks.httpclient import BodyTooLarge, HttpClientError, PreparedRequest, Response
from checks.netopts import FAMILIES, IpFamily
from checks.tcp import host_port
from monitor.models import MASK, ByteSize, CheckResult, MaskedUrl, Secret, mask_url
from monitor.neterrors import network_reason
from monitor.plugins import optional_module
from monitor.proxies import ProxyError, ProxySetting
from monitor.text import shorten
from monitor.tls import TlsKeys

__all__ = [
    "HttpCheck",
    "HttpCheckConfig",
    "MaskedUrlRepr",
    "scrub_url_secrets",
    "url_target",
    "validate_headers",
    "validate_regex",
    "validate_url",
]

# Parsing a JSON body larger than this on the event loop would delay every other check.
_JSON_IN_THREAD_BYTES = 256 * 1024
_SHOWN_CHARS = 60
_REASON_CHARS = 200
_BUILTIN_SAMPLES = frozenset(
    {
        "up",
        "latency_ms",
        "status_code",
        "body_bytes",
        "tls_days_left",
        "dns_ms",
        "connect_ms",
        "tls_ms",
        "ttfb_ms",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_METRIC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SIZE_UNITS = (("GB", 10**9), ("GiB", 2**30), ("MB", 10**6), ("MiB", 2**20), ("KB", 10**3), ("KiB", 2**10))
_MISSING = object()

_StatusCode = Annotated[int, Field(ge=100, le=599)]


# ---------------------------------------------------------------- validation shared with websocket


def validate_url(value: str, schemes: Iterable[str]) -> str:
    """`value` if it is an absolute URL with one of `schemes` and a host, else "invalid URL"."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        raise PydanticCustomError("invalid_url", "invalid URL") from None
    if parts.scheme.lower() not in schemes or not parts.hostname or any(c.isspace() for c in value):
        raise PydanticCustomError("invalid_url", "invalid URL")
    return value


def validate_regex(pattern: str) -> str:
    """`pattern` if Python's `re` compiles it."""
    try:
        re.compile(pattern)
    except re.error as exc:
        raise PydanticCustomError("invalid_regex", "invalid regex: {error}", {"error": str(exc)}) from None
    return pattern


def validate_headers(headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
    """Header names are tokens; values must not break the request (the message never shows them)."""
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise PydanticCustomError("invalid_header", "invalid header name {name!r}", {"name": name})
        if any(c in value.get_secret_value() for c in "\r\n\0"):
            raise PydanticCustomError(
                "invalid_header", "header {name} value contains a line break or NUL", {"name": name}
            )
    return headers


def url_target(url: str) -> str:
    """The URL's host, with `:port` when the URL names one (never its userinfo or query)."""
    parts = urlsplit(url)
    return host_port(parts.hostname or "", parts.port)


def scrub_url_secrets(text: str, url: str) -> str:
    """`text` without the URL's secret parts (userinfo, query), should an error quote the URL."""
    parts = urlsplit(url)
    for secret in (parts.query, parts.netloc.rpartition("@")[0]):
        if secret:
            text = text.replace(secret, MASK)
    return text


class MaskedUrlRepr:
    """Mixin for config models: `repr()` shows `url` masked, as dumps already do (MaskedUrl)."""

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, mask_url(value) if name == "url" and isinstance(value, str) else value


# ---------------------------------------------------------------- config


def _format_size(size: int) -> str:
    for unit, factor in _SIZE_UNITS:
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


class HttpCheckConfig(MaskedUrlRepr, TlsKeys, CheckConfig):
    """`type = "http"`: one request; the response must match every `expect_*` given."""

    type: Literal["http"]
    url: MaskedUrl
    method: str = "GET"
    headers: dict[str, Secret] = {}
    expect_status: Annotated[list[_StatusCode], Field(min_length=1)] | None = None  # None: any 2xx
    expect_json: dict[str, Any] | None = None
    expect_body: str | None = None
    metrics: dict[str, str] = {}
    max_body: Annotated[ByteSize, Field(gt=0)] = 1_000_000  # "1MB"
    proxy: ProxySetting = None  # checks measure the target itself unless told
    ip_family: IpFamily = "any"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_url(value, ("http", "https"))

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.upper()
            if not _HEADER_NAME.match(value):
                raise PydanticCustomError("invalid_method", "invalid HTTP method")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return validate_headers(value)

    @field_validator("expect_body")
    @classmethod
    def _expect_body(cls, value: str | None) -> str | None:
        return None if value is None else validate_regex(value)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not _METRIC_NAME.match(name):
                raise PydanticCustomError(
                    "invalid_metric",
                    "invalid metric name {name}: use letters, digits and _",
                    {"name": repr(name)},  # pydantic fills {name} only: no !r conversion
                )
            if name in _BUILTIN_SAMPLES:
                raise PydanticCustomError(
                    "invalid_metric",
                    "metric name {name} is taken by a built-in sample",
                    {"name": repr(name)},
                )
            if not path or "" in path.split("."):
                raise PydanticCustomError(
                    "invalid_metric",
                    "metric {name}: empty path part in {path}",
                    {"name": repr(name), "path": repr(path)},
                )
        return value


# ---------------------------------------------------------------- the check


def _utcnow() -> datetime:
    # CheckDeps carries no clock; tests may replace this function.
    return datetime.now(UTC)


@functools.lru_cache(maxsize=1024)
def _not_after(cert_der: bytes) -> datetime | None:
    """The certificate's notAfter, parsed once per distinct certificate (a target's, every run)."""
    x509 = optional_module("cryptography.x509")
    try:
        return x509.load_der_x509_certificate(cert_der).not_valid_after_utc
    except ValueError:
        return None


def _tls_days_left(cert_der: bytes) -> float | None:
    """Whole days until the certificate's notAfter (5 days minus a minute -> 4)."""
    not_after = _not_after(cert_der)
    if not_after is None:
        return None
    return float(math.floor((not_after - _utcnow()).total_seconds() / 86400))


def _show(value: Any) -> str:
    """A JSON value as one short line."""
    return shorten(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")), _SHOWN_CHARS)


def _same(expected: Any, actual: Any) -> bool:
    # TOML true must not match JSON 1 (Python says True == 1), but 1 matches 1.0.
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return expected == actual
    return type(expected) is type(actual) and expected == actual


def _json_mismatch(expected: Any, actual: Any, path: tuple[str, ...] = ()) -> str | None:
    """The first place where `actual` does not contain `expected` (objects match as subsets)."""
    where = ".".join(path) or "body"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where} = {_show(actual)}"
        for key, want in expected.items():
            if key not in actual:
                return f"{'.'.join((*path, key))} missing"
            if mismatch := _json_mismatch(want, actual[key], (*path, key)):
                return mismatch
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where} = {_show(actual)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            if mismatch := _json_mismatch(want, got, (*path, str(index))):
                return mismatch
        return None
    return None if _same(expected, actual) else f"{where} = {_show(actual)}"


def _lookup(document: Any, path: str) -> Any:
    """The value at a dotted path; numeric parts index lists. `_MISSING` when absent."""
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _metric_value(document: Any, path: str) -> float | str:
    """The number at `path`, or the reason it is not one."""
    value = _lookup(document, path)
    if value is _MISSING:
        return f'metrics: path "{path}" not found'
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return f'metrics: path "{path}" is not a number ({_show(value)})'


def parse_json(body: bytes) -> Any:
    """A JSON body, or ValueError saying in one line why it is none."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise ValueError("not UTF-8/16/32 text") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _text_encoding(charset: str | None) -> str:
    if charset:
        try:
            return codecs.lookup(charset).name
        except LookupError:
            pass
    return "utf-8"


class HttpCheck(Check):
    """One request on a fresh connection per run; the body is streamed, never over max_body.

    The request goes through checks.httpclient, not the shared aiohttp session (`deps.http`,
    kept for plugins): a fraction of the CPU per run, the same behaviour.
    """

    __slots__ = ("_body_re", "_request", "_wants_json")

    type: ClassVar[str] = "http"
    config_model: ClassVar[type[CheckConfig]] = HttpCheckConfig
    config: HttpCheckConfig

    def __init__(self, config: HttpCheckConfig, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        config = self.config
        self._body_re = re.compile(config.expect_body) if config.expect_body is not None else None
        self._wants_json = config.expect_json is not None or bool(config.metrics)
        self._request = PreparedRequest(
            config.method,
            config.url,
            {name: value.get_secret_value() for name, value in config.headers.items()},
            tls=config.tls_options,
            keep_body=self._wants_json or self._body_re is not None,
            max_body=config.max_body,
            proxy=config.proxy,
            family=FAMILIES[config.ip_family],
            server_name=config.tls_server_name,
        )

    def target(self) -> str:
        return url_target(self.config.url)

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        samples: dict[str, float] = {}
        try:
            reason = await self._request_once(samples)
        except HttpClientError as exc:
            reason = shorten(scrub_url_secrets(str(exc), self.config.url), _REASON_CHARS)
        except ProxyError as exc:
            reason = str(exc)
        except OSError as exc:  # DNS, connect, TLS handshake, reset before the answer
            reason = network_reason(exc)
        latency_ms = (time.perf_counter() - started) * 1000
        if reason is None:
            return CheckResult.success(latency_ms, **samples)
        return CheckResult.failure(reason, latency_ms, **samples)

    def _status_expected(self, status: int) -> bool:
        if self.config.expect_status is None:
            return 200 <= status < 300
        return status in self.config.expect_status

    async def _request_once(self, samples: dict[str, float]) -> str | None:
        """Fills `samples` as they are measured; returns the failure reason, if any."""
        response = await self._request.send(samples)
        try:
            samples["status_code"] = float(response.status)
            cert_der = response.peer_cert
            if cert_der and (days_left := _tls_days_left(cert_der)) is not None:
                samples["tls_days_left"] = days_left
            if not self._status_expected(response.status):
                return f"status {response.status}"
            body = await self._read_body(response, samples)
            if isinstance(body, str):
                return body
            return await self._inspect(body, _text_encoding(response.charset), samples)
        finally:
            response.close()  # aborts the connection unless the response came in whole

    async def _read_body(self, response: Response, samples: dict[str, float]) -> bytes | str:
        """The body (kept only when something inspects it), or the reason it was refused.

        `body_bytes` counts the body as decoded (chunked and gzip/deflate undone), as before.
        """
        limit = self.config.max_body
        if response.content_length is not None and response.content_length > limit:
            return f"body over max_body ({_format_size(limit)}): Content-Length {response.content_length}"
        try:
            body = await response.read()
        except BodyTooLarge:
            return f"body over max_body ({_format_size(limit)})"
        samples["body_bytes"] = float(response.body_size)
        return body

    async def _inspect(self, body: bytes, encoding: str, samples: dict[str, float]) -> str | None:
        config = self.config
        metrics_reason: str | None = None
        if self._wants_json:
            try:
                if len(body) > _JSON_IN_THREAD_BYTES:
                    document = await asyncio.to_thread(parse_json, body)
                else:
                    document = parse_json(body)
            except ValueError as exc:
                return f"invalid JSON: {exc}"
            # Metrics are recorded even when an expectation fails: they still describe the target.
            for name, path in config.metrics.items():
                value = _metric_value(document, path)
                if isinstance(value, str):
                    metrics_reason = metrics_reason or value
                else:
                    samples[name] = value
            if config.expect_json is not None and (mismatch := _json_mismatch(config.expect_json, document)):
                return f"expect_json: {mismatch}"
        if self._body_re is not None and not self._body_re.search(body.decode(encoding, "replace")):
            return f"expect_body: /{shorten(self._body_re.pattern, _SHOWN_CHARS)}/ not found"
        return metrics_reason
