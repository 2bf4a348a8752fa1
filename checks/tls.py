"""TLS client contexts for the network checks: one per set of TLS options, built once per process."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

__all__ = ["TlsOptions", "client_context"]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """What a check's TLS keys ask of its client context, and the key of that context's cache:
    a key added here (a CA file, a client certificate) gets a context of its own."""

    verify: bool = True


# Built once per options value: loading the system CA store costs milliseconds of CPU, too much
# for every run.
_CONTEXTS: dict[TlsOptions, ssl.SSLContext] = {}


def client_context(options: TlsOptions) -> ssl.SSLContext:
    """The process's client context for `options`, built on first use."""
    context = _CONTEXTS.get(options)
    if context is None:
        context = _CONTEXTS.setdefault(options, _build(options))
    return context


def _build(options: TlsOptions) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
