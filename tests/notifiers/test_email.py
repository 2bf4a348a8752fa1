"""Email: the message (subject, parts, escaping) and delivery to a real SMTP server on loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from typing import Any

import aiohttp
import pytest

from alerts.notifiers.base import Delivery, Failed, Retry, Sent, deliver
from alerts.notifiers.email import EmailConfig, EmailNotifier, build_message, html_body, text_body
from tests.fakes.servers import refused_port
from tests.fakes.smtp import SmtpServer
from tests.notifiers.samples import RUNBOOK, latency_warning, notification

PASSWORD = "pa55-w0rd-Secret"


def _config(**overrides: Any) -> EmailConfig:
    raw = {
        "type": "email",
        "host": "127.0.0.1",
        "security": "none",
        "from": "monitor@example.com",
        "to": ["ops@example.com"],
        "timeout": "2s",
    }
    raw.update(overrides)
    return EmailConfig.model_validate(raw)


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


# ---------------------------------------------------------------- the message


def test_subject_is_the_notification_subject() -> None:
    assert build_message(notification("firing"), _config())["Subject"] == (
        "[CRITICAL] backend-api: up 0 < 1 (status 503)"
    )
    assert build_message(latency_warning(), _config())["Subject"] == (
        "[WARNING] backend-api: latency_p95_ms 734 > 500"
    )
    assert build_message(notification("resolved"), _config())["Subject"] == (
        "[RESOLVED] backend-api: up recovered (1, threshold 1) after 4m 12s"
    )
    assert build_message(notification("resolved", resolved_at=None), _config())["Subject"] == (
        "[RESOLVED] backend-api: up recovered (1, threshold 1)"
    )


def test_headers() -> None:
    config = _config(to=["ops@example.com", "oncall@example.com"])
    message = build_message(notification("firing"), config)
    assert message["From"] == "monitor@example.com"
    assert message["To"] == "ops@example.com, oncall@example.com"
    assert message["Date"].datetime.timestamp() == notification("firing").created_at
    assert (
        message["Message-ID"] == "<monitor.3f2a9c1e7b5d4e60.1795000000000.firing.1795000060000@example.com>"
    )
    assert message["References"] == "<monitor.3f2a9c1e7b5d4e60.1795000000000@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    # A retried delivery is the same mail; the resolve is another mail of the same thread.
    assert build_message(notification("firing"), config)["Message-ID"] == message["Message-ID"]
    resolved = build_message(notification("resolved"), config)
    assert resolved["Message-ID"] != message["Message-ID"]
    assert resolved["References"] == message["References"]


def test_text_body_lists_every_fact() -> None:
    text = text_body(notification("firing"))
    assert text.splitlines()[0] == "[CRITICAL] backend-api: up 0 < 1 (status 503)"
    for line in [
        "Severity:  critical",
        "Check:     backend-api (http)",
        "Target:    backend.example.com",
        "Metric:    up",
        "Observed:  0",
        "Threshold: below 1",
        "Since:     2026-11-18T11:06:40.000Z",
        "Reason:    status 503",
        "Labels:    component=api, team=backend",
        f"Runbook:   {RUNBOOK}",
        "Alert id:  3f2a9c1e7b5d4e60",
    ]:
        assert line in text.splitlines()


def test_resolved_body_carries_the_duration() -> None:
    text, html = _parts(build_message(notification("resolved"), _config()))
    assert "back within its up threshold, after 4m 12s" in text
    assert "Duration:  4m 12s" in text.splitlines()
    assert "Resolved:  2026-11-18T11:10:52.000Z" in text.splitlines()
    assert "4m 12s" in html


def test_resolved_body_without_a_duration() -> None:
    text, html = _parts(build_message(notification("resolved", resolved_at=None), _config()))
    assert text.splitlines()[0] == "[RESOLVED] backend-api: up recovered (1, threshold 1)"
    assert "backend-api is back within its up threshold." in text
    assert "Duration:  unknown" in text.splitlines()
    assert "None" not in text and "None" not in html


def test_acknowledged_and_test_bodies() -> None:
    ack = text_body(notification("acknowledged"))
    assert "alice acknowledged the critical alert on backend-api (up)." in ack
    assert "Comment:" in ack and "looking at the load balancer" in ack
    assert "no action needed" in text_body(notification("test"))


def test_html_escapes_every_value() -> None:
    n = notification(
        check="api",
        reason="<script>alert(1)</script>",
        labels={"x": '"&<>'},
        runbook="javascript:alert(1)",
    )
    html = html_body(n)
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x=&quot;&amp;&lt;&gt;" in html
    assert 'href="javascript' not in html  # only http(s) runbooks become links
    assert f'href="{RUNBOOK}"' in html_body(notification())


def test_line_breaks_never_reach_the_subject_header() -> None:
    message = build_message(notification(reason="boom\r\nBcc: victim@example.com"), _config())
    assert message["Subject"] == "[CRITICAL] backend-api: up 0 < 1 (boom Bcc: victim@example.com)"
    assert message["Bcc"] is None


def test_config() -> None:
    assert _config(security="tls").effective_port == 465
    assert _config(security="starttls").effective_port == 587
    assert _config(security="none").effective_port == 25
    assert _config(port=2525).effective_port == 2525
    assert _config(password=PASSWORD).model_dump(by_alias=True)["password"] == "***"


# ---------------------------------------------------------------- delivery


@pytest.fixture
async def smtp_servers() -> AsyncIterator[Callable[..., Awaitable[SmtpServer]]]:
    started: list[SmtpServer] = []

    async def start(**kwargs: Any) -> SmtpServer:
        server = await SmtpServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        await server.aclose()


@pytest.mark.parametrize("security", ["none", "starttls", "tls"], ids=["plain", "starttls", "implicit-tls"])
async def test_delivers_with_each_security(
    security: str,
    smtp_servers: Callable[..., Awaitable[SmtpServer]],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    http_session: aiohttp.ClientSession,
) -> None:
    smtp = await smtp_servers(
        security=security, tls_context=server_tls if security != "none" else None, auth=("alice", PASSWORD)
    )
    config = _config(security=security, port=smtp.port, username="alice", password=PASSWORD)
    notifier = EmailNotifier("ops-mail", config, http_session, tls_context=client_tls)
    assert await notifier.send(notification("firing")) == Sent()

    [mail] = await smtp.wait_for(1)
    assert mail.tls is (security != "none")
    assert mail.login == "alice"
    assert mail.mail_from == "monitor@example.com"
    assert mail.rcpt_tos == ["ops@example.com"]
    message = mail.message
    assert message["Subject"] == "[CRITICAL] backend-api: up 0 < 1 (status 503)"
    text, html = _parts(message)  # type: ignore[arg-type]
    assert "Reason:    status 503" in text
    assert "status 503" in html


async def test_partial_refusal_is_sent(
    smtp_servers: Callable[..., Awaitable[SmtpServer]], http_session: aiohttp.ClientSession
) -> None:
    smtp = await smtp_servers(rcpt_replies=["550 5.1.1 no such user"])
    config = _config(port=smtp.port, to=["gone@example.com", "ops@example.com"])
    notifier = EmailNotifier("ops-mail", config, http_session)
    assert await notifier.send(notification()) == Sent()  # retrying would mail ops@ twice
    [mail] = await smtp.wait_for(1)
    assert mail.rcpt_tos == ["ops@example.com"]


async def _silent_server() -> tuple[asyncio.Server, int]:
    """Accepts connections and never says a word (no SMTP greeting)."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _greeting_server(line: bytes) -> tuple[asyncio.Server, int]:
    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(line)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


CASES: dict[str, tuple[dict[str, Any], dict[str, Any], type[Delivery], str]] = {
    # id: (server kwargs, config overrides, outcome class, reason prefix)
    "accepted": ({}, {}, Sent, ""),
    "data-451": (
        {"data_replies": ["451 4.3.0 try again later"]},
        {},
        Retry,
        "SMTP 451: 4.3.0 try again later",
    ),
    "data-554": ({"data_replies": ["554 5.7.1 rejected as spam"]}, {}, Failed, "SMTP 554: 5.7.1 rejected"),
    "rcpt-450": ({"rcpt_replies": ["450 4.2.1 mailbox busy"]}, {}, Retry, "SMTP 450: 4.2.1 mailbox busy"),
    "rcpt-550": ({"rcpt_replies": ["550 5.1.1 no such user"]}, {}, Failed, "SMTP 550: 5.1.1 no such user"),
    "auth-535": (
        {"auth": ("alice", "other")},
        {"username": "alice", "password": PASSWORD},
        Failed,
        "SMTP 535",
    ),
    "starttls-required": ({"security": "starttls", "tls": True}, {"security": "none"}, Failed, "SMTP 530"),
    "starttls-not-offered": (
        {},
        {"security": "starttls"},
        Failed,
        "SMTP: the server does not offer STARTTLS",
    ),
    "auth-not-offered": (
        {},
        {"username": "alice", "password": PASSWORD},
        Failed,
        "SMTP: the server does not offer AUTH",
    ),
    "untrusted-certificate": (
        {"security": "tls", "tls": True},
        {"security": "tls", "trust": False},
        Retry,
        "",
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_smtp_outcomes(
    case: str,
    smtp_servers: Callable[..., Awaitable[SmtpServer]],
    server_tls: ssl.SSLContext,
    client_tls: ssl.SSLContext,
    http_session: aiohttp.ClientSession,
) -> None:
    server_kwargs, overrides, outcome, reason = CASES[case]
    server_kwargs, overrides = dict(server_kwargs), dict(overrides)
    if server_kwargs.pop("tls", False):
        server_kwargs["tls_context"] = server_tls
    trust = overrides.pop("trust", True)
    smtp = await smtp_servers(**server_kwargs)
    notifier = EmailNotifier(
        "ops-mail",
        _config(port=smtp.port, **overrides),
        http_session,
        tls_context=client_tls if trust else None,
    )
    delivery = await deliver(notifier, notification())
    assert isinstance(delivery, outcome), delivery
    if not isinstance(delivery, Sent):
        assert delivery.reason.startswith(reason), delivery.reason


async def test_connection_refused_retries(http_session: aiohttp.ClientSession) -> None:
    with refused_port() as port:
        delivery = await deliver(EmailNotifier("ops-mail", _config(port=port), http_session), notification())
    assert isinstance(delivery, Retry)
    assert "Connection refused" in delivery.reason or "connect" in delivery.reason.lower()


async def test_server_that_never_greets_times_out(http_session: aiohttp.ClientSession) -> None:
    server, port = await _silent_server()
    try:
        notifier = EmailNotifier("ops-mail", _config(port=port, timeout="200ms"), http_session)
        delivery = await deliver(notifier, notification())
    finally:
        server.close()
    assert isinstance(delivery, Retry)
    assert "timeout" in delivery.reason.lower()


@pytest.mark.parametrize(
    ("greeting", "outcome"),
    [(b"421 4.3.2 too busy, come back later\r\n", Retry), (b"554 5.7.1 no service for you\r\n", Failed)],
    ids=["greeting-421", "greeting-554"],
)
async def test_greeting_errors(
    greeting: bytes, outcome: type[Delivery], http_session: aiohttp.ClientSession
) -> None:
    server, port = await _greeting_server(greeting)
    try:
        delivery = await deliver(EmailNotifier("ops-mail", _config(port=port), http_session), notification())
    finally:
        server.close()
    assert isinstance(delivery, outcome), delivery


# ---------------------------------------------------------------- secrets


async def _echoing_auth_server() -> tuple[asyncio.Server, int]:
    """A server that quotes the decoded credentials in its 535, as a badly written relay might."""

    async def talk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 echo ESMTP\r\n")
        while line := await reader.readline():
            command = line.decode().strip()
            if command.upper().startswith("EHLO"):
                writer.write(b"250-echo\r\n250 AUTH PLAIN\r\n")
            elif command.upper().startswith("AUTH PLAIN"):
                creds = base64.b64decode(command.split()[2]).decode().replace("\0", " ")
                writer.write(f"535 5.7.8 rejected credentials:{creds}\r\n".encode())
            else:
                writer.write(b"221 bye\r\n")
                break
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(talk, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_no_password_in_reasons_or_logs(
    smtp_servers: Callable[..., Awaitable[SmtpServer]],
    http_session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    login = {"username": "alice", "password": PASSWORD}
    wrong = await smtp_servers(auth=("alice", "other"))
    no_auth = await smtp_servers()
    echo, echo_port = await _echoing_auth_server()
    silent, silent_port = await _silent_server()
    try:
        deliveries = [
            await deliver(
                EmailNotifier("m", _config(port=wrong.port, **login), http_session), notification()
            ),
            await deliver(
                EmailNotifier("m", _config(port=no_auth.port, **login), http_session), notification()
            ),
            await deliver(EmailNotifier("m", _config(port=echo_port, **login), http_session), notification()),
            await deliver(
                EmailNotifier("m", _config(port=silent_port, timeout="200ms", **login), http_session),
                notification(),
            ),
        ]
        with refused_port() as port:
            notifier = EmailNotifier("m", _config(port=port, **login), http_session)
            deliveries.append(await deliver(notifier, notification()))
    finally:
        echo.close()
        silent.close()

    reasons = [d.reason for d in deliveries if isinstance(d, Retry | Failed)]
    assert len(reasons) == 5
    assert reasons[2] == "SMTP 535: 5.7.8 rejected credentials: alice ***"  # quoted, and masked
    for reason in reasons:
        assert PASSWORD not in reason
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(notifier.config) and PASSWORD not in notifier.config.model_dump_json()
