"""The API against its OpenAPI description as shipped (monitor/openapi.json): schemathesis sends
valid and invalid requests; no answer may be a server error, every answer must be as described."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from importlib import resources
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


def _config(refused_port: int) -> str:
    return textwrap.dedent(
        f"""\
        [monitor]
        listen = "127.0.0.1:0"
        state = "memory"
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
        """
    )


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A daemon on its own event loop in a thread (schemathesis calls synchronously), with a firing alert."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="api-under-test", daemon=True)
    thread.start()
    with socket.socket() as closed:  # bound, not listening: the check's connections are refused
        closed.bind(("127.0.0.1", 0))

        async def start() -> Daemon:
            daemon = Daemon(parse_config(_config(closed.getsockname()[1]), {}), registry=CollectorRegistry())
            await daemon.start()
            return daemon

        daemon = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        try:
            url = f"http://127.0.0.1:{daemon.bound_port}"
            deadline = time.monotonic() + 10
            while not [a for a in requests.get(f"{url}/api/v1/alerts", timeout=5).json()["alerts"]]:
                assert time.monotonic() < deadline, "no alert fired"
                time.sleep(0.05)
            yield url
        finally:
            asyncio.run_coroutine_threadsafe(daemon.stop(), loop).result(30)
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
        if r.resource is not None and r.resource.canonical.startswith("/api/") and r.method != "HEAD"
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
