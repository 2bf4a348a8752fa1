"""Badges: SVG that parses, the right label and value texts, colours that follow the state, every
text escaped; 404 for an unknown check or period."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import aiohttp
import pytest

from docs.badges.render import EXAMPLES, HERE
from monitor import badges
from monitor.daemon import Daemon
from tests.fakes.clock import FakeClock
from tests.test_history_api import HOUR, START, listening, running, runs

SVG = "{http://www.w3.org/2000/svg}"


def parsed(svg: str) -> tuple[str, str, str]:
    """The label, the value and the value's colour, as a viewer draws them."""
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # each text and its shadow
    rects = list(root.iter(f"{SVG}rect"))
    label, value = texts[0], texts[2]
    assert root.find(f"{SVG}title").text == f"{label}: {value}"  # type: ignore[union-attr]
    assert label is not None and value is not None
    return label, value, rects[2].get("fill", "")


async def fetch(daemon: Daemon, path: str) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{daemon.bound_port}{path}") as resp,
    ):
        return resp.status, await resp.text(), resp.headers


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    clock = FakeClock(START)
    async with listening() as ports, running("memory", clock, ports) as started:
        await runs(started, clock, "web", 10, 60)
        await runs(started, clock, "db", 1, 60)  # failed: critical at once (trigger_after 1)
        yield started


async def badge(daemon: Daemon, path: str) -> tuple[str, str, str]:
    status, body, headers = await fetch(daemon, path)
    assert status == 200, body
    assert headers["Content-Type"] == "image/svg+xml; charset=utf-8"
    assert headers["Cache-Control"] == "max-age=60"
    return parsed(body)


async def test_status_badges_follow_the_state(daemon: Daemon) -> None:
    assert await badge(daemon, "/badges/web/status.svg") == ("web", "ok", badges.GREEN)
    assert await badge(daemon, "/badges/db/status.svg") == ("db", "critical", badges.RED)


async def test_uptime_badges(daemon: Daemon) -> None:
    for period in ("24h", "7d", "30d"):
        assert await badge(daemon, f"/badges/web/uptime/{period}.svg") == (
            f"uptime {period}",
            "100%",
            badges.GREEN,
        )
    assert await badge(daemon, "/badges/db/uptime/7d.svg") == ("uptime 7d", "0%", badges.RED)


async def test_latency_badge_is_the_p95_of_the_current_hour(daemon: Daemon) -> None:
    label, value, colour = await badge(daemon, "/badges/web/latency.svg")
    p95 = daemon.latency_hours("web")[-1]
    assert p95 is not None
    assert (label, colour) == ("latency p95", badges.BLUE)  # no latency_p95_ms row for it
    number, unit = value.split()
    assert unit == "ms" and float(number) == pytest.approx(p95, rel=0.01, abs=0.01)
    # An hour later, before a run: still the previous hour's; then none at all.
    daemon.clock.advance(HOUR)  # type: ignore[attr-defined]
    assert (await badge(daemon, "/badges/web/latency.svg"))[1] == value
    daemon.clock.advance(HOUR)  # type: ignore[attr-defined]
    assert await badge(daemon, "/badges/web/latency.svg") == ("latency p95", "no data", badges.GREY)


@pytest.mark.parametrize(
    "path",
    [
        "/badges/nope/status.svg",
        "/badges/nope/uptime/7d.svg",
        "/badges/web/uptime/1y.svg",
        "/badges/nope/latency.svg",
    ],
    ids=["status", "uptime", "period", "latency"],
)
async def test_unknown_check_or_period_is_404(daemon: Daemon, path: str) -> None:
    status, body, headers = await fetch(daemon, path)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json") and '"error"' in body


@pytest.mark.parametrize(
    ("pct", "text", "colour"),
    [
        (100.0, "100%", badges.GREEN),
        (99.95, "99.95%", badges.GREEN),
        (99.999, "99.99%", badges.GREEN),
        (99.5, "99.5%", badges.YELLOW_GREEN),
        (97.0, "97%", badges.YELLOW),
        (50.0, "50%", badges.RED),
        (None, "no data", badges.GREY),
    ],
)
def test_uptime_texts_and_colours(pct: float | None, text: str, colour: str) -> None:
    assert (badges.uptime_text(pct), badges.uptime_colour(pct)) == (text, colour)


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0.412, "0.41 ms"), (12.44, "12.4 ms"), (123.4, "123 ms"), (2345.0, "2.35 s"), (None, "no data")],
)
def test_latency_texts(ms: float | None, text: str) -> None:
    assert badges.latency_text(ms) == text


def test_every_text_is_escaped() -> None:
    svg = badges.badge('<a href="x">&', "it's </text><script>", '"red')
    label, value, colour = parsed(svg)
    assert (label, value, colour) == ('<a href="x">&', "it's </text><script>", '"red')
    assert "<script>" not in svg


def test_the_readmes_badges_are_what_the_code_draws() -> None:
    for name, svg in EXAMPLES.items():
        assert (HERE / name).read_text(encoding="utf-8") == svg, (
            f"docs/badges/{name}: run docs/badges/render.py"
        )
