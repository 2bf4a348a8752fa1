"""The API of a live daemon (a real TCP port, SQLite state, a few checks) against its OpenAPI
description as shipped (monitor/openapi.json): schemathesis sends valid and invalid requests to
every path; no answer may be a server error, every answer must be as described."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any, cast

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from monitor.api import build_app
from monitor.config import parse_config
from monitor.daemon import Daemon

TOKEN = "api-secret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
DOC: dict[str, Any] = json.loads(resources.files("monitor").joinpath("openapi.json").read_text())
schema = schemathesis.openapi.from_dict(DOC)
# What "conforms" means here; acceptance checks (is every valid-looking body a 2xx?) are left out:
# a silence's end must be in the future, which a schema cannot say.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _config(refused_port: int, open_port: int, state: Path) -> str:
    return textwrap.dedent(
        f"""\
        [monitor]
        listen = "127.0.0.1:0"
        state = "sqlite:///{state}"
        api_token = "{TOKEN}"
        [thresholds.up]
        trigger_after = 1
        [[checks]]
        name = "database"
        type = "tcp"
        host = "127.0.0.1"
        port = {refused_port}
        interval = "0.2s"
        timeout = "0.1s"
        labels = {{ team = "data" }}
        [[checks]]
        name = "web"
        type = "tcp"
        host = "127.0.0.1"
        port = {open_port}
        interval = "0.2s"
        timeout = "0.1s"
        [[checks]]
        name = "nightly-backup"
        type = "heartbeat"
        period = "1d"
        token = "heartbeat-token"
        """
    )


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A daemon on its own event loop in a thread (schemathesis calls synchronously), with a firing
    alert, a check that is up and run history."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-under-test", daemon=True)
    thread.start()
    state = tmp_path_factory.mktemp("api-schema") / "state.db"
    with socket.socket() as closed:  # bound, not listening: the check's connections are refused
        closed.bind(("127.0.0.1", 0))

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        async def start() -> tuple[Daemon, asyncio.Server]:
            target = await asyncio.start_server(accept, "127.0.0.1", 0)  # the "web" check's, up
            ports = closed.getsockname()[1], target.sockets[0].getsockname()[1]
            daemon = Daemon(parse_config(_config(*ports, state), {}), registry=CollectorRegistry())
            await daemon.start()
            return daemon, target

        async def stop(daemon: Daemon, target: asyncio.Server) -> None:
            await daemon.stop()
            target.close()
            await target.wait_closed()

        daemon, target = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        try:
            url = f"http://127.0.0.1:{daemon.bound_port}"
            deadline = time.monotonic() + 10
            while not [a for a in requests.get(f"{url}/api/v1/alerts", timeout=5).json()["alerts"]]:
                assert time.monotonic() < deadline, "no alert fired"
                time.sleep(0.05)
            yield url
        finally:
            asyncio.run_coroutine_threadsafe(stop(daemon, target), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_described_answers(case: schemathesis.Case, base_url: str) -> None:
    case.call_and_validate(base_url=base_url, headers=AUTH, checks=CHECKS)


def call(operation: tuple[str, str], base_url: str, auth: bool = True, **parts: Any) -> requests.Response:
    path, method = operation
    case = schema[path][method].Case(**parts)
    return case.call_and_validate(base_url=base_url, headers=AUTH if auth else None, checks=CHECKS)


SILENCES = ("/api/v1/silences", "POST")


def test_the_answers_of_a_silence_and_an_ack_conform(base_url: str) -> None:
    new = {"checks": ["data*"], "end": "2099-01-01T00:00:00Z", "comment": "migration"}
    created = call(SILENCES, base_url, body=new)
    assert created.status_code == 201
    listed = call(("/api/v1/silences", "GET"), base_url)
    assert created.json() in listed.json()["silences"]
    deleted = call(
        ("/api/v1/silences/{id}", "DELETE"), base_url, path_parameters={"id": created.json()["id"]}
    )
    assert deleted.status_code == 204

    (alert,) = call(("/api/v1/alerts", "GET"), base_url).json()["alerts"]
    ack = ("/api/v1/alerts/{id}/ack", "POST")
    acked = call(ack, base_url, path_parameters={"id": alert["id"]}, body={"by": "alice", "comment": None})
    assert acked.status_code == 200 and acked.json()["acknowledged"] is True
    assert call(ack, base_url, path_parameters={"id": "no-such-alert"}, body={}).status_code == 404
    since = {"state": "resolved", "since": "2026-01-01T00:00:00Z"}
    assert call(("/api/v1/alerts", "GET"), base_url, query=since).status_code == 200


def test_the_answers_of_a_check_its_badges_and_the_document_conform(base_url: str) -> None:
    web = call(("/api/v1/checks/{name}", "GET"), base_url, path_parameters={"name": "web"}).json()
    assert web["name"] == "web" and web["history"][-1]["runs"] > 0 and web["uptime_pct"]["24h"] == 100.0
    since = {"since": "2026-01-01T00:00:00Z"}
    database = call(
        ("/api/v1/checks/{name}", "GET"), base_url, path_parameters={"name": "database"}, query=since
    )
    assert database.json()["uptime_pct"]["24h"] == 0.0
    for path, parameters in [
        ("/badges/{name}/status.svg", {"name": "web"}),
        ("/badges/{name}/uptime/{period}.svg", {"name": "web", "period": "30d"}),
        ("/badges/{name}/latency.svg", {"name": "web"}),
    ]:
        answer = call((path, "GET"), base_url, path_parameters=parameters)
        assert answer.status_code == 200 and answer.text.startswith("<svg ")
    served = requests.get(f"{base_url}/api/v1/openapi.json", timeout=5)
    assert served.headers["Content-Type"].startswith("application/json")
    assert served.json() == DOC  # the packaged document, as it is


@pytest.mark.parametrize(
    ("parts", "auth", "status"),
    [
        pytest.param({"body": {"checks": ["x"], "end": "2099-01-01T00:00:00Z"}}, False, 401, id="no-token"),
        pytest.param(
            {"body": {"checks": ["x"], "end": "9999-12-31T23:59:59-12:00"}}, True, 400, id="end-10000"
        ),
        pytest.param({"body": {"checks": ["x"], "end": "2000-01-01T00:00:00Z"}}, True, 400, id="end-past"),
        pytest.param({"body": {"checks": "x", "end": 1}}, True, 400, id="wrong-types"),
        pytest.param(
            {"body": {"checks": ["x"], "end": "2099-01-01T00:00:00Z", "comment": "x" * 100_000}},
            True,
            413,
            id="100KB",
        ),
    ],
)
def test_error_answers_conform(base_url: str, parts: dict[str, Any], auth: bool, status: int) -> None:
    assert call(SILENCES, base_url, auth, **parts).status_code == status


def test_every_api_route_is_described() -> None:
    app = build_app(cast(Any, None))  # routes only: no handler runs
    routes = {
        (info["path"] if "path" in (info := r.resource.get_info()) else info["formatter"], r.method.lower())
        for r in app.router.routes()
        if r.resource is not None
        and r.resource.canonical.startswith(("/api/", "/badges/"))
        and r.method != "HEAD"
    }
    described = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert routes == described


def test_the_description_names_the_bearer_scheme_on_every_write() -> None:
    assert DOC["openapi"].startswith("3.1")
    assert DOC["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "monitor.api_token",
    }
    for item in DOC["paths"].values():
        for method, operation in item.items():
            assert (method != "get") == ("security" in operation), operation["operationId"]
