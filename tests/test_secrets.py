"""monitor.secrets: which config values are secret, every form they are masked in, and the runner
masking them in every check result."""

from __future__ import annotations

import asyncio
import html
import json
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Literal
from urllib.parse import quote, quote_plus

import aiohttp
import pytest
from pydantic import AnyHttpUrl, BaseModel, SecretStr

import checks.base
from checks.base import Check, CheckConfig, CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from checks.postgres import PostgresCheck, PostgresCheckConfig
from monitor.models import CheckResult
from monitor.runner import masked, run_check
from monitor.secrets import (
    MIN_SECRET_LEN,
    NO_SECRETS,
    Secrets,
    echoed_forms,
    redact,
    secret_values,
    secrets_of,
)

TOKEN = "t0k3n-8Jq2vX9pLm4R"


@pytest.fixture
def deps(http_session: aiohttp.ClientSession) -> CheckDeps:
    """What the daemon gives every check: its one session."""
    return CheckDeps(http=http_session)


# ---------------------------------------------------------------- redact


def test_redact_masks_longest_first() -> None:
    url = "https://hooks.example.com/services/T0/B0/XyZ"
    # The URL first, then its path: one mask, not `https://hooks.example.com***`.
    assert redact(f"404 for {url}", [url, "/services/T0/B0/XyZ"]) == "404 for ***"
    assert redact("a XyZsecret b XyZsecret", ["XyZsecret"]) == "a *** b ***"


def test_redact_masks_the_credential_without_its_auth_scheme() -> None:
    secrets = Secrets([f"Bearer {TOKEN}"])
    assert redact(f'status = "Bearer {TOKEN}"', secrets) == 'status = "***"'
    assert redact(f"token {TOKEN} rejected", secrets) == "token *** rejected"
    assert redact(f"Basic {TOKEN}", [f"Basic {TOKEN}"]) == "***"
    assert redact("the word Bearer is no secret", secrets) == "the word Bearer is no secret"


@pytest.mark.parametrize(
    "echoed",
    [
        quote(f"Bearer {TOKEN}/+x", safe=""),  # a redirect's query: Bearer%20t0k3n...%2F%2Bx
        quote_plus(f"Bearer {TOKEN}/+x"),  # a form body: Bearer+t0k3n...
        quote(f"Bearer {TOKEN}/+x"),  # a path
        json.dumps(f'Bearer {TOKEN}/+x "é\\'),  # JSON: quotes, backslashes, \u00e9 escaped
        json.dumps(f'Bearer {TOKEN}/+x "é\\', ensure_ascii=False),
        html.escape(f'Bearer {TOKEN}/+x "é\\'),  # an HTML error page
    ],
    ids=["url-encoded", "form-encoded", "path-encoded", "json-ascii", "json-utf8", "html"],
)
def test_redact_masks_the_forms_a_target_echoes(echoed: str) -> None:
    secret = f'Bearer {TOKEN}/+x "é\\'
    text = f"expect_json: status = {echoed}"
    masked_text = redact(text, [secret])
    assert TOKEN not in masked_text
    assert "***" in masked_text


def test_echoed_forms_include_plain_and_stripped() -> None:
    forms = echoed_forms(f"Bearer {TOKEN}")
    assert {f"Bearer {TOKEN}", TOKEN, f"Bearer%20{TOKEN}", f"Bearer+{TOKEN}"} <= forms
    assert all(len(form) >= MIN_SECRET_LEN for form in forms)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f'status = "Bearer {TOKEN[:9]}…', 'status = "***…'),  # the http check cuts values at 60
        (f"auth failed: Bearer {TOKEN[:6]}... (more)", "auth failed: ***... (more)"),
        (f"body: xxxx{TOKEN[:10]}", "body: xxxx***"),  # cut at a length limit, no marker
        (f"body: {TOKEN[:5]}", f"body: {TOKEN[:5]}"),  # at the very end: too short to tell
        (f"{TOKEN[:3]}…", f"{TOKEN[:3]}…"),  # below the minimum length
    ],
    ids=["ellipsis", "three-dots", "end-of-text", "end-too-short", "ellipsis-too-short"],
)
def test_redact_masks_a_secret_cut_short(text: str, expected: str) -> None:
    assert redact(text, [f"Bearer {TOKEN}"]) == expected


def test_short_and_empty_secrets_are_not_masked() -> None:
    """Masking "a" or "id" everywhere would destroy every reason: 4 characters or more only."""
    assert MIN_SECRET_LEN == 4
    assert redact("a value of abc in a database", ["a", "abc", ""]) == "a value of abc in a database"
    assert redact("code abcd here", ["abcd"]) == "code *** here"
    assert not Secrets(["", "abc"])
    assert echoed_forms("") == set()


def test_redact_leaves_text_without_secrets_alone() -> None:
    text = "status 503"
    assert redact(text, NO_SECRETS) is text
    assert Secrets([TOKEN]).redact(text) is text


def test_secrets_never_show_their_values() -> None:
    secrets = Secrets([TOKEN])
    assert TOKEN not in repr(secrets) and TOKEN not in str(secrets)
    assert TOKEN in secrets and len(secrets) >= 1 and bool(secrets)


# ---------------------------------------------------------------- what is secret


def _http(**options: Any) -> HttpCheckConfig:
    return HttpCheckConfig.model_validate({"name": "web", "type": "http", **options})


def test_http_check_secrets_are_headers_userinfo_and_query() -> None:
    config = _http(
        url="https://probe:pa55-w0rd@api.example.com/health?api_key=K3Y-9f8e7d&v=2",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Tenant": "acme-corp"},
        runbook="https://wiki.example.com/runbook#issue-1",
    )
    values = secret_values(config)
    assert {f"Bearer {TOKEN}", "acme-corp"} <= values  # every headers value
    assert {"probe:pa55-w0rd", "pa55-w0rd"} <= values  # the userinfo and its password
    assert {"api_key=K3Y-9f8e7d&v=2", "K3Y-9f8e7d"} <= values  # the query and a key in it
    assert "cHJvYmU6cGE1NS13MHJk" in values  # the Basic credential aiohttp makes of the userinfo
    assert "probe" not in values  # a username next to a password names who, it is no secret
    assert not any("wiki" in v or "/health" in v for v in values)  # hosts and paths are not


def test_username_alone_is_the_credential() -> None:
    values = secret_values(_http(url="https://ghp_T0KENxyz@git.example.com/"))
    assert "ghp_T0KENxyz" in values


async def test_postgres_dsn_secrets(deps: CheckDeps) -> None:
    dsn = "postgresql://monitor:s3cr%40t-pw@db.example.com:5432/app?sslmode=require&password=q-pw-77"
    config = PostgresCheckConfig.model_validate({"name": "db", "type": "postgres", "dsn": dsn})
    values = secret_values(config)
    assert {dsn, "s3cr%40t-pw", "s3cr@t-pw", "q-pw-77"} <= values
    assert "monitor" not in values and "require" not in values
    check = PostgresCheck(config, deps)
    reason = 'password authentication failed for user "monitor" (s3cr@t-pw)'
    assert check.secrets.redact(reason) == 'password authentication failed for user "monitor" (***)'


class _Nested(BaseModel):
    token: SecretStr
    url: AnyHttpUrl


class PluginConfig(CheckConfig):
    """A plugin's model: a SecretStr of its own, a plain-str `headers`, nested and listed values."""

    type: Literal["plugin"]
    api_key: SecretStr
    headers: dict[str, str] = {}
    upstreams: list[_Nested] = []
    note: str = ""


def test_plugin_secrets_are_found_from_the_model() -> None:
    config = PluginConfig(
        name="p",
        type="plugin",
        api_key=SecretStr("PLUGIN-KEY-123"),
        headers={"X-Auth": "plain-header-secret"},
        upstreams=[_Nested(token=SecretStr("nested-tok-456"), url="https://u:nested-pw@up.example.com/")],
        note="not a secret at all",
    )
    values = secret_values(config)
    assert {"PLUGIN-KEY-123", "plain-header-secret", "nested-tok-456", "nested-pw"} <= values
    assert "not a secret at all" not in values


def test_a_config_without_secrets_shares_the_empty_set() -> None:
    assert secrets_of(_http(url="http://example.com/health")) is NO_SECRETS


# ---------------------------------------------------------------- the runner masks every result


class EchoConfig(CheckConfig):
    type: Literal["echo"]
    api_key: SecretStr
    result: str = "fail"  # fail | ok | raise | hang | sample


class EchoCheck(Check):
    """A plugin whose target quotes its key back, in every way a result can carry it."""

    type: ClassVar[str] = "echo"
    config_model: ClassVar[type[CheckConfig]] = EchoConfig
    config: EchoConfig

    def target(self) -> str:
        return "echo"

    async def run(self) -> CheckResult:
        key = self.config.api_key.get_secret_value()
        if self.config.result == "ok":
            return CheckResult.success(1.0, status_code=200.0)
        if self.config.result == "raise":
            raise ValueError(f"cannot parse reply for key {key}")
        if self.config.result == "hang":
            await asyncio.sleep(10)
        if self.config.result == "sample":
            return CheckResult.failure("bad", 1.0, **{f"hits_{key}": 1.0, "other": 2.0})
        return CheckResult.failure(f'expect_json: status = "{key}"', 1.0, status_code=200.0)


MakeEcho = Callable[..., EchoCheck]


@pytest.fixture
def make_echo(deps: CheckDeps) -> MakeEcho:
    def make(result: str, **options: Any) -> EchoCheck:
        config = EchoConfig.model_validate(
            {"name": "echo", "type": "echo", "api_key": "ECHO-KEY-0123456789", "result": result, **options}
        )
        return EchoCheck(config, deps)

    return make


async def test_runner_masks_a_reason(make_echo: MakeEcho) -> None:
    result = await run_check(make_echo("fail"))
    assert result.reason == 'expect_json: status = "***"'
    assert result.samples == {"status_code": 200.0}


async def test_runner_masks_sample_names(make_echo: MakeEcho) -> None:
    result = await run_check(make_echo("sample"))
    assert result.samples == {"hits_***": 1.0, "other": 2.0}


async def test_runner_masks_an_internal_error_and_its_log(
    caplog: pytest.LogCaptureFixture, make_echo: MakeEcho
) -> None:
    caplog.set_level(logging.ERROR, logger="monitor.runner")
    result = await run_check(make_echo("raise"))
    assert result.outcome == "error"
    assert result.reason == "internal error: ValueError: cannot parse reply for key ***"
    assert "check raised" in caplog.text and "***" in caplog.text
    assert "ECHO-KEY-0123456789" not in caplog.text


async def test_runner_timeout_reason_is_unchanged(make_echo: MakeEcho) -> None:
    result = await run_check(make_echo("hang", timeout="100ms"))
    assert (result.outcome, result.reason) == ("timeout", "timeout after 100ms")


async def test_secrets_are_found_once_when_the_check_is_built(
    make_echo: MakeEcho, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A storm's thousands of first failures come at once: none of them walks its config."""
    walks: list[object] = []
    real = checks.base.secrets_of
    monkeypatch.setattr(checks.base, "secrets_of", lambda config: walks.append(config) or real(config))
    failing = make_echo("fail")
    assert len(walks) == 1 and "ECHO-KEY-0123456789" in failing.secrets
    for _ in range(3):
        result = await run_check(failing)
        assert result.reason == 'expect_json: status = "***"'
    assert len(walks) == 1


async def test_masked_returns_clean_results_as_they_are(make_echo: MakeEcho) -> None:
    check = make_echo("fail")
    ok = CheckResult.success(1.0, status_code=200.0)
    failed = CheckResult.failure("status 503", 1.0)
    assert masked(check, ok) is ok
    assert masked(check, failed) is failed


async def test_http_check_exposes_its_secrets(deps: CheckDeps) -> None:
    check = HttpCheck(_http(url="http://127.0.0.1/", headers={"Authorization": f"Bearer {TOKEN}"}), deps)
    assert TOKEN in check.secrets and f"Bearer {TOKEN}" in check.secrets
