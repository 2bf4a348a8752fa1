"""A target that echoes the check's `Authorization` header back: the secret is masked in every
place a reason goes (`monitor once --json`, the API, the status page, the logs, the page sent)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from checks.base import CheckDeps
from checks.http import HttpCheck, HttpCheckConfig
from monitor.runner import run_check
from tests.fakes.daemon import DaemonProcess, free_port
from tests.fakes.receivers import Receiver, Receivers, pagerduty_problems

# One token short enough to be echoed whole in a reason, one as long as a JWT, which the http
# check cuts at 60 characters: neither may show, not even in part.
SHORT_TOKEN = "s3cr3t-T0KEN-4f9a1c"
LONG_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtb25pdG9yIn0.Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA"
ROUTING_KEY = "R0UTINGKEY-echo-0123456789abcdef"
LEAKS = (SHORT_TOKEN, LONG_TOKEN[:16], LONG_TOKEN[-16:], ROUTING_KEY)


@pytest.fixture
async def echo_url() -> AsyncIterator[str]:
    """A health endpoint that answers `{"status": "<the request's Authorization header>"}`."""

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": request.headers.get("Authorization", "")})

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/health"
    finally:
        await runner.cleanup()


@pytest.fixture
async def pagerduty() -> AsyncIterator[Receiver]:
    receivers = Receivers()
    try:
        yield await receivers.start(default=202, validate=pagerduty_problems)
    finally:
        await receivers.aclose()


def write_config(tmp_path: Path, echo_url: str, pagerduty_url: str, port: int) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(
        f"""
[monitor]
listen = "127.0.0.1:{port}"
state = "sqlite:///{tmp_path}/state.db"
default_interval = "1s"
default_timeout = "1s"
log_format = "json"

[thresholds.up]
trigger_after = 1

[[checks]]
name = "backend-api"
type = "http"
url = "{echo_url}"
headers = {{ Authorization = "Bearer ${{TOKEN}}" }}
expect_json = {{ status = "ok" }}

[[checks]]
name = "auth-api"
type = "http"
url = "{echo_url}"
headers = {{ Authorization = "Bearer ${{LONG_TOKEN}}" }}
expect_json = {{ status = "ok" }}

[notifiers.oncall]
type = "pagerduty"
routing_key = "${{ROUTING_KEY}}"
url = "{pagerduty_url}/v2/enqueue"

[[routes]]
match = {{ severity = "critical" }}
notify = ["oncall"]
"""
    )
    return path


ENV = {"TOKEN": SHORT_TOKEN, "LONG_TOKEN": LONG_TOKEN, "ROUTING_KEY": ROUTING_KEY}


def assert_no_leak(where: str, text: str) -> None:
    for secret in LEAKS:
        assert secret not in text, f"{where} shows a secret: {text}"


async def test_a_check_run_masks_the_echoed_header(echo_url: str) -> None:
    async with aiohttp.ClientSession() as session:
        config = HttpCheckConfig.model_validate(
            {
                "name": "backend-api",
                "type": "http",
                "url": echo_url,
                "headers": {"Authorization": f"Bearer {SHORT_TOKEN}"},
                "expect_json": {"status": "ok"},
            }
        )
        result = await run_check(HttpCheck(config, CheckDeps(http=session)))
    assert result.reason == 'expect_json: status = "***"'


async def test_echoed_secret_is_masked_everywhere(tmp_path: Path, echo_url: str, pagerduty: Receiver) -> None:
    port = free_port()
    config = write_config(tmp_path, echo_url, pagerduty.url, port)

    # monitor once --json (and the Nagios status line)
    env = {**os.environ, **ENV}
    for args in (["--json"], []):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "monitor",
            "once",
            "-c",
            str(config),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 2, out.decode()
        assert_no_leak(f"monitor once {' '.join(args)}", out.decode())
        if args:
            reasons = {c["name"]: c["reason"] for c in json.loads(out)["checks"]}
            assert reasons["backend-api"] == 'expect_json: status = "***"'
            assert reasons["auth-api"].startswith('expect_json: status = "***')

    # monitor run: the API, the status page, the page sent, the logs
    daemon = DaemonProcess(config, port, ENV)
    await daemon.start()
    try:
        checks = await daemon.poll(
            "/api/v1/checks", lambda body: all(c["reason"] for c in body["checks"]) and body["checks"]
        )
        by_name = {c["name"]: c for c in checks["checks"]}
        assert by_name["backend-api"]["reason"] == 'expect_json: status = "***"'
        assert "***" in by_name["auth-api"]["reason"]
        alerts = await daemon.poll(
            "/api/v1/alerts",
            lambda body: (
                {a["check"] for a in body["alerts"] if a["state"] == "firing"}
                == {
                    "backend-api",
                    "auth-api",
                }
            ),
        )
        assert {a["check"]: a["reason"] for a in alerts["alerts"]}["backend-api"] == (
            'expect_json: status = "***"'
        )
        events = await pagerduty.wait_for(2, timeout_s=15)
        status, page = await daemon.get("/")
        assert status == 200
        for where, text in [
            ("GET /api/v1/checks", json.dumps(checks)),
            ("GET /api/v1/alerts", json.dumps(alerts)),
            ("GET /", page),
        ]:
            assert_no_leak(where, text)
        assert "***" in page
    finally:
        assert await daemon.stop() == 0

    assert pagerduty.problems == []
    for event in events:
        body = event.json
        assert body["routing_key"] == ROUTING_KEY  # sent to PagerDuty, as it must be
        del body["routing_key"]
        assert_no_leak("the PagerDuty event", json.dumps(body))
        assert "***" in body["payload"]["summary"] and "***" in body["payload"]["custom_details"]["reason"]
    assert {e.json["payload"]["component"] for e in events} == {"backend-api", "auth-api"}
    assert_no_leak("the logs", daemon.output)
    assert '"check down"' in daemon.output or "check down" in daemon.output
