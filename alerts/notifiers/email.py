"""Email notifier over SMTP (aiosmtplib): multipart/alternative, plain text plus HTML."""

from __future__ import annotations

import contextlib
import html
import logging
import re
import ssl
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Annotated, Literal

import aiosmtplib
from pydantic import AfterValidator, Field, SecretStr

from alerts.notifiers.base import (
    STORM_EVENTS,
    Delivery,
    Failed,
    Notification,
    Notifier,
    NotifierConfig,
    Retry,
    Secrets,
    Sent,
    classify_smtp,
    format_number,
    iso,
    redact,
)
from monitor.models import Secret

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("alerts.notifiers.email")

DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
_ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+$")


def _address(value: str) -> str:
    if not _ADDRESS.match(value):
        raise ValueError("invalid email address: expected name@domain")
    return value


Address = Annotated[str, AfterValidator(_address)]

# Header colours per event (firing: per severity), chosen to read on light and dark clients.
COLOURS = {
    "critical": "#c62828",
    "warning": "#ef6c00",
    "resolved": "#2e7d32",
    "acknowledged": "#546e7a",
    "flapping": "#6a1b9a",
    "test": "#1565c0",
    "storm": "#b71c1c",
    "storm_over": "#2e7d32",
}


class EmailConfig(NotifierConfig):
    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535)  # None: 465 for tls, 587 starttls, 25
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str = ""
    password: Secret = SecretStr("")
    from_: Address = Field(alias="from")
    to: list[Address] = Field(min_length=1)

    @property
    def effective_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.security]


# ---------------------------------------------------------------- the message


def _one_line(text: str) -> str:
    """Header values cannot hold line breaks (and a reason might)."""
    return re.sub(r"[\r\n]+", " ", text)


def intro(n: Notification) -> str:
    """The first sentence of the body: what happened, in words."""
    if n.event in STORM_EVENTS:
        return storm_intro(n)
    if n.event == "firing":
        return f"{n.check} breached its {n.severity} threshold for {n.metric}."
    if n.event == "resolved":
        after = f", after {n.duration_text}" if n.duration_text else ""
        return f"{n.check} is back within its {n.metric} threshold{after}."
    if n.event == "acknowledged":
        return (
            f"{n.acknowledged_by or 'Someone'} acknowledged the {n.severity} alert on {n.check} ({n.metric})."
        )
    if n.event == "flapping":
        return f"{n.check} {n.metric} is flapping: notifications are held until it settles."
    return "This is a test notification from monitor: no action needed."


def facts(n: Notification) -> list[tuple[str, str]]:
    """The rows both bodies show (SPEC section 5: every notification carries these)."""
    if n.event in STORM_EVENTS:
        return storm_facts(n)
    rows = [
        ("Severity", n.severity),
        ("Check", f"{n.check} ({n.check_type})"),
    ]
    if n.target:
        rows.append(("Target", n.target))
    rows += [
        ("Metric", n.metric),
        ("Observed", format_number(n.value)),
        ("Threshold", "n/a" if n.threshold is None else f"{n.direction} {format_number(n.threshold)}"),
        ("Since", iso(n.started_at) or ""),
    ]
    if n.event == "resolved":
        rows += [("Resolved", iso(n.resolved_at) or "unknown"), ("Duration", n.duration_text or "unknown")]
    if n.event == "acknowledged":
        rows.append(("Acknowledged by", n.acknowledged_by or "someone"))
    if n.note:
        rows.append(("Comment" if n.event == "acknowledged" else "Note", n.note))
    rows += [
        ("Reason", n.reason or "none"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "none"),
        ("Runbook", n.runbook or "none"),
        ("Alert id", n.alert_id),
    ]
    return rows


def storm_intro(n: Notification) -> str:
    if n.event == "storm_over":
        return "The storm is over: the checks listed are still down, and are not notified one by one."
    return "Many checks went down at once: one mail for all of them, not one each."


def storm_facts(n: Notification) -> list[tuple[str, str]]:
    rows = [
        ("Checks down", f"{n.storm_count or 0:,}"),
        ("Checks", ", ".join(n.storm_checks) or "none"),
        ("Since", iso(n.started_at) or ""),
    ]
    if n.resolved_at is not None:
        rows.append(("Over", iso(n.resolved_at) or ""))
    return [*rows, ("Storm id", n.alert_id)]


def text_body(n: Notification) -> str:
    width = max(len(label) for label, _ in facts(n)) + 2
    lines = [n.subject, "", intro(n), ""]
    lines += [f"{label + ':':<{width}}{value}" for label, value in facts(n)]
    lines += ["", "-- ", "Sent by monitor."]
    return "\n".join(lines) + "\n"


def _html_value(label: str, value: str) -> str:
    if label == "Runbook" and re.match(r"^https?://", value, re.IGNORECASE):
        link = html.escape(value, quote=True)
        return f'<a href="{link}" style="color:#1565c0">{html.escape(value)}</a>'
    return html.escape(value)


def html_body(n: Notification) -> str:
    """A self-contained HTML body (inline styles, no images); every value is escaped."""
    colour = COLOURS[n.severity if n.event == "firing" else n.event]
    rows = "\n".join(
        '<tr><th align="left" valign="top" style="padding:4px 16px 4px 0;color:#555;'
        f'font-weight:600;white-space:nowrap">{html.escape(label)}</th>'
        '<td style="padding:4px 0;font-family:Menlo,Consolas,monospace">'
        f"{_html_value(label, value)}</td></tr>"
        for label, value in facts(n)
    )
    button = ""
    if n.runbook and re.match(r"^https?://", n.runbook, re.IGNORECASE):
        button = (
            f'<p style="margin:20px 0 0"><a href="{html.escape(n.runbook, quote=True)}" '
            f'style="background:{colour};color:#fff;padding:8px 16px;border-radius:4px;'
            'text-decoration:none;font-weight:600">Open runbook</a></p>'
        )
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(n.subject)}</title></head>
<body style="margin:0;padding:24px;background:#f4f5f7;font-family:-apple-system,'Segoe UI',Roboto,Arial,sans-serif;color:#222">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:640px;margin:0 auto;background:#fff;border-radius:6px;overflow:hidden;border:1px solid #ddd">
<tr><td style="background:{colour};color:#fff;padding:14px 20px;font-size:18px;font-weight:700">{html.escape(n.tag)}: {html.escape(n.check)}</td></tr>
<tr><td style="padding:20px">
<p style="margin:0 0 8px;font-size:16px;font-weight:600">{html.escape(n.summary)}</p>
<p style="margin:0 0 16px">{html.escape(intro(n))}</p>
<table role="presentation" cellpadding="0" cellspacing="0" style="font-size:14px;border-collapse:collapse">
{rows}
</table>{button}
</td></tr>
<tr><td style="padding:12px 20px;font-size:12px;color:#777;border-top:1px solid #eee">Sent by monitor.</td></tr>
</table>
</body>
</html>
"""  # noqa: E501 -- inline styles read better on one line each


def _id_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)


def build_message(n: Notification, config: EmailConfig) -> EmailMessage:
    """The whole message. Message-ID is derived from the notification, so that a retried
    delivery is recognisably the same mail; References ties every mail of one alert episode
    into one thread."""
    domain = config.from_.rpartition("@")[2]
    episode = f"monitor.{_id_part(n.alert_id)}.{round(n.started_at * 1000)}"
    msg = EmailMessage()
    msg["Subject"] = _one_line(n.subject)
    msg["From"] = config.from_
    msg["To"] = ", ".join(config.to)
    msg["Date"] = formatdate(n.created_at, usegmt=True)
    msg["Message-ID"] = f"<{episode}.{n.event}.{round(n.created_at * 1000)}@{domain}>"
    msg["References"] = f"<{episode}@{domain}>"
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to alerts
    msg["X-Monitor-Alert"] = _id_part(n.alert_id)
    msg["X-Monitor-Event"] = n.event
    msg["X-Monitor-Severity"] = n.severity
    # quoted-printable keeps the message 7-bit clean for servers without 8BITMIME.
    msg.set_content(text_body(n), cte="quoted-printable")
    msg.add_alternative(html_body(n), subtype="html", cte="quoted-printable")
    return msg


# ---------------------------------------------------------------- sending


class EmailNotifier(Notifier):
    """`security`: "tls" is implicit TLS (465), "starttls" upgrades and refuses to go on without
    it (587), "none" sends in clear and never upgrades (25). Certificates are checked against the
    system trust store (OpenSSL honours `SSL_CERT_FILE`), or `tls_context` when given (tests).
    Replies: classify_smtp (RFC 5321 section 4.2.1: 4xx transient, 5xx permanent, so a 535 bad
    login fails); connection errors, TLS handshake errors and timeouts retry."""

    type = "email"
    config_model = EmailConfig
    config: EmailConfig

    def __init__(
        self,
        name: str,
        config: NotifierConfig,
        http: aiohttp.ClientSession,
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(name, config, http)
        self.tls_context = tls_context

    async def send(self, notification: Notification) -> Delivery:
        try:
            delivery = await self._send(build_message(notification, self.config))
        except aiosmtplib.SMTPRecipientsRefused as exc:
            delivery = _refused(exc.recipients, self.secrets)
        except aiosmtplib.SMTPResponseException as exc:  # includes bad login (535) and greeting errors
            delivery = classify_smtp(exc.code, redact(exc.message, self.secrets))
        except TimeoutError as exc:
            delivery = Retry(f"SMTP timeout: {exc}" if str(exc) else "SMTP timeout")
        except ssl.SSLError as exc:
            delivery = Retry(f"TLS: {exc.reason or type(exc).__name__}")
        except (aiosmtplib.SMTPException, OSError) as exc:
            delivery = Retry(f"SMTP: {exc}" if str(exc) else f"SMTP: {type(exc).__name__}")
        return self.redacted(delivery)

    async def _send(self, message: EmailMessage) -> Delivery:
        """One SMTP session, step by step, so that a server lacking what the config asks for
        (STARTTLS, AUTH) is a permanent failure naming the key to fix, not a vague retry."""
        cfg = self.config
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.effective_port,
            use_tls=cfg.security == "tls",
            start_tls=False,  # done below, where its absence can be told apart
            tls_context=self.tls_context,
            timeout=cfg.timeout,
        )
        try:
            await client.connect()
            await client.ehlo()
            if cfg.security == "starttls":
                if not client.supports_extension("starttls"):
                    return Failed('SMTP: the server does not offer STARTTLS (security = "starttls")')
                await client.starttls()
            if cfg.username:
                await client.ehlo()
                if not client.supports_extension("auth"):
                    return Failed("SMTP: the server does not offer AUTH (username is set)")
                await client.login(cfg.username, cfg.password.get_secret_value())
            refused, _ = await client.send_message(message, sender=cfg.from_, recipients=cfg.to)
            if refused:
                # Some recipients took it: retrying would send it to them again.
                log.warning(
                    "some recipients refused",
                    extra={"notifier": self.name, "reason": _codes(refused.values())},
                )
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await client.quit()
            return Sent()
        finally:
            client.close()


def _refused(recipients: list[aiosmtplib.SMTPRecipientRefused], secrets: Secrets) -> Delivery:
    """Every recipient was refused: retry if any refusal was transient."""
    if not recipients:
        return Failed("SMTP: every recipient refused")
    transient = [exc for exc in recipients if 400 <= exc.code < 500]
    exc = (transient or recipients)[0]
    return classify_smtp(exc.code, redact(exc.message, secrets))


def _codes(responses: object) -> str:
    return ", ".join(str(getattr(r, "code", r)) for r in responses)  # type: ignore[attr-defined]
