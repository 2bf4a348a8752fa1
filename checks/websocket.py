"""WebSocket check: the opening handshake, then optionally one message and its reply."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidStatus,
    InvalidURI,
    PayloadTooBig,
)
from websockets.uri import parse_uri

from checks.base import Check, CheckConfig, CheckDeps
from checks.http import (
    MaskedUrlRepr,
    scrub_url_secrets,
    url_target,
    validate_headers,
    validate_regex,
    validate_url,
)
from checks.netopts import FAMILIES, IpFamily, numeric_addrinfo, open_stream
from monitor.models import ByteSize, CheckResult, MaskedUrl, Secret
from monitor.neterrors import network_reason
from monitor.proxies import ProxyError, ProxySetting, choose_proxy
from monitor.text import shorten
from monitor.tls import TlsKeys, client_context

__all__ = ["WebSocketCheck", "WebSocketCheckConfig"]

# The closing handshake is cleanup, not measurement: a peer that does not answer it is dropped.
_CLOSE_TIMEOUT_S = 0.5
_SHOWN_CHARS = 60
_REASON_CHARS = 200


class WebSocketCheckConfig(MaskedUrlRepr, TlsKeys, CheckConfig):
    """`type = "websocket"`: handshake; with `expect`, the first reply (to `send`, if given) must match."""

    type: Literal["websocket"]
    url: MaskedUrl
    send: str | None = None
    expect: str | None = None
    headers: dict[str, Secret] = {}
    max_message: Annotated[ByteSize, Field(gt=0)] = 1_000_000  # "1MB"
    proxy: ProxySetting = None  # through a proxy: always a CONNECT tunnel, ws:// too
    ip_family: IpFamily = "any"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_url(value, ("ws", "wss"))

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: str | None) -> str | None:
        return None if value is None else validate_regex(value)

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return validate_headers(value)


def _format_size(size: int) -> str:
    for unit, factor in (("GB", 10**9), ("GiB", 2**30), ("MB", 10**6), ("MiB", 2**20), ("KB", 10**3)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"


class _Connection(ClientConnection):
    """websockets' connection, dropped the moment a frame announces more than max_message: the
    library would otherwise wait for the closing handshake (or the run's timeout)."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if isinstance(self.protocol.parser_exc, PayloadTooBig):
            self.transport.abort()


class _Connect(connect):
    """`connect()` opening its connections through checks.netopts (Happy Eyeballs, ip_family, a
    proxy's CONNECT tunnel) and timing the first: `dns_ms`, `connect_ms`, `tls_ms`. A redirect
    to another origin keeps none of the configured headers."""

    def __init__(self, check: WebSocketCheck, samples: dict[str, float], **options: Any) -> None:
        self._check = check
        self._samples: dict[str, float] | None = samples
        super().__init__(check.config.url, **options)

    async def open_tcp_connection(self) -> ClientConnection:
        check, uri, samples = self._check, self.ws_uri, self._samples
        self._samples = None  # the first hop's timings only
        config = check.config
        proxy = choose_proxy(config.proxy, uri.secure, uri.host)
        known = numeric_addrinfo(uri.host, uri.port) if proxy is None else None
        sock = await open_stream(uri.host, uri.port, FAMILIES[config.ip_family], proxy, samples, known)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            if uri.secure:
                host = uri.host if uri.host != check.host else (config.tls_server_name or uri.host)
                _, connection = await loop.create_connection(
                    lambda: self.factory(uri), sock=sock, ssl=check.context, server_hostname=host
                )
                if samples is not None:
                    samples["tls_ms"] = (time.perf_counter() - started) * 1000
            else:
                _, connection = await loop.create_connection(lambda: self.factory(uri), sock=sock)
        except BaseException:
            sock.close()
            raise
        return connection

    def process_redirect(self, exc: Exception) -> Exception | str:
        old = self.ws_uri
        outcome = super().process_redirect(exc)
        if isinstance(outcome, str) and self.additional_headers is not None:
            target = parse_uri(outcome)
            if (target.secure, target.host, target.port) != (old.secure, old.host, old.port):
                self.additional_headers = None
        return outcome


def _quote(text: str) -> str:
    return json.dumps(shorten(text, _SHOWN_CHARS), ensure_ascii=False)


class WebSocketCheck(Check):
    """One connection per run; `roundtrip_ms` is measured when a reply is awaited (`expect` set).

    With `send` but no `expect` the message is sent and no reply awaited: many servers do not
    answer every message, and waiting would turn a healthy target into a timeout.
    """

    __slots__ = ("_expect", "_options", "context", "host")

    type: ClassVar[str] = "websocket"
    config_model: ClassVar[type[CheckConfig]] = WebSocketCheckConfig
    config: WebSocketCheckConfig

    def __init__(self, config: WebSocketCheckConfig, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        config = self.config
        self._expect = re.compile(config.expect) if config.expect is not None else None
        self.host = parse_uri(config.url).host
        # Built now for wss:// (and for a ws:// URL redirected to wss://): never per run.
        self.context: ssl.SSLContext = client_context(config.tls_options)
        options: dict[str, Any] = {
            "open_timeout": None,  # run_check owns the one deadline of a run
            "close_timeout": _CLOSE_TIMEOUT_S,
            "ping_interval": None,  # a run is short: no keepalive task to leave behind
            "max_size": config.max_message,
            "create_connection": _Connection,
        }
        if config.headers:
            options["additional_headers"] = {k: v.get_secret_value() for k, v in config.headers.items()}
        self._options = options

    def target(self) -> str:
        return url_target(self.config.url)

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        samples: dict[str, float] = {}
        try:
            connection = await _Connect(self, samples, **self._options)
        except InvalidStatus as exc:
            reason = f"handshake refused: status {exc.response.status_code}"
        except InvalidURI:
            reason = "invalid URL"
        except InvalidHandshake as exc:
            detail = scrub_url_secrets(str(exc), self.config.url)
            reason = shorten(f"handshake failed: {detail}", _REASON_CHARS)
        except ProxyError as exc:
            reason = str(exc)
        except OSError as exc:
            reason = network_reason(exc)
        else:
            samples["handshake_ms"] = (time.perf_counter() - started) * 1000
            try:
                reason = await self._exchange(connection, samples)
            except ConnectionClosed as exc:
                if isinstance(connection.protocol.parser_exc, PayloadTooBig):
                    reason = f"message over max_message ({_format_size(self.config.max_message)})"
                else:
                    reason = f"connection closed before reply: {exc}"
            except BaseException:
                # Cancelled (the run's deadline) or a bug: drop the connection without a handshake.
                connection.transport.abort()
                raise
            # Measured before closing: the closing handshake is cleanup, bounded by close_timeout.
            latency_ms = (time.perf_counter() - started) * 1000
            try:
                await connection.close()
            except BaseException:
                connection.transport.abort()
                raise
            if reason is None:
                return CheckResult.success(latency_ms, **samples)
            return CheckResult.failure(reason, latency_ms, **samples)
        return CheckResult.failure(reason, (time.perf_counter() - started) * 1000, **samples)

    async def _exchange(self, connection: ClientConnection, samples: dict[str, float]) -> str | None:
        """Sends `send`, awaits the reply `expect` judges; returns the failure reason, if any."""
        sent = time.perf_counter()
        if self.config.send is not None:
            await connection.send(self.config.send)
        if self._expect is None:
            return None
        reply = await connection.recv()
        samples["roundtrip_ms"] = (time.perf_counter() - sent) * 1000
        text = reply if isinstance(reply, str) else reply.decode("utf-8", "replace")
        if self._expect.search(text):
            return None
        return f"reply {_quote(text)} does not match /{self._expect.pattern}/"
