"""Heartbeat checks through a real in-process daemon: the ping endpoints, the check's judgement on a
fake clock, and the pings and first-configured times kept across a restart (SQLite, PostgreSQL)."""

from __future__ import annotations

import contextlib
import json
import logging
import textwrap
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.models import CheckResult, iso
from tests.fakes.clock import FakeClock
from tests.fakes.postgres import PostgresCluster

TOKEN = "hb-token-s3cret-value"
API_TOKEN = "api-secret-token"
NAME = "nightly-backup"
DAY, HOUR = 86400.0, 3600.0
DOC: dict[str, Any] = json.loads(resources.files("monitor").joinpath("openapi.json").read_text())


def config(state: str, api_token: str = API_TOKEN) -> str:
    # Intervals of an hour: the scheduler does not run the checks during a test; `run` does.
    return textwrap.dedent(
        f"""\
        [monitor]
        listen = "127.0.0.1:0"
        state = "{state}"
        api_token = "{api_token}"
        [[checks]]
        name = "{NAME}"
        type = "heartbeat"
        period = "1d"
        grace = "1h"
        interval = "1h"
        token = "{TOKEN}"
        [[checks]]
        name = "web"
        type = "tcp"
        host = "127.0.0.1"
        port = 9
        interval = "1h"
        """
    )


@contextlib.asynccontextmanager
async def running(state: str, clock: FakeClock, api_token: str = API_TOKEN) -> AsyncIterator[Daemon]:
    daemon = Daemon(parse_config(config(state, api_token), {}), clock=clock, registry=CollectorRegistry())
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def daemon(clock: FakeClock) -> AsyncIterator[Daemon]:
    async with running("memory", clock) as started:
        yield started


async def call(
    daemon: Daemon,
    method: str,
    path: str,
    *,
    token: str | None = None,
    query_token: str | None = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    params = {"token": query_token} if query_token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"http://127.0.0.1:{daemon.bound_port}{path}",
            headers=headers,
            params=params,
            data=data,
        ) as resp,
    ):
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def run(daemon: Daemon, name: str = NAME) -> CheckResult:
    """One run of the check now, as the scheduler would start it."""
    await daemon._run(name)
    result = daemon.runtimes[name].last
    assert result is not None
    return result


def conforms(status: int, body: Any, path: str, method: str) -> None:
    """The answer is as monitor/openapi.json describes it."""
    response = DOC["paths"][path][method]["responses"][str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = {**response["content"]["application/json"]["schema"], "components": DOC["components"]}
    jsonschema.validate(body, schema)


PING = "/api/v1/heartbeats/{name}"
FAIL = "/api/v1/heartbeats/{name}/fail"


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_ping_with_the_token_is_200_with_its_time(
    daemon: Daemon, clock: FakeClock, method: str, how: str
) -> None:
    given = {"token": TOKEN} if how == "header" else {"query_token": TOKEN}
    status, body = await call(daemon, method, f"/api/v1/heartbeats/{NAME}", **given)
    assert status == 200
    assert body == {"check": NAME, "at": iso(clock.now()), "ok": True}
    conforms(status, body, PING, method.lower())
    beat = daemon.heartbeats.get(NAME)
    assert beat is not None and beat.last_at == clock.now() and beat.ok


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("path", [PING, FAIL], ids=["ping", "fail"])
@pytest.mark.parametrize(
    "given",
    [
        pytest.param({}, id="missing"),
        pytest.param({"token": "wrong-token-value"}, id="wrong-header"),
        pytest.param({"query_token": "wrong-token-value"}, id="wrong-query"),
        pytest.param({"token": API_TOKEN}, id="api-token-is-not-it"),
        pytest.param({"token": TOKEN[:-1]}, id="prefix"),
    ],
)
async def test_a_missing_or_wrong_token_is_401_and_records_nothing(
    daemon: Daemon, method: str, path: str, given: dict[str, str]
) -> None:
    status, body = await call(daemon, method, path.format(name=NAME), **given)
    assert status == 401
    assert "token" in body["error"] and TOKEN not in json.dumps(body)
    conforms(status, body, path, method.lower())
    beat = daemon.heartbeats.get(NAME)
    assert beat is not None and beat.last_at is None


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("path", [PING, FAIL], ids=["ping", "fail"])
@pytest.mark.parametrize("name", ["no-such-check", "web"], ids=["unknown", "not-a-heartbeat"])
async def test_an_unknown_name_or_another_type_is_404(
    daemon: Daemon, method: str, path: str, name: str
) -> None:
    status, body = await call(daemon, method, path.format(name=name), token=TOKEN)
    assert status == 404
    conforms(status, body, path, method.lower())


async def test_the_endpoints_need_no_api_token(clock: FakeClock) -> None:
    async with running("memory", clock, api_token="") as daemon:
        assert (await call(daemon, "POST", f"/api/v1/heartbeats/{NAME}", token=TOKEN))[0] == 200
        assert (await call(daemon, "POST", "/api/v1/silences", token=TOKEN))[0] == 403


async def test_a_fail_ping_takes_the_check_down_with_its_reason_until_the_next_ping(
    daemon: Daemon, clock: FakeClock
) -> None:
    status, body = await call(
        daemon, "POST", f"/api/v1/heartbeats/{NAME}/fail", token=TOKEN, data=b"pg_dump: disk full\n(exit 1)"
    )
    assert status == 200 and body == {"check": NAME, "at": iso(clock.now()), "ok": False}
    conforms(status, body, FAIL, "post")
    clock.advance(60)
    result = await run(daemon)
    assert not result.up
    assert result.reason == "failure reported: pg_dump: disk full (exit 1)"
    assert result.samples == {"since_last_s": 60.0}

    assert (await call(daemon, "GET", f"/api/v1/heartbeats/{NAME}/fail", query_token=TOKEN))[0] == 200
    assert (await run(daemon)).reason == "failure reported"

    assert (await call(daemon, "GET", f"/api/v1/heartbeats/{NAME}", query_token=TOKEN))[0] == 200
    clock.advance(5)
    result = await run(daemon)
    assert result.up and result.reason is None and result.samples == {"since_last_s": 5.0}


async def test_a_reason_over_1kb_is_413_json_and_records_nothing(daemon: Daemon) -> None:
    path = f"/api/v1/heartbeats/{NAME}/fail"
    status, body = await call(daemon, "POST", path, token=TOKEN, data=b"x" * 1025)
    assert status == 413 and body == {"error": "body: larger than 1024 bytes"}
    conforms(status, body, FAIL, "post")
    beat = daemon.heartbeats.get(NAME)
    assert beat is not None and beat.last_at is None

    status, _ = await call(daemon, "POST", path, token=TOKEN, data=b"y" * 1024)
    assert status == 200
    beat = daemon.heartbeats.get(NAME)
    assert beat is not None and beat.reason == "y" * 1024


async def test_the_check_goes_down_after_period_plus_grace_and_up_again_after_a_ping(
    daemon: Daemon, clock: FakeClock
) -> None:
    assert (await call(daemon, "POST", f"/api/v1/heartbeats/{NAME}", token=TOKEN))[0] == 200
    clock.advance(DAY + HOUR)  # exactly period + grace: still in time
    result = await run(daemon)
    assert result.up and result.samples == {"since_last_s": DAY + HOUR}

    clock.advance(1)
    result = await run(daemon)
    assert not result.up
    assert result.reason == "no ping for 1d 1h (period 1d + grace 1h)"
    assert result.samples == {"since_last_s": DAY + HOUR + 1}

    assert (await call(daemon, "GET", f"/api/v1/heartbeats/{NAME}", query_token=TOKEN))[0] == 200
    result = await run(daemon)
    assert result.up and result.samples == {"since_last_s": 0.0}


async def test_a_never_pinged_heartbeat_waits_until_period_plus_grace_after_first_configured(
    daemon: Daemon, clock: FakeClock
) -> None:
    configured_at = clock.now()
    clock.advance(DAY)
    result = await run(daemon)
    # Up, without since_last_s, and saying so: "pending" rather than down (SPEC 13).
    assert result.up and result.samples == {}
    assert result.reason == f"waiting for the first ping (down after {iso(configured_at + DAY + HOUR)})"

    clock.advance(HOUR + 1)
    result = await run(daemon)
    assert not result.up and result.reason == "no ping since configured 1d 1h ago"
    assert "since_last_s" not in result.samples


@pytest.fixture(params=["sqlite", "postgresql"])
async def durable_state(
    request: pytest.FixtureRequest, tmp_path: Path, pg_cluster: PostgresCluster
) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    async with pg_cluster.database("heartbeats_api") as db:
        yield pg_cluster.dsn(database=db)


async def test_a_restart_keeps_the_last_ping(durable_state: str, clock: FakeClock) -> None:
    async with running(durable_state, clock) as daemon:
        path = f"/api/v1/heartbeats/{NAME}/fail"
        assert (await call(daemon, "POST", path, token=TOKEN, data=b"rsync: connection reset"))[0] == 200
    clock.advance(30)
    async with running(durable_state, clock) as daemon:
        result = await run(daemon)
        assert not result.up and result.reason == "failure reported: rsync: connection reset"
        assert result.samples == {"since_last_s": 30.0}


async def test_a_restart_keeps_the_first_configured_time(durable_state: str, clock: FakeClock) -> None:
    async with running(durable_state, clock) as daemon:
        assert (await run(daemon)).up
    clock.advance(DAY + HOUR + 1)
    async with running(durable_state, clock) as daemon:  # not a fresh wait: configured a day ago
        result = await run(daemon)
        assert not result.up and result.reason == "no ping since configured 1d 1h ago"


async def test_a_ping_taken_by_another_replica_is_seen(pg_cluster: PostgresCluster, clock: FakeClock) -> None:
    async with pg_cluster.database("heartbeats_replicas") as db:
        dsn = pg_cluster.dsn(database=db)
        async with running(dsn, clock) as first, running(dsn, clock) as second:
            clock.advance(DAY + HOUR + 1)
            assert not (await run(second)).up
            assert (await call(first, "POST", f"/api/v1/heartbeats/{NAME}", token=TOKEN))[0] == 200
            clock.advance(10)
            result = await run(second)
            assert result.up and result.samples == {"since_last_s": 10.0}


async def test_a_ping_the_store_does_not_take_is_503_and_not_recorded(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monitor.store import StoreError

    async def refuse(*_: Any) -> None:
        raise StoreError("state.db is locked by another process")

    monkeypatch.setattr(daemon.store, "save_ping", refuse)
    status, body = await call(daemon, "POST", f"/api/v1/heartbeats/{NAME}", token=TOKEN)
    assert status == 503 and "locked" in body["error"]
    conforms(status, body, PING, "post")
    beat = daemon.heartbeats.get(NAME)
    assert beat is not None and beat.last_at is None


async def test_the_token_shows_nowhere(
    daemon: Daemon, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    path = f"/api/v1/heartbeats/{NAME}"
    for given in ({"token": TOKEN}, {"query_token": TOKEN}, {"token": TOKEN + "x"}):
        seen.append(json.dumps(await call(daemon, "POST", path, **given)))
    # A job that puts the token in its reason (a failing curl's command line) gets it masked.
    await call(daemon, "POST", path + "/fail", token=TOKEN, data=f"curl {path}?token={TOKEN} failed".encode())
    result = await run(daemon)
    assert result.reason is not None and "***" in result.reason
    seen += [result.reason, json.dumps(daemon.checks_view()), caplog.text]
    async with aiohttp.ClientSession() as session:
        for page in ("/api/v1/checks", "/api/v1/alerts", "/", "/metrics"):
            async with session.get(f"http://127.0.0.1:{daemon.bound_port}{page}") as resp:
                seen.append(await resp.text())
    assert all(TOKEN not in text for text in seen)


def _described(path: str) -> Callable[[str], dict[str, Any]]:
    return lambda method: DOC["paths"][path][method]


def test_the_gets_take_the_token_in_the_query_and_the_posts_name_the_heartbeat_schemes() -> None:
    for path in (PING, FAIL):
        operation = _described(path)
        assert [p["name"] for p in operation("get")["parameters"]] == ["name", "token"]
        assert operation("post")["security"] == [{"heartbeat": []}, {"heartbeatQuery": []}]


async def test_a_heartbeat_added_by_a_reload_waits_from_the_reload(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "monitor.toml"
    path.write_text(config("memory").replace(f'name = "{NAME}"', 'name = "later"'))
    daemon = Daemon(
        parse_config(path.read_text(), {}), clock=clock, registry=CollectorRegistry(), config_path=str(path)
    )
    await daemon.start()
    try:
        clock.advance(DAY * 3)
        path.write_text(config("memory"))
        assert await daemon.reload()
        clock.advance(DAY)
        result = await run(daemon)
        assert result.up and result.reason is not None and result.reason.startswith("waiting")
        status, _ = await call(daemon, "GET", f"/api/v1/heartbeats/{NAME}", query_token=TOKEN)
        assert status == 200
    finally:
        await daemon.stop()
