"""The HTTP interface on `monitor.listen`: /metrics, /healthz, /readyz, the JSON API, a status page."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Iterator
from datetime import datetime
from html import escape
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST


class ApiSource(Protocol):
    """What the API reads from and asks of the daemon (which implements it)."""

    def metrics_text(self) -> Iterator[str]: ...
    @property
    def api_token(self) -> str: ...
    @property
    def timezone(self) -> ZoneInfo: ...
    def now(self) -> float: ...
    def checks_view(self, history: bool = False) -> dict[str, Any]: ...
    async def ready(self) -> tuple[bool, str]: ...
    async def alerts_view(self, resolved_since: float | None) -> list[dict[str, Any]]: ...
    async def acknowledge(
        self, alert_id: str, by: str | None, comment: str | None
    ) -> dict[str, Any] | None: ...
    def silences_view(self) -> list[dict[str, Any]]: ...
    async def add_silence(
        self, checks: list[str], start: float, end: float, comment: str
    ) -> dict[str, Any]: ...
    async def delete_silence(self, silence_id: str) -> bool: ...


class BadRequest(ValueError):
    """A request body or query the API cannot take; its message is shown to the caller."""


def parse_time(value: Any, field: str, tz: ZoneInfo) -> float:
    """RFC 3339; a time without an offset is read in `monitor.timezone` (SPEC section 3)."""
    if not isinstance(value, str):
        raise BadRequest(f"{field}: expected an RFC 3339 time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{field}: invalid time {value!r}, expected RFC 3339") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz)
    return when.timestamp()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def build_app(source: ApiSource) -> web.Application:
    app = web.Application()

    def authorize(request: web.Request) -> web.Response | None:
        """403 when write endpoints are disabled (no token), 401 without the right bearer token."""
        token = source.api_token
        if not token:
            return _error(403, "write endpoints are disabled: set monitor.api_token")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            return web.json_response(
                {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
            )
        return None

    async def body_of(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = json.loads(await request.text())
        except json.JSONDecodeError as exc:
            raise BadRequest(f"invalid JSON: {exc.msg}") from None
        if not isinstance(body, dict):
            raise BadRequest("expected a JSON object")
        return body

    async def metrics(request: web.Request) -> web.StreamResponse:
        # Half a million lines and ~0.6 s of CPU at 20,000 checks: written in slices, the loop
        # starting due checks in between. (Rendered in a thread it held the GIL against the loop:
        # scheduler lag p99 154 ms.)
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

    async def alerts(request: web.Request) -> web.Response:
        state = request.query.get("state")
        if state not in (None, "resolved"):
            return _error(400, 'state: only "resolved" can be asked for (default: alerts not resolved)')
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
        return web.json_response({"alerts": await source.alerts_view(since)})

    async def ack(request: web.Request) -> web.Response:
        if denied := authorize(request):
            return denied
        try:
            body = await body_of(request)
        except BadRequest as exc:
            return _error(400, str(exc))
        by, comment = body.get("by"), body.get("comment")
        if not isinstance(by, str | None) or not isinstance(comment, str | None):
            return _error(400, "by and comment must be strings")
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
            globs = body.get("checks")
            if not isinstance(globs, list) or not globs or not all(isinstance(g, str) and g for g in globs):
                raise BadRequest('checks: a non-empty list of check name globs, e.g. ["backend-*"]')
            now = source.now()
            start = parse_time(body["start"], "start", source.timezone) if body.get("start") else now
            if "end" not in body:
                raise BadRequest("end: required")
            end = parse_time(body["end"], "end", source.timezone)
            if end <= start:
                raise BadRequest("end must be after start")
            if end <= now:
                raise BadRequest("end is in the past")
            comment = body.get("comment", "")
            if not isinstance(comment, str):
                raise BadRequest("comment must be a string")
            unknown = set(body) - {"checks", "start", "end", "comment"}
            if unknown:
                raise BadRequest(f"unknown key {sorted(unknown)[0]!r}")
        except BadRequest as exc:
            return _error(400, str(exc))
        return web.json_response(await source.add_silence(globs, start, end, comment), status=201)

    async def delete_silence(request: web.Request) -> web.Response:
        if denied := authorize(request):
            return denied
        if not await source.delete_silence(request.match_info["id"]):
            return _error(404, "no such silence")
        return web.Response(status=204)

    async def status_page(_: web.Request) -> web.Response:
        return web.Response(
            text=render_status(source.checks_view(history=True), await source.alerts_view(None)),
            content_type="text/html",
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/checks", checks)
    app.router.add_get("/api/v1/alerts", alerts)
    app.router.add_post("/api/v1/alerts/{id}/ack", ack)
    app.router.add_get("/api/v1/silences", list_silences)
    app.router.add_post("/api/v1/silences", add_silence)
    app.router.add_delete("/api/v1/silences/{id}", delete_silence)
    app.router.add_get("/", status_page)
    return app


_METRICS_SLICE_CHARS = 64 * 1024  # about a millisecond of rendering between two yields to the loop
_COLOURS = {"ok": "#2e7d32", "warning": "#ef6c00", "critical": "#c62828", "unknown": "#757575"}


def render_status(view: dict[str, Any], alerts: list[dict[str, Any]]) -> str:
    """A page an on-call engineer can read at 3 a.m.: every check, its recent runs, firing alerts."""
    rows = []
    for c in view["checks"]:
        history = "".join(
            f'<span class="run {"up" if ok else "down"}" title="{escape(t)}"></span>'
            for t, ok in c.get("history", [])
        )
        rows.append(
            "<tr>"
            f"<td>{escape(c['name'])}</td><td>{escape(c['type'])}</td>"
            f'<td><b style="color:{_COLOURS.get(c["status"], "#000")}">{escape(c["status"].upper())}</b></td>'
            f"<td>{escape(c['reason'] or '')}</td><td>{escape(str(c['last_run'] or 'never'))}</td>"
            f"<td>{history}</td><td>{escape(c['suppressed'] or '')}</td>"
            "</tr>"
        )
    firing = [
        "<tr>"
        f'<td><b style="color:{_COLOURS.get(a["severity"], "#000")}">{escape(a["severity"].upper())}</b></td>'
        f"<td>{escape(a['check'])}</td><td>{escape(a['metric'])}</td><td>{escape(a['state'])}</td>"
        f"<td>{escape(str(a['started_at']))}</td><td>{escape(a['reason'] or '')}</td>"
        f"<td>{escape(a['suppressed'] or '')}</td><td>{'yes' if a['acknowledged'] else ''}</td>"
        "</tr>"
        for a in alerts
    ]
    overall = view["status"]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
<title>monitor: {escape(overall)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }}
.run {{ display: inline-block; width: .6em; height: 1em; margin-right: 1px; }}
.up {{ background: #2e7d32; }} .down {{ background: #c62828; }}
</style></head><body>
<h1>monitor: <span style="color:{_COLOURS.get(overall, "#000")}">{escape(overall.upper())}</span></h1>
<h2>Alerts</h2>
<table><tr><th>severity</th><th>check</th><th>metric</th><th>state</th><th>since</th><th>reason</th>
<th>suppressed</th><th>acked</th></tr>
{"".join(firing) or '<tr><td colspan="8">none</td></tr>'}</table>
<h2>Checks</h2>
<table><tr><th>check</th><th>type</th><th>status</th><th>reason</th><th>last run</th>
<th>recent runs</th><th>suppressed</th></tr>
{"".join(rows)}</table>
</body></html>"""
