"""The HTTP interface on `monitor.listen`: /metrics, /healthz, /readyz, the JSON API, a status page."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from importlib import resources
from itertools import accumulate
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from monitor import badges, statuspage
from monitor.config import Config
from monitor.models import iso
from monitor.store import Conflict, StoreError

log = logging.getLogger("monitor.api")

MAX_BODY_BYTES = 64 * 1024  # an ack or a silence is a few hundred bytes: more is a mistake or an attack
MAX_JSON_DEPTH = 32  # our bodies are two levels deep; the limit keeps the parser far from recursion limits
_MAX_NUMBER_DIGITS = 100  # no field takes a number: a long one only costs CPU to convert
MAX_REASON_BYTES = 1024  # a heartbeat's failure reason (SPEC 13): a line, not the job's whole log
_SILENCE_KEYS = ("checks", "start", "end", "comment")
_ACK_KEYS = ("by", "comment")


class ApiSource(Protocol):
    """What the API reads from and asks of the daemon (which implements it)."""

    def metrics_text(self) -> Iterator[str]: ...
    @property
    def config(self) -> Config: ...
    @property
    def api_token(self) -> str: ...
    @property
    def timezone(self) -> ZoneInfo: ...
    def now(self) -> float: ...
    def checks_view(self) -> dict[str, Any]: ...
    async def ready(self) -> tuple[bool, str]: ...
    async def alerts_view(
        self, resolved_since: float | None, metric: str | None = None
    ) -> list[dict[str, Any]]: ...
    def alerts_count(self, metric: str | None) -> dict[str, int]: ...
    async def acknowledge(
        self, alert_id: str, by: str | None, comment: str | None
    ) -> dict[str, Any] | None: ...
    def silences_view(self) -> list[dict[str, Any]]: ...
    async def add_silence(
        self, checks: list[str], start: float, end: float, comment: str
    ) -> dict[str, Any]: ...
    async def delete_silence(self, silence_id: str) -> bool: ...
    def heartbeat_token(self, name: str) -> str | None:
        """The token of the heartbeat check `name`; None when there is no such heartbeat."""
        ...

    async def heartbeat_ping(self, name: str, ok: bool, reason: str | None) -> float:
        """Record a ping (ok False: a reported failure); its time. StoreError when not stored."""
        ...

    def storm_view(self) -> dict[str, Any] | None:
        """The storm in progress (SPEC 12): `{"started_at", "checks", "first"}`; None without one."""
        ...

    def uptime_pct(self, name: str) -> dict[str, float | None]:
        """Successful runs in % over "24h", "7d" and "30d"; None for a window without runs."""
        ...

    def latency_hours(self, name: str) -> list[float | None]:
        """The p95 latency (ms) of each of the last 24 hours, oldest first; None without runs."""
        ...

    def check_view(self, name: str, since: float | None) -> dict[str, Any] | None:
        """`GET /api/v1/checks/{name}`: the check's entry with its `history` (hours from `since`,
        default the last 24 hours, as far as memory holds them) and `uptime_pct`; None when unknown."""
        ...

    async def older_hours(self, name: str, since: float) -> list[dict[str, Any]]:
        """The stored hours from `since` that are older than those `check_view` holds."""
        ...

    def cluster_view(self) -> dict[str, Any]:
        """GET /api/v1/cluster: mode, shard, shards, role, epoch, leader, checks (SPEC section 9)."""
        ...


class BadRequest(ValueError):
    """A request body or query the API cannot take; its message is shown to the caller."""


def parse_time(value: Any, field: str, tz: ZoneInfo) -> float:
    """RFC 3339; a time without an offset is read in `monitor.timezone` (SPEC section 3).
    Only times the API can show again in UTC (years 1 to 9999) are taken."""
    if not isinstance(value, str):
        raise BadRequest(f'{field}: expected an RFC 3339 time, e.g. "2026-12-01T02:00:00Z"')
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: invalid time {value!r}, expected RFC 3339") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    try:
        ts = when.timestamp()
        iso(ts)  # what GET shows: a time that cannot be rendered would break every later listing
    except (OverflowError, ValueError, OSError):
        raise BadRequest(
            f"{field}: out of range {value!r}, its UTC time must fall in years 1..9999"
        ) from None
    return ts


def _text(value: Any, field: str) -> str:
    """A string every store can keep: PostgreSQL's jsonb refuses NUL and unpaired surrogates."""
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected a string")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequest(f"{field}: not valid Unicode (unpaired surrogate)") from None
    if "\x00" in value:
        raise BadRequest(f"{field}: must not contain NUL characters")
    return value


def _only_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    # A typo must not silently drop a field (SPEC section 3's rule for the config, kept here too).
    for key in body:
        if key not in allowed:
            raise BadRequest(f"{key[:100]}: unknown key (expected {', '.join(allowed)})")


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _no_constant(name: str) -> float:
    raise BadRequest(f"body: invalid JSON: {name} is not a JSON value")


def _bounded_int(digits: str) -> int:
    if len(digits) > _MAX_NUMBER_DIGITS:
        raise BadRequest(f"body: invalid JSON: number longer than {_MAX_NUMBER_DIGITS} digits")
    return int(digits)


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object: UTF-8 whatever the declared charset (RFC 8259), bounded depth."""
    if not raw:
        return {}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"body: not UTF-8 (invalid byte at offset {exc.start})") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(text, parse_constant=_no_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"body: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # unbalanced brackets inside a broken string can hide depth from the count
        raise BadRequest(f"body: JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise BadRequest("body: expected a JSON object")
    return body


def _same_token(given: str, token: str) -> bool:
    """Constant-time. Header bytes that are not UTF-8 arrive surrogate-escaped (an env token may too)."""
    given_bytes, token_bytes = (t.encode("utf-8", "surrogateescape") for t in (given, token))
    return hmac.compare_digest(given_bytes, token_bytes)


def _bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _unauthorized(message: str) -> web.Response:
    return web.json_response({"error": message}, status=401, headers={"WWW-Authenticate": "Bearer"})


async def _reason_of(request: web.Request) -> str | None:
    """A fail ping's optional body, the reason, as one line: any bytes are taken (invalid UTF-8
    replaced); more than MAX_REASON_BYTES is a 413."""
    declared = request.content_length or 0
    raw = b""
    while declared <= MAX_REASON_BYTES and len(raw) <= MAX_REASON_BYTES:
        if not (chunk := await request.content.read(MAX_REASON_BYTES + 1 - len(raw))):
            break
        raw += chunk
    if max(declared, len(raw)) > MAX_REASON_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_REASON_BYTES, actual_size=max(declared, len(raw)))
    return " ".join(raw.decode("utf-8", "replace").replace("\x00", " ").split()) or None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own answers (404, 405, 413...) in the API's error shape, keeping e.g. `Allow`."""
    headers = {k: v for k, v in exc.headers.items() if k.lower() not in ("content-type", "content-length")}
    if isinstance(exc, web.HTTPNotFound):
        message = f"no such path: {request.path}"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        message = f"method {request.method} not allowed (allowed: {', '.join(sorted(exc.allowed_methods))})"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        limit = MAX_REASON_BYTES if request.path.startswith("/api/v1/heartbeats/") else MAX_BODY_BYTES
        message = f"body: larger than {limit} bytes"
    else:
        message = exc.reason
    return _error(exc.status, message, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def api_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer under /api/ is JSON, errors included (a badge's too); a bug is a logged 500,
    not a stack trace."""
    if not request.path.startswith(("/api/", "/badges/")):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except StoreError as exc:  # a write or history read the failing store refused: nothing changed
        return _error(503, f"state store unavailable: {exc}")
    except Conflict:  # the alert changed in the store meanwhile (another replica), twice in a row
        return _error(409, "the alert changed meanwhile (another replica wrote it): try again")
    except Exception:
        log.exception("API request failed", extra={"path": request.path})
        return _error(500, "internal error (logged)")


def _svg(text: str) -> web.Response:
    return web.Response(text=text, content_type="image/svg+xml", headers={"Cache-Control": "max-age=60"})


def build_app(source: ApiSource) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[api_errors])
    # The description shipped with the package, served as it is: one source of truth.
    openapi_document = resources.files("monitor").joinpath("openapi.json").read_bytes()

    def authorize(request: web.Request) -> web.Response | None:
        """403 when write endpoints are disabled (no token), 401 without the right bearer token."""
        token = source.api_token
        if not token:
            return _error(403, "write endpoints are disabled: set monitor.api_token")
        given = _bearer(request)
        if given is None or not _same_token(given, token):
            return _unauthorized("missing or wrong bearer token")
        return None

    async def body_of(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        return parse_body(await request.read())  # read() raises aiohttp's 413 past client_max_size

    async def metrics(request: web.Request) -> web.StreamResponse:
        # Written in slices, the loop starting due checks in between: at thousands of checks the
        # exposition is long. (Rendered in a thread, it held the GIL against the loop.)
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        await response.prepare(request)
        chunk: list[str] = []
        size = 0
        for part in source.metrics_text():
            chunk.append(part)
            size += len(part)
            if size >= _METRICS_SLICE_CHARS:
                await response.write("".join(chunk).encode())
                chunk, size = [], 0
                await asyncio.sleep(0)
        await response.write("".join(chunk).encode())
        await response.write_eof()
        return response

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all is the proof: a blocked loop answers nothing and the probe times out.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, why = await source.ready()
        return web.json_response({"status": "ready" if ok else why}, status=200 if ok else 503)

    async def checks(_: web.Request) -> web.Response:
        return web.json_response(source.checks_view())

    async def one_check(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        since = None
        if "since" in request.query:
            try:
                since = parse_time(request.query["since"], "since", source.timezone)
            except BadRequest as exc:
                return _error(400, str(exc))
        view = source.check_view(name, since)
        if view is None:
            return _error(404, f"no such check: {name[:200]}")
        if since is not None:
            view["history"] = [*await source.older_hours(name, since), *view["history"]]
        return web.json_response(view)

    async def openapi(_: web.Request) -> web.Response:
        return web.Response(body=openapi_document, content_type="application/json")

    def known(name: str) -> dict[str, Any] | None:
        return source.check_view(name, source.now())  # `since` now: only the open hour's row

    async def status_badge(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if (view := known(name)) is None:
            return _error(404, "no such check")
        status = view["status"]
        return _svg(badges.badge(name, status, badges.STATE_COLOURS[status]))

    async def uptime_badge(request: web.Request) -> web.Response:
        name, period = request.match_info["name"], request.match_info["period"]
        if (view := known(name)) is None or period not in view["uptime_pct"]:
            return _error(404, "no such check or period (24h, 7d, 30d)")
        pct = view["uptime_pct"][period]
        return _svg(badges.badge(f"uptime {period}", badges.uptime_text(pct), badges.uptime_colour(pct)))

    async def latency_badge(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if (view := known(name)) is None:
            return _error(404, "no such check")
        # The p95 of the open hour; in its first minutes, before it has a run, of the one before.
        recent = [v for v in source.latency_hours(name)[-2:] if v is not None]
        if not recent:
            return _svg(badges.badge("latency p95", badges.NO_DATA, badges.GREY))
        state = view["states"].get("latency_p95_ms")
        colour = badges.BLUE if state is None else badges.STATE_COLOURS[state]
        return _svg(badges.badge("latency p95", badges.latency_text(recent[-1]), colour))

    async def alerts(request: web.Request) -> web.StreamResponse:
        state = request.query.get("state")
        if state not in (None, "resolved"):
            return _error(400, 'state: only "resolved" can be asked for (default: alerts not resolved)')
        metric = request.query.get("metric")
        count = request.query.get("count", "false")
        if count not in ("true", "false"):
            return _error(400, 'count: "true" or "false"')
        if count == "true":
            if state is not None:
                return _error(400, "count: only alerts not resolved are counted")
            return web.json_response(source.alerts_count(metric))
        since = None
        if state == "resolved":
            try:
                since = (
                    parse_time(request.query["since"], "since", source.timezone)
                    if "since" in request.query
                    else 0.0
                )
            except BadRequest as exc:
                return _error(400, str(exc))
        if state is None:  # the storm is part of what goes on now, not of the history
            answer = {"alerts": await source.alerts_view(None, metric), "storm": source.storm_view()}
            return await _json_in_slices(request, answer)
        return await _json_in_slices(request, {"alerts": await source.alerts_view(since, metric)})

    async def ack(request: web.Request) -> web.Response:
        if denied := authorize(request):
            return denied
        try:
            body = await body_of(request)
            _only_keys(body, _ACK_KEYS)
            by = None if body.get("by") is None else _text(body["by"], "by")
            comment = None if body.get("comment") is None else _text(body["comment"], "comment")
        except BadRequest as exc:
            return _error(400, str(exc))
        alert = await source.acknowledge(request.match_info["id"], by, comment)
        if alert is None:
            return _error(404, "no such alert")
        return web.json_response(alert)

    async def list_silences(_: web.Request) -> web.Response:
        return web.json_response({"silences": source.silences_view()})

    async def add_silence(request: web.Request) -> web.Response:
        if denied := authorize(request):
            return denied
        try:
            body = await body_of(request)
            _only_keys(body, _SILENCE_KEYS)
            globs = body.get("checks")
            if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
                raise BadRequest('checks: a non-empty list of check name globs, e.g. ["backend-*"]')
            for glob in globs:
                _text(glob, "checks")
            now = source.now()
            start = now if body.get("start") is None else parse_time(body["start"], "start", source.timezone)
            if "end" not in body:
                raise BadRequest("end: required")
            end = parse_time(body["end"], "end", source.timezone)
            if end <= start:
                raise BadRequest("end: must be after start")
            if end <= now:
                raise BadRequest("end: in the past")
            comment = _text(body.get("comment", ""), "comment")
        except BadRequest as exc:
            return _error(400, str(exc))
        return web.json_response(await source.add_silence(globs, start, end, comment), status=201)

    async def delete_silence(request: web.Request) -> web.Response:
        if denied := authorize(request):
            return denied
        if not await source.delete_silence(request.match_info["id"]):
            return _error(404, "no such silence")
        return web.Response(status=204)

    async def heartbeat(request: web.Request, ok: bool) -> web.Response:
        """A job reports in (SPEC 13), with its heartbeat's own token: not monitor.api_token."""
        name = request.match_info["name"]
        token = source.heartbeat_token(name)
        if token is None:
            return _error(404, "no such heartbeat check")
        given = _bearer(request)
        if given is None:
            given = request.query.get("token")
        if given is None or not _same_token(given, token):
            return _unauthorized("missing or wrong heartbeat token (bearer header or ?token=)")
        reason = None if ok else await _reason_of(request)
        at = await source.heartbeat_ping(name, ok, reason)
        return web.json_response({"check": name, "at": iso(at), "ok": ok})

    async def ping(request: web.Request) -> web.Response:
        return await heartbeat(request, ok=True)

    async def fail(request: web.Request) -> web.Response:
        return await heartbeat(request, ok=False)

    async def cluster(_: web.Request) -> web.Response:
        return web.json_response(source.cluster_view())

    async def status_page(_: web.Request) -> web.Response:
        return web.Response(
            text=await statuspage.render(source), content_type="text/html", headers=statuspage.HEADERS
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/checks", checks)
    app.router.add_get("/api/v1/checks/{name}", one_check)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/badges/{name}/status.svg", status_badge)
    app.router.add_get("/badges/{name}/uptime/{period}.svg", uptime_badge)
    app.router.add_get("/badges/{name}/latency.svg", latency_badge)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_post("/api/v1/alerts/{id}/ack", ack)
    app.router.add_get("/api/v1/silences", list_silences)
    app.router.add_post("/api/v1/silences", add_silence)
    app.router.add_delete("/api/v1/silences/{id}", delete_silence)
    app.router.add_get("/api/v1/cluster", cluster)
    for path, handler in (("/api/v1/heartbeats/{name}", ping), ("/api/v1/heartbeats/{name}/fail", fail)):
        app.router.add_post(path, handler)
        app.router.add_get(path, handler)  # `curl -fsS URL` in a crontab
    app.router.add_get("/", status_page)
    return app


_METRICS_SLICE_CHARS = 64 * 1024  # about a millisecond of rendering between two yields to the loop
_JSON_SLICE_ITEMS = 200  # list items encoded between two yields to the loop


async def _json_in_slices(request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
    """`answer` as JSON, its long lists encoded a slice at a time with the loop let run in
    between: encoding a storm's tens of thousands of alerts at once would hold up every check."""
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    parts: list[str] = []
    for i, (key, value) in enumerate(answer.items()):
        parts.append(("{" if i == 0 else ", ") + json.dumps(key) + ": ")
        if not isinstance(value, list) or len(value) <= _JSON_SLICE_ITEMS:
            parts.append(json.dumps(value))
            continue
        for start in range(0, len(value), _JSON_SLICE_ITEMS):
            items = json.dumps(value[start : start + _JSON_SLICE_ITEMS])[1:-1]
            parts.append(("[" if start == 0 else ", ") + items)
            await response.write("".join(parts).encode())
            parts.clear()
            await asyncio.sleep(0)
        parts.append("]")
    parts.append("{}" if not answer else "}")
    await response.write("".join(parts).encode())
    await response.write_eof()
    return response
