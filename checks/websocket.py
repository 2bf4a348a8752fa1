"""WebSocket check: the opening handshake, then optionally one message and its reply."""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import SecretStr, field_validator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from checks.base import Check, CheckConfig, CheckDeps
from checks.http import (
    MaskedUrlRepr,
    scrub_url_secrets,
    url_target,
    validate_headers,
    validate_regex,
    validate_url,
)
from checks.tls import TlsOptions, client_context
from monitor.models import CheckResult, MaskedUrl, Secret
from monitor.neterrors import network_reason
from monitor.text import shorten

__all__ = ["WebSocketCheck", "WebSocketCheckConfig"]

# The closing handshake is cleanup, not measurement: a peer that does not answer it is dropped.
_CLOSE_TIMEOUT_S = 0.5
_SHOWN_CHARS = 60
_REASON_CHARS = 200


class WebSocketCheckConfig(MaskedUrlRepr, CheckConfig):
    """`type = "websocket"`: handshake; with `expect`, the first reply (to `send`, if given) must match."""

    type: Literal["websocket"]
    url: MaskedUrl
    send: str | None = None
    expect: str | None = None
    tls_verify: bool = True
    headers: dict[str, Secret] = {}

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


@functools.cache
def _shared_options(tls: TlsOptions | None) -> Mapping[str, Any]:
    """What `connect()` gets besides the URL, one mapping for all checks without headers.

    `tls` is None for a ws:// URL: no `ssl` option then, so a redirect to wss:// still gets
    websockets' default context.
    """
    options: dict[str, Any] = {
        "open_timeout": None,  # run_check owns the one deadline of a run
        "close_timeout": _CLOSE_TIMEOUT_S,
        "ping_interval": None,  # a run is short: no keepalive task to leave behind
        "proxy": None,  # measure the target itself, as the HTTP check does (trust_env off)
    }
    if tls is not None:
        options["ssl"] = client_context(tls)
    return MappingProxyType(options)


def _quote(text: str) -> str:
    return json.dumps(shorten(text, _SHOWN_CHARS), ensure_ascii=False)


class WebSocketCheck(Check):
    """One connection per run; `roundtrip_ms` is measured when a reply is awaited (`expect` set).

    With `send` but no `expect` the message is sent and no reply awaited: many servers do not
    answer every message, and waiting would turn a healthy target into a timeout.
    """

    __slots__ = ("_expect", "_options")

    type: ClassVar[str] = "websocket"
    config_model: ClassVar[type[CheckConfig]] = WebSocketCheckConfig
    config: WebSocketCheckConfig

    def __init__(self, config: WebSocketCheckConfig, deps: CheckDeps) -> None:
        super().__init__(config, deps)
        config = self.config
        self._expect = re.compile(config.expect) if config.expect is not None else None
        tls = TlsOptions(verify=config.tls_verify) if config.url.lower().startswith("wss:") else None
        options = _shared_options(tls)
        if config.headers:
            headers = {k: v.get_secret_value() for k, v in config.headers.items()}
            options = {**options, "additional_headers": headers}
        self._options = options

    def target(self) -> str:
        return url_target(self.config.url)

    async def run(self) -> CheckResult:
        started = time.perf_counter()
        try:
            connection = await connect(self.config.url, **self._options)
        except InvalidStatus as exc:
            reason = f"handshake refused: status {exc.response.status_code}"
        except InvalidURI:
            reason = "invalid URL"
        except InvalidHandshake as exc:
            detail = scrub_url_secrets(str(exc), self.config.url)
            reason = shorten(f"handshake failed: {detail}", _REASON_CHARS)
        except OSError as exc:
            reason = network_reason(exc)
        else:
            samples = {"handshake_ms": (time.perf_counter() - started) * 1000}
            try:
                reason = await self._exchange(connection, samples)
            except ConnectionClosed as exc:
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
        return CheckResult.failure(reason, (time.perf_counter() - started) * 1000)

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
