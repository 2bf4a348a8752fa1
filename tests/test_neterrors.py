"""monitor.neterrors: the one wording of a failed connect, DNS lookup or TLS handshake."""

from __future__ import annotations

import errno
import socket
import ssl

import pytest

from monitor.neterrors import network_reason


def _cert_error() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"
    return error


def _ssl_error() -> ssl.SSLError:
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")
    error.reason = "WRONG_VERSION_NUMBER"
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), "connection refused"),
        (
            OSError(
                "Multiple exceptions: [Errno 111] Connect call failed ('::1', 81, 0, 0), "
                "[Errno 111] Connect call failed ('127.0.0.1', 81)"
            ),
            "connection refused",
        ),
        (OSError(errno.EHOSTUNREACH, "No route to host"), "unreachable: No route to host"),
        (OSError(errno.ENETUNREACH, "Network is unreachable"), "unreachable: Network is unreachable"),
        (
            socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
            "DNS lookup failed: Name or service not known",
        ),
        (_cert_error(), "TLS verify failed: self-signed certificate"),
        (_ssl_error(), "TLS: WRONG_VERSION_NUMBER"),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), "connection reset"),
        (OSError(errno.ETIMEDOUT, "Connection timed out"), "connect timed out"),
        (TimeoutError(), "connect timed out"),  # a driver's own connect timeout (asyncpg)
        (OSError(errno.EACCES, "Permission denied"), "connect: Permission denied"),
        (
            OSError(
                "Multiple exceptions: [Errno 99] Cannot assign requested address,\n"
                "[Errno 111] Connect call failed ('127.0.0.1', 81)"
            ),
            "connect: Multiple exceptions: [Errno 99] Cannot assign requested address, "
            "[Errno 111] Connect call failed ('127.0.0.1', 81)",
        ),
        (OSError(), "connect: OSError"),
    ],
    ids=[
        "refused",
        "refused-every-address",
        "host-unreachable",
        "net-unreachable",
        "dns",
        "tls-verify",
        "tls",
        "reset",
        "os-timeout",
        "driver-timeout",
        "other",
        "every-address-differently",
        "nothing-said",
    ],
)
def test_network_reasons(error: OSError, reason: str) -> None:
    assert network_reason(error) == reason


def test_a_long_reason_is_one_bounded_line() -> None:
    reason = network_reason(OSError("Multiple exceptions:\n" + "[Errno 99] no, " * 50))

    assert len(reason) == 200
    assert "\n" not in reason
    assert reason.startswith("connect: Multiple exceptions: [Errno 99] no, ")
    assert reason.endswith("…")
