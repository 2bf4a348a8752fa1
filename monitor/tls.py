"""TLS client contexts for the network checks and the HTTP notifiers: one per set of TLS options,
built once per process; and the TLS keys their configs share.

A context is built when a config that names a file (`tls_ca`, `tls_cert`) is validated, in the
loader's thread: the files are read there, once, never on the event loop or per run.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from monitor.models import ConfigModel

__all__ = ["TlsKeys", "TlsOptions", "client_context", "session_ssl"]


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """What a config's TLS keys ask of its client context, and the key of that context's cache:
    each distinct value gets a context of its own. `tls_server_name` is not here: it is the
    connection's, not the context's."""

    verify: bool = True
    ca: str | None = None  # a PEM file of CAs trusted instead of the system's
    cert: str | None = None  # a PEM client certificate (with its key, unless `key` is given)
    key: str | None = None


# Built once per options value: loading the system CA store costs milliseconds of CPU, too much
# for every run.
_CONTEXTS: dict[TlsOptions, ssl.SSLContext] = {}


def client_context(options: TlsOptions) -> ssl.SSLContext:
    """The process's client context for `options`, built on first use (OSError or ssl.SSLError
    when a file cannot be read or is not PEM)."""
    context = _CONTEXTS.get(options)
    if context is None:
        context = _CONTEXTS.setdefault(options, _build(options))
    return context


def session_ssl(options: TlsOptions) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=` for a request: True (the session's own verifying context) or False (no
    verification) when no file is named, else the context of `options`."""
    if options.ca is None and options.cert is None:
        return options.verify
    return client_context(options)


def _build(options: TlsOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.ca)
    if options.cert is not None:
        context.load_cert_chain(options.cert, options.key)
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _load_error(what: str, exc: OSError) -> PydanticCustomError:
    """`cannot load CA file: No such file or directory` (the path is the config's own value)."""
    detail = getattr(exc, "reason", None) or exc.strerror or str(exc)
    return PydanticCustomError(
        "tls_file", "cannot load {what}: {detail}", {"what": what, "detail": str(detail)}
    )


class TlsKeys(ConfigModel):
    """The TLS keys of a check or notifier that speaks HTTPS or WSS. Validating them builds the
    context (see the module docstring), so a bad file is an error naming its key."""

    tls_verify: bool = True
    tls_ca: str | None = None
    tls_key: str | None = None  # before tls_cert: its validator reads it
    tls_cert: str | None = None
    tls_server_name: str | None = None

    @field_validator("tls_ca")
    @classmethod
    def _tls_ca(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            try:
                client_context(TlsOptions(info.data.get("tls_verify", True), value))
            except OSError as exc:  # ssl.SSLError too
                raise _load_error("CA file", exc) from None
        return value

    @field_validator("tls_cert")
    @classmethod
    def _tls_cert(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            data = info.data
            options = TlsOptions(data.get("tls_verify", True), data.get("tls_ca"), value, data.get("tls_key"))
            try:
                client_context(options)
            except OSError as exc:  # ssl.SSLError too
                raise _load_error("client certificate", exc) from None
        return value

    @field_validator("tls_server_name")
    @classmethod
    def _tls_server_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() or c in "/@" for c in value)):
            raise PydanticCustomError("invalid_server_name", "invalid server name")
        return value

    @model_validator(mode="after")
    def _key_needs_cert(self) -> Any:
        if self.tls_key is not None and self.tls_cert is None:
            raise PydanticCustomError("tls_key_alone", "tls_key needs tls_cert")
        return self

    @property
    def tls_options(self) -> TlsOptions:
        return TlsOptions(self.tls_verify, self.tls_ca, self.tls_cert, self.tls_key)
