"""Fake notification receivers: a loopback HTTP server that records what it is sent, answers from a
script, and validates payloads as PagerDuty, Slack, a webhook consumer or Alertmanager would.

    async with Receiver(script=[500, Reply(429, headers={"Retry-After": "7"}), 202],
                        validate=pagerduty_problems) as pd:
        ...  # point a notifier (or `monitor run`) at pd.url + "/v2/enqueue"
        [request] = await pd.wait_for(1)
        assert request.json["event_action"] == "trigger"
        assert pd.problems == []

Any method and path are accepted. Each request takes the next reply of `script` (a status code or
a `Reply`); once the script is used up, `default` answers. A payload that `validate` finds
problems with is answered 400 (as the real service would), without using up a reply, and the
problems are kept on the request and in `problems`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

HOST = "127.0.0.1"

Validator = Callable[[Any], list[str]]


# ---------------------------------------------------------------- replies and records


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body`: a str is sent as text, anything else as JSON, None empty.
    `delay_s` waits before answering (`math.inf`: never answers, for timeouts); `echo` makes the
    body a dump of the request (method and path with query, credential headers, body), as a
    careless proxy's error page would: the test of choice for secrets leaking into reasons."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    echo: bool = False

    @classmethod
    def hang(cls) -> Reply:
        return cls(delay_s=math.inf)

    @classmethod
    def echo_request(cls, status: int) -> Reply:
        return cls(status, echo=True)


@dataclass(frozen=True)
class Recorded:
    """One request as received; `json` is the parsed body (None when it is not JSON)."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    problems: list[str]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


_NOT_JSON = object()
_ECHOED_HEADERS = {"authorization", "x-api-key", "x-auth-token"}


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return _NOT_JSON


# ---------------------------------------------------------------- the receiver


class Receiver:
    """A loopback HTTP receiver on 127.0.0.1, port 0. `url` has no trailing slash."""

    def __init__(
        self,
        script: Iterable[int | Reply] = (),
        *,
        default: int | Reply = 200,
        validate: Validator | None = None,
    ) -> None:
        self.script = list(script)  # type: ignore[assignment]  -- the setter normalises
        self.default = default if isinstance(default, Reply) else Reply(default)
        self.validate = validate
        self.requests: list[Recorded] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()

    @property
    def script(self) -> list[Reply]:
        """The replies still to give, in order; assign a list of codes or Replies to change it."""
        return self._script

    @script.setter
    def script(self, replies: Iterable[int | Reply]) -> None:
        self._script = [r if isinstance(r, Reply) else Reply(r) for r in replies]

    @property
    def problems(self) -> list[str]:
        """Every validation problem so far, as `request N: problem`."""
        return [f"request {i}: {p}" for i, r in enumerate(self.requests) for p in r.problems]

    @property
    def bodies(self) -> list[Any]:
        return [r.json for r in self.requests]

    def clear(self) -> None:
        self.requests.clear()

    async def start(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a hanging reply is cancelled when the client gives up; no access
        # log, since request paths may carry the secrets a leak test looks for.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, HOST, 0)
        await site.start()
        self.url = f"http://{HOST}:{self._runner.addresses[0][1]}"
        return self

    async def aclose(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def wait_for(self, n: int, timeout_s: float = 5.0) -> list[Recorded]:
        """Wait until at least `n` requests arrived; returns the first `n`."""
        try:
            async with asyncio.timeout(timeout_s), self._arrived:
                await self._arrived.wait_for(lambda: len(self.requests) >= n)
        except TimeoutError:
            raise AssertionError(
                f"expected {n} request(s) within {timeout_s}s, got {len(self.requests)}"
            ) from None
        return self.requests[:n]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        parsed = _parse(body)
        problems: list[str] = []
        if self.validate is not None:
            problems = ["body is not JSON"] if parsed is _NOT_JSON else self.validate(parsed)
        record = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            body=body,
            json=None if parsed is _NOT_JSON else parsed,
            problems=problems,
        )
        async with self._arrived:
            self.requests.append(record)
            self._arrived.notify_all()
        if problems:
            return web.json_response({"status": "invalid", "errors": problems}, status=400)
        reply = self._script.pop(0) if self._script else self.default
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s if math.isfinite(reply.delay_s) else 86400)
        if reply.echo:
            # Credentials-bearing headers first: delivery reasons keep only the start of a body.
            headers = [f"{k}: {v}" for k, v in request.headers.items() if k.lower() in _ECHOED_HEADERS]
            dump = "\n".join([f"{request.method} {request.path_qs}", *headers, record.text])
            return web.Response(text=dump, status=reply.status, headers=reply.headers)
        if reply.body is None:
            return web.Response(status=reply.status, headers=reply.headers)
        if isinstance(reply.body, str):
            return web.Response(text=reply.body, status=reply.status, headers=reply.headers)
        return web.json_response(reply.body, status=reply.status, headers=reply.headers)


class Receivers:
    """Starts receivers on demand and stops them all on `aclose` (a fixture's cleanup)."""

    def __init__(self) -> None:
        self._stack = contextlib.AsyncExitStack()

    async def start(
        self,
        script: Iterable[int | Reply] = (),
        *,
        default: int | Reply = 200,
        validate: Validator | None = None,
    ) -> Receiver:
        receiver = Receiver(script, default=default, validate=validate)
        return await self._stack.enter_async_context(receiver)

    async def aclose(self) -> None:
        await self._stack.aclose()


# ---------------------------------------------------------------- validators

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _time_problem(where: str, value: Any, *, utc: bool = False) -> list[str]:
    pattern = _RFC3339_UTC if utc else _RFC3339
    if not isinstance(value, str) or not pattern.match(value):
        return [f"{where}: not an RFC 3339 time{' in UTC (Z)' if utc else ''}: {value!r}"]
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return [f"{where}: not a valid time: {value!r}"]
    return []


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _str_problem(where: str, value: Any, *, max_len: int | None = None, empty_ok: bool = False) -> list[str]:
    if not isinstance(value, str):
        return [f"{where}: expected a string, got {type(value).__name__}"]
    if not value and not empty_ok:
        return [f"{where}: empty"]
    if max_len is not None and len(value) > max_len:
        return [f"{where}: longer than {max_len} characters ({len(value)})"]
    return []


def _keys_problem(
    where: str, obj: dict[str, Any], required: set[str], optional: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    problems = [f"{where}: missing {k!r}" for k in sorted(required - obj.keys())]
    problems += [f"{where}: unexpected key {k!r}" for k in sorted(obj.keys() - required - optional)]
    return problems


PAGERDUTY_ACTIONS = {"trigger", "acknowledge", "resolve"}
PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}
CUSTOM_DETAILS_KEYS = {
    "check",
    "metric",
    "severity",
    "value",
    "threshold",
    "direction",
    "since",
    "reason",
    "labels",
    "runbook",
}


def pagerduty_problems(body: Any) -> list[str]:
    """PagerDuty Events API v2 rules ("Send an alert event"), plus SPEC section 5's fields."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = _keys_problem(
        "body",
        body,
        {"routing_key", "event_action", "dedup_key"},
        {"payload", "links", "images", "client", "client_url"},
    )
    problems += _str_problem("routing_key", body.get("routing_key"))
    if body.get("event_action") not in PAGERDUTY_ACTIONS:
        problems.append(f"event_action: not one of {sorted(PAGERDUTY_ACTIONS)}: {body.get('event_action')!r}")
    problems += _str_problem("dedup_key", body.get("dedup_key"), max_len=255)
    payload = body.get("payload")
    if payload is None:
        if body.get("event_action") == "trigger":
            problems.append("payload: required for trigger")
    elif not isinstance(payload, dict):
        problems.append("payload: expected an object")
    else:
        problems += _keys_problem(
            "payload",
            payload,
            {"summary", "source", "severity", "timestamp", "component", "group", "class", "custom_details"},
        )
        problems += _str_problem("payload.summary", payload.get("summary"), max_len=1024)
        problems += _str_problem("payload.source", payload.get("source"))
        if payload.get("severity") not in PAGERDUTY_SEVERITIES:
            problems.append(f"payload.severity: not one of {sorted(PAGERDUTY_SEVERITIES)}")
        problems += _time_problem("payload.timestamp", payload.get("timestamp"))
        for key in ("component", "group", "class"):
            problems += _str_problem(f"payload.{key}", payload.get(key))
        details = payload.get("custom_details")
        if not isinstance(details, dict):
            problems.append("payload.custom_details: expected an object")
        else:
            keys = (
                STORM_DETAILS_KEYS if str(body.get("dedup_key")).startswith("storm-") else CUSTOM_DETAILS_KEYS
            )
            problems += _keys_problem("payload.custom_details", details, keys)
    links = body.get("links", [])
    if not isinstance(links, list):
        problems.append("links: expected a list")
    else:
        for i, link in enumerate(links):
            if not isinstance(link, dict):
                problems.append(f"links[{i}]: expected an object")
                continue
            problems += _keys_problem(f"links[{i}]", link, {"href"}, {"text"})
            problems += _str_problem(f"links[{i}].href", link.get("href"))
    return problems


# Block Kit limits ("Reference: blocks", "Composition objects", "Block elements").
SLACK_BLOCK_TYPES = {
    "actions",
    "context",
    "divider",
    "file",
    "header",
    "image",
    "input",
    "rich_text",
    "section",
    "video",
}


def _slack_text_problems(where: str, obj: Any, *, max_len: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: expected a text object"]
    kinds = {"plain_text"} if plain_only else {"plain_text", "mrkdwn"}
    problems = []
    if obj.get("type") not in kinds:
        problems.append(f"{where}.type: not one of {sorted(kinds)}: {obj.get('type')!r}")
    optional = {"emoji"} if obj.get("type") == "plain_text" else {"verbatim"}
    problems += _keys_problem(where, obj, {"type", "text"}, optional)
    problems += _str_problem(f"{where}.text", obj.get("text"), max_len=max_len)
    return problems


def _slack_element_problems(where: str, element: Any) -> list[str]:
    if not isinstance(element, dict):
        return [f"{where}: expected an object"]
    if element.get("type") != "button":
        return []  # other interactive elements are not used by monitor
    problems = _keys_problem(
        where,
        element,
        {"type", "text"},
        {"action_id", "url", "value", "style", "confirm", "accessibility_label"},
    )
    problems += _slack_text_problems(f"{where}.text", element.get("text"), max_len=75, plain_only=True)
    if "url" in element:
        problems += _str_problem(f"{where}.url", element["url"], max_len=3000)
    if "action_id" in element:
        problems += _str_problem(f"{where}.action_id", element["action_id"], max_len=255)
    if "style" in element and element["style"] not in ("primary", "danger"):
        problems.append(f"{where}.style: not primary or danger")
    return problems


def slack_problems(body: Any) -> list[str]:
    """An incoming-webhook message: `text` (SPEC: the fallback) and valid Block Kit `blocks`."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = _str_problem("text", body.get("text"), max_len=40000)
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        return [*problems, "blocks: expected a non-empty list"]
    if len(blocks) > 50:
        problems.append(f"blocks: more than 50 ({len(blocks)})")
    block_ids: set[str] = set()
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            problems.append(f"{where}: expected an object")
            continue
        kind = block.get("type")
        if kind not in SLACK_BLOCK_TYPES:
            problems.append(f"{where}.type: unknown block type {kind!r}")
            continue
        if "block_id" in block:
            problems += _str_problem(f"{where}.block_id", block["block_id"], max_len=255)
            if block["block_id"] in block_ids:
                problems.append(f"{where}.block_id: duplicate")
            block_ids.add(block["block_id"])
        if kind == "header":
            problems += _keys_problem(where, block, {"type", "text"}, {"block_id"})
            problems += _slack_text_problems(f"{where}.text", block.get("text"), max_len=150, plain_only=True)
        elif kind == "section":
            optional = {"text", "fields", "accessory", "block_id", "expand"}
            problems += _keys_problem(where, block, {"type"}, optional)
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: needs text or fields")
            if "text" in block:
                problems += _slack_text_problems(f"{where}.text", block["text"], max_len=3000)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    problems.append(f"{where}.fields: expected 1 to 10 text objects")
                else:
                    for j, item in enumerate(fields):
                        problems += _slack_text_problems(f"{where}.fields[{j}]", item, max_len=2000)
        elif kind == "context":
            problems += _keys_problem(where, block, {"type", "elements"}, {"block_id"})
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}.elements: expected 1 to 10 elements")
            else:
                for j, item in enumerate(elements):
                    if isinstance(item, dict) and item.get("type") == "image":
                        continue
                    problems += _slack_text_problems(f"{where}.elements[{j}]", item, max_len=3000)
        elif kind == "actions":
            problems += _keys_problem(where, block, {"type", "elements"}, {"block_id"})
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 25:
                problems.append(f"{where}.elements: expected 1 to 25 elements")
            else:
                for j, item in enumerate(elements):
                    problems += _slack_element_problems(f"{where}.elements[{j}]", item)
        elif kind == "divider":
            problems += _keys_problem(where, block, {"type"}, {"block_id"})
    return problems


WEBHOOK_ALERT_KEYS = {
    "id",
    "check",
    "metric",
    "severity",
    "value",
    "threshold",
    "started_at",
    "resolved_at",
    "reason",
    "labels",
    "runbook",
}
WEBHOOK_EVENTS = {"firing", "resolved", "acknowledged", "flapping", "test", "storm"}
STORM_DETAILS_KEYS = {"checks_down", "checks", "window", "since", "over_at"}  # a storm's incident
WEBHOOK_STORM_KEYS = {"id", "started_at", "ended_at", "count", "checks", "window_s"}


def webhook_problems(body: Any) -> list[str]:
    """SPEC section 5's webhook body: version, status, alert with exactly its fields."""
    if not isinstance(body, dict):
        return ["body: expected a JSON object"]
    problems = _keys_problem(
        "body", body, {"version", "status", "alert"}, {"event", "summary", "acknowledged_by", "note", "storm"}
    )
    if body.get("version") != "1":
        problems.append(f'version: expected "1", got {body.get("version")!r}')
    status = body.get("status")
    if status not in ("firing", "resolved"):
        problems.append(f"status: not firing or resolved: {status!r}")
    if "event" in body and body["event"] not in WEBHOOK_EVENTS:
        problems.append(f"event: unknown {body['event']!r}")
    if body.get("event") == "storm":  # one body for many alerts: `alert` is null, `storm` says it
        storm = body.get("storm")
        if body.get("alert") is not None or not isinstance(storm, dict):
            return [*problems, "storm: expected an object, and alert null"]
        problems += _keys_problem("storm", storm, WEBHOOK_STORM_KEYS)
        problems += _time_problem("storm.started_at", storm.get("started_at"), utc=True)
        if not isinstance(storm.get("count"), int) or not isinstance(storm.get("checks"), list):
            problems.append("storm: count must be a number and checks a list")
        return problems
    alert = body.get("alert")
    if not isinstance(alert, dict):
        return [*problems, "alert: expected an object"]
    problems += _keys_problem("alert", alert, WEBHOOK_ALERT_KEYS)
    for key in ("id", "check", "metric"):
        problems += _str_problem(f"alert.{key}", alert.get(key))
    if alert.get("severity") not in ("warning", "critical"):
        problems.append(f"alert.severity: not warning or critical: {alert.get('severity')!r}")
    for key in ("value", "threshold"):
        if alert.get(key) is not None and not _is_number(alert.get(key)):
            problems.append(f"alert.{key}: expected a number or null")
    problems += _time_problem("alert.started_at", alert.get("started_at"), utc=True)
    if alert.get("resolved_at") is not None or status == "resolved":
        problems += _time_problem("alert.resolved_at", alert.get("resolved_at"), utc=True)
    for key in ("reason", "runbook"):
        if alert.get(key) is not None:
            problems += _str_problem(f"alert.{key}", alert.get(key))
    labels = alert.get("labels")
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        problems.append("alert.labels: expected an object of strings")
    return problems


def alertmanager_problems(body: Any) -> list[str]:
    """Alertmanager's `postableAlerts` (api/v2/openapi.yaml) and its label rules."""
    if not isinstance(body, list) or not body:
        return ["body: expected a non-empty list of alerts"]
    problems: list[str] = []
    for i, alert in enumerate(body):
        where = f"[{i}]"
        if not isinstance(alert, dict):
            problems.append(f"{where}: expected an object")
            continue
        optional = {"annotations", "startsAt", "endsAt", "generatorURL"}
        problems += _keys_problem(where, alert, {"labels"}, optional)
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{where}.labels: expected a non-empty object")
        else:
            for name, value in labels.items():
                if not _LABEL_NAME.match(name):
                    problems.append(f"{where}.labels: invalid label name {name!r}")
                if not isinstance(value, str) or not value:
                    problems.append(f"{where}.labels.{name}: expected a non-empty string")
        annotations = alert.get("annotations", {})
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            problems.append(f"{where}.annotations: expected an object of strings")
        for key in ("startsAt", "endsAt"):
            if key in alert:
                problems += _time_problem(f"{where}.{key}", alert[key])
    return problems
