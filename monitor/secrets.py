"""A config's secret values and their redaction: the one place that decides what is shown as `***`.

What is secret (SPEC section 3): every `SecretStr` of a config model (routing keys, passwords,
DSNs, webhook URLs, `headers` values, a plugin's own secret fields), every value of a `headers`
table even when a plugin types it as plain `str`, and the userinfo and query string of every URL
anywhere in the config. A target may echo a secret back in another spelling (a JSON body quoting
the `Authorization` header, a redirect URL-encoding it), so each one is masked in every form
`echoed_forms` lists, and a secret cut short by a reason's length limit is masked too.

Secrets shorter than `MIN_SECRET_LEN` characters are not masked: masking "a" or "id" everywhere
would destroy every reason, and a credential that short protects nothing anyway. Empty values are
never secrets.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from pydantic import BaseModel, SecretBytes, SecretStr

from monitor.models import MASK, Frozen

__all__ = [
    "MIN_SECRET_LEN",
    "NO_SECRETS",
    "Secrets",
    "echoed_forms",
    "redact",
    "secret_values",
    "secrets_of",
    "url_secrets",
]

MIN_SECRET_LEN = 4
# A secret cut short at the very end of a text (no ellipsis) is masked from this many characters:
# shorter, an ordinary last word could match the start of a secret by chance.
_MIN_CUT_AT_END = 8
_ELLIPSES = ("…", "...")
# `Authorization` schemes (RFC 9110 section 11.4): the credential alone may be echoed.
_AUTH_SCHEME = re.compile(r"^(?:bearer|basic|token|digest|apikey|api-key)\s+(\S.*)$", re.IGNORECASE)
# Query parameters whose value alone is a credential (libpq's `password`, OAuth's `access_token`,
# signed URLs): an error message may quote the value without its name.
_CREDENTIAL_PARAMS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "secret",
        "sig",
        "signature",
    }
)


def echoed_forms(secret: str) -> set[str]:
    """`secret` in every spelling a target may echo it: as is, without its auth scheme
    (`Bearer `), URL-encoded, JSON-escaped, HTML-escaped. Forms shorter than MIN_SECRET_LEN are
    left out."""
    bases = {secret}
    if match := _AUTH_SCHEME.match(secret):
        bases.add(match.group(1))
    forms: set[str] = set()
    for base in bases:
        forms.update(
            (
                base,
                quote(base, safe=""),
                quote(base),  # "/" kept, as in a path
                quote_plus(base),
                json.dumps(base)[1:-1],
                json.dumps(base, ensure_ascii=False)[1:-1],
                html.escape(base),
            )
        )
    return {form for form in forms if len(form) >= MIN_SECRET_LEN}


def url_secrets(value: str, *, path: bool = False) -> set[str]:
    """The secret parts of `value` if it is a URL: its userinfo (with the password alone, and the
    Basic credential aiohttp makes of it), its query string (with each credential parameter's
    value) and, with `path` (a secret URL such as a Slack webhook, whose path is the key), its
    path. A username next to a password is an identifier (`password authentication failed for
    user "monitor"` must stay readable); a username alone is the credential (`https://TOKEN@host`)."""
    try:
        parts = urlsplit(value)
        username, password = parts.username, parts.password
    except ValueError:
        return set()
    if not (parts.scheme and parts.netloc):
        return set()
    found: set[str] = set()
    userinfo = parts.netloc.rpartition("@")[0]
    if userinfo:
        found.update((userinfo, unquote(userinfo)))
        if password:
            found.update((password, unquote(password)))
        elif username:
            found.update((username, unquote(username)))
        basic = f"{unquote(username or '')}:{unquote(password or '')}"
        found.add(base64.b64encode(basic.encode()).decode())
    if parts.query:
        found.update((parts.query, unquote(parts.query), unquote_plus(parts.query)))
        found.update(v for k, v in parse_qsl(parts.query) if k.lower() in _CREDENTIAL_PARAMS)
    if path and len(parts.path) > 1:
        found.update((parts.path, unquote(parts.path)))
    return found


_PLAIN = (bool, int, float)


def secret_values(config: BaseModel | Frozen) -> frozenset[str]:
    """Every secret value a config holds, found from its fields, whatever its type (a built-in
    check or notifier, or a plugin's model; the model or its run-time copy): see the module
    docstring."""
    found: set[str] = set()

    def secret(value: str) -> None:
        found.add(value)
        found.update(url_secrets(value, path=True))

    def walk(value: Any, in_headers: bool) -> None:
        # Most of a config is numbers, flags and plain strings: those first (a storm makes
        # thousands of checks fail at once, and each one's first failure walks its config).
        if value is None or isinstance(value, _PLAIN):
            return
        if isinstance(value, str):
            if in_headers:
                secret(value)
            elif "@" in value or "?" in value:  # no userinfo and no query: nothing secret in it
                found.update(url_secrets(value))
        elif isinstance(value, SecretStr):
            secret(value.get_secret_value())
        elif isinstance(value, SecretBytes):
            secret(value.get_secret_value().decode("utf-8", "replace"))
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name), in_headers or name == "headers")
        elif isinstance(value, Frozen):
            for item in dataclasses.fields(value):
                walk(getattr(value, item.name), in_headers or item.name == "headers")
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, in_headers)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item, in_headers)
        elif hasattr(value, "scheme") and hasattr(value, "host"):  # pydantic's URL types
            found.update(url_secrets(str(value)))

    walk(config, False)
    return frozenset(v for v in found if len(v) >= MIN_SECRET_LEN)


class Secrets:
    """Secret values prepared for masking: their echoed forms, longest first (a URL before its
    path, `Bearer x` before `x`). Immutable; made once per check or notifier, on first use."""

    __slots__ = ("_forms",)

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) >= MIN_SECRET_LEN:
                forms.update(echoed_forms(value))
        self._forms = tuple(sorted(forms, key=lambda form: (-len(form), form)))

    def __bool__(self) -> bool:
        return bool(self._forms)

    def __iter__(self) -> Iterator[str]:
        return iter(self._forms)

    def __len__(self) -> int:
        return len(self._forms)

    def __contains__(self, form: object) -> bool:
        return form in self._forms

    def __repr__(self) -> str:
        return f"<Secrets: {len(self._forms)} forms>"  # never the values

    def redact(self, text: str) -> str:
        """`text` with every secret form replaced by `***`, and a secret cut short (followed by
        an ellipsis, or ending the text) masked from where it starts."""
        if not self._forms:
            return text
        for form in self._forms:
            if form in text:
                text = text.replace(form, MASK)
        for marker in _ELLIPSES:
            at = text.find(marker)
            while at != -1:
                text, at = self._mask_cut(text, at, MIN_SECRET_LEN)
                at = text.find(marker, at + len(marker))
        return self._mask_cut(text, len(text), _MIN_CUT_AT_END)[0]

    def _mask_cut(self, text: str, end: int, min_len: int) -> tuple[str, int]:
        """`text` with the longest start of a secret (`min_len` characters or more) that ends at
        `end` masked; and where `end` is after that."""
        first = end
        for form in self._forms:
            if len(form) <= min_len:
                break  # longest first: no longer form follows
            head = form[:min_len]
            start = text.find(head, max(0, end - len(form) + 1), end)
            while start != -1 and start < first:
                if form.startswith(text[start:end]):
                    first = start
                    break
                start = text.find(head, start + 1, end)
        if first == end:
            return text, end
        return text[:first] + MASK + text[end:], first + len(MASK)


NO_SECRETS = Secrets()


def secrets_of(config: BaseModel | Frozen) -> Secrets:
    """The prepared secrets of one config (`NO_SECRETS`, shared, when it has none)."""
    values = secret_values(config)
    return Secrets(values) if values else NO_SECRETS


def redact(text: str, secrets: Secrets | Iterable[str]) -> str:
    """`text` with every secret, in every echoed form, shown as `***` (see `Secrets.redact`)."""
    prepared = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
    return prepared.redact(text)
