"""A real SMTP server on loopback (aiosmtpd, in the test's event loop) that keeps what it receives.

    async with SmtpServer(security="starttls", tls_context=ctx, auth=("alice", "s3cret")) as smtp:
        ...  # an email notifier with host=smtp.host, port=smtp.port, security="starttls"
        [mail] = await smtp.wait_for(1)
        assert mail.message["Subject"] == "[CRITICAL] ..."

`security`: "none" (plain, no STARTTLS offered), "starttls" (offered, and required before MAIL and
AUTH) or "tls" (implicit TLS from the first byte). `auth` makes AUTH PLAIN/LOGIN required with
that one login. `rcpt_replies` / `data_replies` script the answers to RCPT and DATA (e.g.
`["451 4.3.0 try again later"]`); once used up, the server accepts.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool  # whether it came over an encrypted connection
    login: str | None  # the authenticated user, if any

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.server.rcpt_replies:
            reply = self.server.rcpt_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.data_replies:
            reply = self.server.data_replies.pop(0)
            if not reply.startswith("250"):
                return reply
        login = session.auth_data if isinstance(session.auth_data, str) else None
        mail = ReceivedMail(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(envelope.original_content or b""),
            tls=smtp.transport is not None and smtp.transport.get_extra_info("ssl_object") is not None,
            login=login,
        )
        await self.server._received(mail)
        return "250 2.0.0 OK: queued"


class SmtpServer:
    def __init__(
        self,
        *,
        security: Literal["none", "starttls", "tls"] = "none",
        tls_context: ssl.SSLContext | None = None,
        auth: tuple[str, str] | None = None,
        rcpt_replies: Iterable[str] = (),
        data_replies: Iterable[str] = (),
    ) -> None:
        if security != "none" and tls_context is None:
            raise ValueError(f"security {security!r} needs a server tls_context")
        self.security = security
        self.tls_context = tls_context
        self.auth = auth
        self.rcpt_replies = list(rcpt_replies)
        self.data_replies = list(data_replies)
        self.messages: list[ReceivedMail] = []
        self.auth_attempts: list[str] = []  # logins tried, successful or not
        self.host = HOST
        self.port = 0
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []
        self._arrived = asyncio.Condition()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword) or self.auth is None:
            return AuthResult(success=False, handled=False)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.auth_attempts.append(login)
        ok = (login, password) == self.auth
        return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

    def _factory(self) -> SMTP:
        with warnings.catch_warnings():
            # "Requiring AUTH while not requiring TLS": implicit TLS is TLS, and plain relays are a test case.
            warnings.simplefilter("ignore", UserWarning)
            protocol = self._protocol()
        self._sessions.append(protocol)
        return protocol

    def _protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="fake-smtp.test",
            loop=asyncio.get_running_loop(),
            tls_context=self.tls_context if self.security == "starttls" else None,
            require_starttls=self.security == "starttls",
            auth_required=self.auth is not None,
            # Implicit TLS is TLS too (aiosmtpd only counts STARTTLS); plain "none" servers with
            # auth take it in clear, as some internal relays do; servers without auth offer none.
            auth_require_tls=self.security == "starttls" or self.auth is None,
            authenticator=self._authenticate if self.auth is not None else None,
            timeout=10,
        )

    async def start(self) -> Self:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._factory, HOST, 0, ssl=self.tls_context if self.security == "tls" else None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for session in self._sessions:
                if session.transport is not None:
                    session.transport.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _received(self, mail: ReceivedMail) -> None:
        async with self._arrived:
            self.messages.append(mail)
            self._arrived.notify_all()

    async def wait_for(self, n: int, timeout_s: float = 5.0) -> list[ReceivedMail]:
        try:
            async with asyncio.timeout(timeout_s), self._arrived:
                await self._arrived.wait_for(lambda: len(self.messages) >= n)
        except TimeoutError:
            got = len(self.messages)
            raise AssertionError(f"expected {n} mail(s) within {timeout_s}s, got {got}") from None
        return self.messages[:n]
