"""The HTTP interface on `monitor.listen`: /metrics, /healthz, /readyz and the JSON API."""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


class ApiSource(Protocol):
    """What the API reads from the daemon (which implements it)."""

    registry: CollectorRegistry

    def checks_view(self) -> dict[str, Any]: ...
    async def ready(self) -> tuple[bool, str]: ...


def build_app(source: ApiSource) -> web.Application:
    app = web.Application()

    async def metrics(_: web.Request) -> web.Response:
        # Rendering thousands of series is CPU work; it stays on the loop but is bounded by N checks.
        body = generate_latest(source.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        # Answering at all is the proof: a blocked loop answers nothing and the probe times out.
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok, why = await source.ready()
        return web.json_response({"status": "ready" if ok else why}, status=200 if ok else 503)

    async def checks(_: web.Request) -> web.Response:
        return web.json_response(source.checks_view())

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/checks", checks)
    return app
