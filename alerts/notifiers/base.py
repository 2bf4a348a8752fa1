"""The notifier contract: a Notification in, a Delivery out (Sent, Retry or Failed)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import traceback
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field

from monitor.models import MASK, ConfigModel, Duration, format_duration, iso  # noqa: F401 -- iso for notifiers
from monitor.neterrors import network_reason
from monitor.proxies import ProxySetting, aiohttp_proxy_reason, choose_proxy
from monitor.secrets import Secrets, redact, secrets_of
from monitor.text import one_line, shorten
from monitor.tls import TlsKeys, session_ssl

log = logging.getLogger("alerts.notifiers")

# How much of a receiver's answer (an error body, an SMTP reply) a reason quotes, as one line.
_ANSWER_CHARS = 200

Event = Literal["firing", "resolved", "acknowledged", "flapping", "test", "storm", "storm_over"]
STORM_EVENTS = ("storm", "storm_over")  # one notification for many checks (SPEC section 12)
STORM_NAMED = 20  # checks a storm notification names; the rest are counted


class NotifierConfig(ConfigModel):
    """Keys every notifier shares; each type subclasses it with its own keys and `type`."""

    type: str
    timeout: Duration = Field(default=10.0, gt=0)


class HttpNotifierConfig(TlsKeys, NotifierConfig):
    """Keys every HTTP notifier shares: the proxy (the environment's by default, as other tools on
    the host) and the TLS keys."""

    proxy: ProxySetting = "env"


@dataclass(frozen=True, slots=True)
class Notification:
    """Everything a receiver is told about one alert event (SPEC section 5)."""

    event: Event
    alert_id: str
    check: str
    check_type: str
    target: str  # what was checked: URL host[:port], host:port, database name
    metric: str
    severity: Literal["warning", "critical"]
    value: float | None
    threshold: float | None
    direction: Literal["above", "below"]
    started_at: float  # epoch seconds: when the breach began
    created_at: float  # epoch seconds: when this notification was made
    resolved_at: float | None = None
    reason: str | None = None  # the last failure reason of the check
    labels: dict[str, str] = field(default_factory=dict)
    runbook: str | None = None
    acknowledged_by: str | None = None
    note: str | None = None  # e.g. "7 state changes in 30m" for flapping, the comment of an ack
    # A storm's: how many checks are down (still down, for storm_over), the first STORM_NAMED of
    # them, and the storm guard's window.
    storm_count: int | None = None
    storm_checks: list[str] = field(default_factory=list)
    storm_window_s: float | None = None

    @property
    def comparison(self) -> str:
        """`up 0 < 1`, `latency_p95_ms 1234 > 1000`."""
        op = "<" if self.direction == "below" else ">"
        if self.value is None or self.threshold is None:
            return self.metric
        return f"{self.metric} {_num(self.value)} {op} {_num(self.threshold)}"

    @property
    def recovery(self) -> str:
        """`up recovered (1, threshold 1)`: what a resolve reports, in place of a comparison that
        would read like a breach (`up 1 < 1`)."""
        shown = [] if self.value is None else [_num(self.value)]
        if self.threshold is not None:
            shown.append(f"threshold {_num(self.threshold)}")
        return f"{self.metric} recovered" + (f" ({', '.join(shown)})" if shown else "")

    @property
    def summary(self) -> str:
        """`backend-api: up 0 < 1 (status 503)`: the email subject without its bracket. A resolve
        says what recovered and after how long: `backend-api: up recovered (1, threshold 1) after
        4m 12s` (without ` after ...` when the duration is unknown)."""
        if self.event in STORM_EVENTS:
            return self.storm_text
        if self.event == "flapping":
            return f"{self.check}: {self.metric} is flapping" + (f" ({self.note})" if self.note else "")
        if self.event == "resolved":
            after = f" after {self.duration_text}" if self.duration_text else ""
            return f"{self.check}: {self.recovery}{after}"
        text = f"{self.check}: {self.comparison}"
        return f"{text} ({self.reason})" if self.reason else text

    @property
    def storm_text(self) -> str:
        """`storm: 2,814 checks down in 1m: backend-api, collab-tcp, ... and 2,794 more`; over:
        `storm over: 3 checks still down: a, b, c` (`storm over: no check still down`)."""
        count = self.storm_count or 0
        names = ", ".join(self.storm_checks)
        more = count - len(self.storm_checks)
        if more > 0:
            names += f", ... and {more:,} more" if names else f"{more:,} checks"
        noun = "check" if count == 1 else "checks"
        if self.event == "storm_over":
            if not count:
                return "storm over: no check still down"
            return f"storm over: {count:,} {noun} still down: {names}"
        window = format_duration(self.storm_window_s) if self.storm_window_s else "the window"
        return f"storm: {count:,} {noun} down in {window}: {names}"

    @property
    def tag(self) -> str:
        """The subject's bracket: CRITICAL, WARNING, RESOLVED, ACKNOWLEDGED, FLAPPING, STORM,
        STORM OVER, TEST."""
        if self.event == "firing":
            return self.severity.upper()
        return {
            "resolved": "RESOLVED",
            "acknowledged": "ACKNOWLEDGED",
            "flapping": "FLAPPING",
            "storm": "STORM",
            "storm_over": "STORM OVER",
        }.get(self.event, "TEST")

    @property
    def subject(self) -> str:
        """`[CRITICAL] backend-api: up 0 < 1 (status 503)`."""
        return f"[{self.tag}] {self.summary}"

    @property
    def duration_s(self) -> float | None:
        """How long the breach lasted, for resolved notifications."""
        return None if self.resolved_at is None else max(0.0, self.resolved_at - self.started_at)

    @property
    def duration_text(self) -> str | None:
        d = self.duration_s
        return None if d is None else human_duration(d)

    def alert_fields(self) -> dict[str, Any]:
        """The alert as every outside view shows it: the `alert` of the webhook body, an alert of
        `GET /api/v1/alerts` (plus its state), PagerDuty's custom_details (a subset)."""
        return {
            "id": self.alert_id,
            "check": self.check,
            "metric": self.metric,
            "severity": self.severity,
            "value": self.value,
            "threshold": self.threshold,
            "started_at": iso(self.started_at),
            "resolved_at": iso(self.resolved_at),
            "reason": self.reason,
            "labels": dict(self.labels),
            "runbook": self.runbook,
        }

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Notification:
        return cls(**data)


def _num(value: float) -> str:
    return f"{value:.6g}" if value != int(value) else str(int(value))


def format_number(value: float | None) -> str:
    """A measured value or threshold for people: `0`, `1234`, `12.5`; `n/a` when there is none."""
    return "n/a" if value is None else _num(value)


def human_duration(seconds: float) -> str:
    """`4m 12s`, `2h 5m`, `3d 4h`: for people reading a resolved message."""
    seconds = round(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
        if len(parts) == 2:
            break
    return " ".join(parts)


# ---------------------------------------------------------------- deliveries


@dataclass(frozen=True, slots=True)
class Sent:
    outcome: ClassVar[str] = "sent"


@dataclass(frozen=True, slots=True)
class Retry:
    """A passing failure (network, timeout, 429, 5xx): try again, after `after_s` if the receiver said."""

    reason: str
    after_s: float | None = None
    outcome: ClassVar[str] = "retry"


@dataclass(frozen=True, slots=True)
class Failed:
    """A permanent failure (other 4xx, bad config, rejected payload): retrying cannot help."""

    reason: str
    outcome: ClassVar[str] = "failed"


Delivery = Sent | Retry | Failed


def classify_http(status: int, body: str = "", retry_after: str | None = None) -> Delivery:
    """The one place HTTP answers become deliveries: 2xx sent; 429 and 5xx retry (honouring
    Retry-After, RFC 9110 section 10.2.3); every other answer is permanent."""
    if 200 <= status < 300:
        return Sent()
    detail = f"HTTP {status}" + (f": {shorten(one_line(body), _ANSWER_CHARS)}" if body.strip() else "")
    if status == 429 or status >= 500:
        return Retry(detail, parse_retry_after(retry_after))
    return Failed(detail)


def classify_smtp(code: int, message: str) -> Delivery:
    """SMTP replies (RFC 5321 section 4.2.1): 4xx is transient (retry), 5xx permanent."""
    detail = f"SMTP {code}: {shorten(one_line(message), _ANSWER_CHARS)}"
    return Retry(detail) if 400 <= code < 500 else Failed(detail)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    base = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - base)


def require_http_url(value: str) -> str:
    """For config validators: an http(s) URL with a host; the message never echoes the value
    (its userinfo or query may be a secret)."""
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        ok = False
    if not ok:
        raise ValueError("invalid URL: expected http://host/... or https://host/...")
    return value


# ---------------------------------------------------------------- the interface


class Notifier(ABC):
    """One configured notifier. `send` makes exactly one attempt and never sleeps or loops:
    retries and backoff belong to the outbox worker."""

    type: ClassVar[str]
    config_model: ClassVar[type[NotifierConfig]]

    def __init__(self, name: str, config: NotifierConfig, http: aiohttp.ClientSession) -> None:
        self.name = name
        self.config = config
        self.http = http

    @abstractmethod
    async def send(self, notification: Notification) -> Delivery:
        """Deliver one notification; a failing receiver is a Retry or Failed, not an exception."""

    @functools.cached_property
    def secrets(self) -> Secrets:
        """What this notifier's reasons must never show: its config's secrets (monitor.secrets)."""
        return secrets_of(self.config)

    def redacted(self, delivery: Delivery) -> Delivery:
        """`delivery` with any secret in its reason masked: receivers' error bodies may echo the
        request (an HTTP 404 page showing the webhook path, a proxy echoing the body)."""
        if isinstance(delivery, Sent):
            return delivery
        return dataclasses.replace(delivery, reason=redact(delivery.reason, self.secrets))

    def request_options(self, url: str) -> dict[str, Any]:
        """The proxy and TLS options of one request to `url` (HTTP notifiers; none for others)."""
        config = self.config
        if not isinstance(config, HttpNotifierConfig):
            return {}
        options: dict[str, Any] = {
            "ssl": session_ssl(config.tls_options),
            "server_hostname": config.tls_server_name,
        }
        target = urlsplit(url)
        proxy = choose_proxy(config.proxy, target.scheme == "https", target.hostname or "")
        if proxy is not None:
            options.update(proxy.aiohttp_kwargs())
        return options

    async def post_json(self, url: str, payload: Any, headers: dict[str, str] | None = None) -> Delivery:
        """POST JSON and classify the answer; network errors and timeouts retry.

        Error reasons name the notifier, never the URL: webhook URLs are secrets.
        """
        try:
            async with self.http.post(
                url, json=payload, headers=headers, **self.request_options(url)
            ) as resp:
                # Redact before classify_http shortens the body: a secret cut in two would not match.
                body = redact(await resp.text(errors="replace"), self.secrets)
                delivery = classify_http(resp.status, body, resp.headers.get("Retry-After"))
        except aiohttp.ClientConnectorError as exc:
            delivery = Retry(aiohttp_proxy_reason(exc) or network_reason(exc.os_error))
        except aiohttp.ClientHttpProxyError as exc:
            delivery = Retry(aiohttp_proxy_reason(exc) or type(exc).__name__)
        except (aiohttp.ClientError, OSError) as exc:
            delivery = Retry(f"{type(exc).__name__}")
        return self.redacted(delivery)


async def deliver(notifier: Notifier, notification: Notification) -> Delivery:
    """One attempt under the notifier's timeout; a bug in a notifier retries (it may be passing)
    rather than losing the page."""
    timeout_s = notifier.config.timeout
    try:
        async with asyncio.timeout(timeout_s):
            return await notifier.send(notification)
    except TimeoutError:
        return Retry(f"timeout after {format_duration(timeout_s)}")
    except Exception as exc:
        # The traceback is redacted: an exception's message may quote a URL or header (a secret).
        trace = "".join(traceback.format_exception(exc))
        log.error(
            "notifier raised\n%s",
            redact(trace, notifier.secrets),
            extra={"notifier": notifier.name, "reason": type(exc).__name__},
        )
        return Retry(f"internal error: {type(exc).__name__}")
