"""Why a connection failed, in one line people understand: the checks, notifiers and stores share it."""

from __future__ import annotations

import errno
import os
import re
import socket
import ssl

from monitor.text import one_line, shorten

__all__ = ["network_reason"]

_UNREACHABLE = frozenset({errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN})
_ERRNO_IN_TEXT = re.compile(r"\[Errno (\d+)\]")
_MAX_CHARS = 200


def _errno_of(exc: OSError) -> int | None:
    """The errno of `exc`, also when asyncio merged one error per address into one message.

    Python 3.11's `create_connection` raises a bare `OSError("Multiple exceptions: ...")` (errno
    None) when every address of the host failed: "localhost" refused on ::1 and on 127.0.0.1 is
    still "connection refused".
    """
    if exc.errno is not None:
        return exc.errno
    codes = {int(code) for code in _ERRNO_IN_TEXT.findall(str(exc))}
    return codes.pop() if len(codes) == 1 else None


def network_reason(exc: OSError) -> str:
    """One line for a failed connect, DNS lookup or TLS handshake: `connection refused`,
    `DNS lookup failed: Name or service not known`, `unreachable: No route to host`,
    `connection reset`, `connect timed out`, `TLS verify failed: ...`, else `connect: <why>`."""
    if isinstance(exc, socket.gaierror):
        return shorten(f"DNS lookup failed: {exc.strerror or one_line(str(exc))}", _MAX_CHARS)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or one_line(str(exc))
        return shorten(f"TLS verify failed: {detail}", _MAX_CHARS)
    if isinstance(exc, ssl.SSLError):
        return shorten(f"TLS: {exc.reason or one_line(str(exc))}", _MAX_CHARS)
    code = _errno_of(exc)
    if code == errno.ECONNREFUSED:
        return "connection refused"
    if code in _UNREACHABLE:
        return f"unreachable: {os.strerror(code)}"
    if code == errno.ECONNRESET:
        return "connection reset"
    if code == errno.ETIMEDOUT or isinstance(exc, TimeoutError):  # the OS's, or a driver's own timeout
        return "connect timed out"
    return shorten(f"connect: {exc.strerror or one_line(str(exc)) or type(exc).__name__}", _MAX_CHARS)
