"""The `proxy` key of the network checks and HTTP notifiers: a proxy URL or "env", and the proxy
environment read once, as curl reads it. The userinfo of a proxy URL is a secret (monitor.secrets
finds it as any URL's); reasons name a proxy by `host:port` only."""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import unquote, urlsplit

import aiohttp
from pydantic import AfterValidator, Field, PlainSerializer
from pydantic_core import PydanticCustomError

from monitor.models import mask_url
from monitor.neterrors import network_reason

__all__ = [
    "Proxy",
    "ProxyEnvironment",
    "ProxyError",
    "ProxySetting",
    "aiohttp_proxy_reason",
    "choose_proxy",
    "parse_proxy",
    "proxy_environment",
    "validate_proxy",
]

log = logging.getLogger("monitor.proxies")


class ProxyError(Exception):
    """Reaching the target through the proxy failed; `str()` is the one-line reason."""


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy: where to connect, and the `Proxy-Authorization` its userinfo makes."""

    host: str
    port: int
    authorization: str | None  # "Basic ...": a secret (the userinfo is one, monitor.secrets)

    @property
    def shown(self) -> str:
        """`host:port`, for reasons (never the userinfo)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.shown}"

    def aiohttp_kwargs(self) -> dict[str, Any]:
        """The request options that send one aiohttp request through this proxy."""
        headers = {"Proxy-Authorization": self.authorization} if self.authorization else None
        return {"proxy": self.url, "proxy_headers": headers}


def _invalid_proxy() -> PydanticCustomError:
    # Never the value: its userinfo is a secret.
    return PydanticCustomError(
        "invalid_proxy", 'invalid proxy: expected "env" or http://[user:password@]host:port'
    )


@functools.cache
def parse_proxy(url: str) -> Proxy:
    """The proxy a URL names (`http://[user:password@]host[:port]`, port 1080 as curl's default
    when absent); ValueError when it names none."""
    parts = urlsplit(url.strip())
    port = parts.port  # ValueError when out of range
    if parts.scheme.lower() != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError("not an http:// proxy URL")
    authorization = None
    if parts.username is not None or parts.password is not None:
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")
    return Proxy(parts.hostname, 1080 if port is None else port, authorization)


def validate_proxy(value: str | None) -> str | None:
    """For config validators: None, "env" or a proxy URL parse_proxy takes; "none" is None (TOML
    has no null: how a notifier, "env" by default, is told to go direct)."""
    if value == "none":
        return None
    if value is None or value == "env":
        return value
    try:
        parse_proxy(value)
    except ValueError:
        raise _invalid_proxy() from None
    return value


# ---------------------------------------------------------------- the environment, as curl reads it


def _no_proxy_entry(entry: str) -> str:
    entry = entry.strip().lower()
    if entry.startswith("[") and "]" in entry:
        entry = entry[1 : entry.index("]")]
    return entry.lstrip(".").rstrip(".")


@dataclass(frozen=True, slots=True)
class ProxyEnvironment:
    """`http_proxy`/`HTTP_PROXY`, `https_proxy`/`HTTPS_PROXY`, `all_proxy`/`ALL_PROXY` and
    `no_proxy`/`NO_PROXY` (the lowercase name first, as curl); a URL that is not an http:// proxy
    is ignored, with a warning."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: tuple[str, ...] = ()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyEnvironment:
        def read(*names: str) -> Proxy | None:
            for name in names:
                value = environ.get(name, "").strip()
                if not value:
                    continue
                try:
                    return parse_proxy(value)
                except ValueError:
                    log.warning("ignoring %s: not an http:// proxy URL", name)
                    return None
            return None

        fallback = read("all_proxy", "ALL_PROXY")
        no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
        return cls(
            http=read("http_proxy", "HTTP_PROXY") or fallback,
            https=read("https_proxy", "HTTPS_PROXY") or fallback,
            no_proxy=tuple(e for e in map(_no_proxy_entry, no_proxy.split(",")) if e),
        )

    def bypassed(self, host: str) -> bool:
        """NO_PROXY as curl reads it: `*` is every host; a name matches itself and its subdomains
        (`example.com` and `.example.com` both match `api.example.com`); an address or a CIDR
        range (`10.0.0.0/8`) matches addresses."""
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        for entry in self.no_proxy:
            if entry == "*" or entry == host:
                return True
            if address is not None:
                with contextlib.suppress(ValueError):
                    if address in ipaddress.ip_network(entry, strict=False):
                        return True
            elif host.endswith("." + entry):
                return True
        return False

    def for_target(self, secure: bool, host: str) -> Proxy | None:
        proxy = self.https if secure else self.http
        if proxy is None or self.bypassed(host):
            return None
        return proxy


@functools.cache
def proxy_environment() -> ProxyEnvironment:
    """The process's proxy environment, read on first use: never an environment lookup per run."""
    return ProxyEnvironment.from_environ(os.environ)


def choose_proxy(setting: str | None, secure: bool, host: str) -> Proxy | None:
    """The proxy for one target: none, the configured URL (always used), or the environment's."""
    if setting is None:
        return None
    if setting == "env":
        return proxy_environment().for_target(secure, host)
    return parse_proxy(setting)


def _shown(value: str | None) -> str | None:
    return None if value is None else mask_url(value)


ProxySetting = Annotated[
    str | None,
    AfterValidator(validate_proxy),
    PlainSerializer(_shown, return_type=str | None),
    Field(repr=False),
]
"""None (`"none"`), `"env"` or `http://[user:password@]host:port`; dumps mask the userinfo."""


def aiohttp_proxy_reason(exc: BaseException) -> str | None:
    """The reason for an aiohttp request that failed at its proxy (None for any other failure):
    `proxy 127.0.0.1:3128: connection refused`, `proxy CONNECT answered 407`."""
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"proxy {exc.host}:{exc.port}: {network_reason(exc.os_error)}"
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        return f"proxy CONNECT answered {exc.status}"
    return None
