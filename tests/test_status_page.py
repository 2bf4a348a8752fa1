"""The status page (SPEC 15) and the storm in `GET /api/v1/alerts` (SPEC 12): an in-process daemon
on loopback with real targets, some refusing, read back as an HTML tree."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from importlib import resources
from typing import Any

import aiohttp
import jsonschema
import pytest
from prometheus_client import CollectorRegistry

from monitor import statuspage
from monitor.config import ConfigError, config_schema, parse_config
from monitor.daemon import Daemon
from monitor.statuspage import relative, sparkline

TOKEN = "page-test-token"
DOC: dict[str, Any] = json.loads(resources.files("monitor").joinpath("openapi.json").read_text())

# A day of runs as the run history reports it: a gap (no runs), an hour alone, then every hour.
LATENCY: list[float | None] = [None, None, 30.0, None, *(20.0 + i for i in range(19)), 60.0]
UPTIME = {"24h": 99.5, "7d": 99.95, "30d": 99.996}


class HistoryDaemon(Daemon):
    """A daemon whose run history answers for `history` checks as a day of their runs would; the
    others get the daemon's own answer."""

    history: frozenset[str] = frozenset()

    def uptime_pct(self, name: str) -> dict[str, float | None]:
        return dict(UPTIME) if name in self.history else super().uptime_pct(name)

    def latency_hours(self, name: str) -> list[float | None]:
        return list(LATENCY) if name in self.history else super().latency_hours(name)


# ---------------------------------------------------------------- the page as a tree

_VOID = {"meta", "link", "br", "img", "input", "hr", "source", "wbr", "col"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    def text(self) -> str:
        parts = [c if isinstance(c, str) else c.text() for c in self.children]
        return " ".join(" ".join(parts).split())

    def all(self, tag: str | None = None, cls: str | None = None) -> list[Node]:
        """Descendants with that tag and/or class, in document order."""
        found = []
        for child in self.children:
            if isinstance(child, Node):
                if (tag is None or child.tag == tag) and (cls is None or cls in child.classes):
                    found.append(child)
                found += child.all(tag, cls)
        return found

    def one(self, tag: str | None = None, cls: str | None = None) -> Node:
        (node,) = self.all(tag, cls)
        return node

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements"
    return builder.root


def groups(page: Node) -> dict[str, Node]:
    """Each check group's section, by its heading's name."""
    found = {}
    for section in page.all("section", "card"):
        heading = section.one("h2")
        if heading.all("span", "dot"):
            found[heading.children[1].strip()] = section  # type: ignore[union-attr]
    return found


def check_rows(section: Node) -> dict[str, Node]:
    return {row.one("div", "name").text(): row for row in section.all("tr") if row.all("div", "name")}


# ---------------------------------------------------------------- a daemon on loopback


@pytest.fixture
def ports() -> Iterator[tuple[int, int]]:
    """(a port that accepts, a port that refuses)."""
    with socket.socket() as listening, socket.socket() as closed:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        yield listening.getsockname()[1], closed.getsockname()[1]


def tcp_check(name: str, port: int, labels: str = "", extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        [[checks]]
        name = "{name}"
        type = "tcp"
        host = "127.0.0.1"
        port = {port}
        interval = "0.2s"
        timeout = "0.1s"
        {f"labels = {labels}" if labels else ""}
        {extra}
        """
    )


@contextlib.asynccontextmanager
async def running(toml: str, history: frozenset[str] = frozenset()) -> AsyncIterator[HistoryDaemon]:
    head = f'[monitor]\nlisten = "127.0.0.1:0"\nstate = "memory"\napi_token = "{TOKEN}"\n'
    daemon = HistoryDaemon(parse_config(head + toml, {}), registry=CollectorRegistry())
    daemon.history = history
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


async def call(
    daemon: Daemon, method: str, path: str, body: object = None, data: bytes | None = None
) -> tuple[int, Any, Mapping[str, str]]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(
            method,
            f"http://127.0.0.1:{daemon.bound_port}{path}",
            json=body,
            data=data,
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as resp,
    ):
        text = await resp.text()
        parsed = json.loads(text) if resp.content_type == "application/json" else text
        return resp.status, parsed, resp.headers


async def until(daemon: Daemon, path: str, accept: Callable[[Any], bool], timeout_s: float = 15) -> Any:
    """GET `path` until `accept(body)`; fails with the last body seen."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, body, _ = await call(daemon, "GET", path)
        if accept(body):
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


def firing(*names: str) -> Callable[[Any], bool]:
    return lambda body: {a["check"] for a in body["alerts"] if a["state"] == "firing"} >= set(names)


def _iso(dt: datetime) -> str:
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- what the page shows


async def test_every_check_in_its_group_with_state_uptime_latency_rows_and_covers(
    ports: tuple[int, int],
) -> None:
    up, refused = ports
    now = datetime.now(UTC)
    toml = (
        textwrap.dedent(
            f"""\
            [status_page]
            title = "Ops board"
            group_by = "team"

            [[maintenance]]
            name = "db-upgrade"
            checks = ["batch"]
            start = "{_iso(now - timedelta(hours=1))}"
            end = "{_iso(now + timedelta(hours=2))}"

            [[maintenance]]
            name = "nightly"
            checks = ["web-*"]
            cron = "0 3 * * *"
            duration = "1h"
            """
        )
        + tcp_check(
            "web-ok",
            up,
            '{ team = "web" }',
            "thresholds = { latency_ms = { warning = 0.0001, critical = 60000 } }",
        )
        + tcp_check("web-down", refused, '{ team = "web" }')
        + tcp_check("db", refused, '{ team = "data" }')
        + tcp_check("batch", refused)
    )
    async with running(toml, history=frozenset({"web-ok"})) as daemon:
        end = _iso(now + timedelta(hours=1))
        status, silence, _ = await call(
            daemon, "POST", "/api/v1/silences", {"checks": ["db"], "end": end, "comment": "failover drill"}
        )
        assert status == 201
        alerts = await until(daemon, "/api/v1/alerts", firing("web-down", "db", "batch"))
        assert alerts["storm"] is None  # three checks down: below the default storm guard
        web_down = next(a for a in alerts["alerts"] if a["check"] == "web-down")
        assert (await call(daemon, "POST", f"/api/v1/alerts/{web_down['id']}/ack", {"by": "alice"}))[0] == 200
        checks = await until(
            daemon,
            "/api/v1/checks",
            lambda b: {c["name"]: c["status"] for c in b["checks"]}["web-ok"] == "warning",
        )
        status, html, headers = await call(daemon, "GET", "/")

    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "script-src 'sha256-" in headers["Content-Security-Policy"]
    page = parse(html)
    assert page.one("head").one("title").text() == "Ops board: critical"
    assert page.one("h1").text() == "Ops board"

    by_group = groups(page)
    assert list(by_group) == ["data", "web", "other"]  # by name, checks without the label last
    assert {g: list(check_rows(s)) for g, s in by_group.items()} == {
        "data": ["db"],
        "web": ["web-down", "web-ok"],  # worst first
        "other": ["batch"],
    }
    rows = {name: row for s in by_group.values() for name, row in check_rows(s).items()}
    pills = {name: row.one("span", "pill").text() for name, row in rows.items()}
    assert pills == {"db": "critical", "web-down": "critical", "web-ok": "warning", "batch": "critical"}
    assert rows["db"].one("div", "reason").text() == "connection refused"
    assert rows["web-ok"].one("div", "meta").text() == f"tcp · 127.0.0.1:{up}"

    # Uptime and latency from the run history: "db" has only failed (0 %, no latency line).
    assert [th.text() for th in by_group["web"].all("th", "u")] == ["uptime 24h", "7d", "30d"]
    uptime = [td.text() for td in rows["web-ok"].all("td", "u")]
    assert uptime == ["99.50%", "99.95%", "99.99%"]  # rounded down: never 100 % too soon
    assert [td.text() for td in rows["db"].all("td", "u")] == ["0.00%", "0.00%", "0.00%"]
    svg = rows["web-ok"].one("svg")
    assert svg.one("title").text() == "p95 latency per hour, last 24 h: 20 to 60 ms"
    assert svg.one("path").attrs["d"] == sparkline(LATENCY).path and len(svg.all("circle")) == 1
    assert rows["web-ok"].one("span", "last").text() == "60 ms"
    empty = rows["db"].one("svg")
    assert [p.attrs["class"] for p in empty.all("path")] == ["none"]  # a dashed floor, no line
    assert rows["db"].one("span", "last").text() == "—"

    # Threshold rows: the current value next to warning and critical, in the row's state.
    latency_row = next(d for d in rows["web-ok"].one("td", "rows").all("div") if "latency_ms" in d.text())
    value = next(c for c in checks["checks"] if c["name"] == "web-ok")["samples"]["latency_ms"]
    assert latency_row.classes == ["r-warning"]
    assert latency_row.one("b").text() == statuspage._num(value)
    assert [s.text() for s in latency_row.all("span")] == ["warn > 0.0001", "crit > 60,000"]
    up_row = rows["db"].one("td", "rows").one("div")
    assert up_row.classes == ["r-critical"] and up_row.text() == "up 0 crit < 1"

    # What covers a check now: the maintenance window, the silence.
    batch_tag = rows["batch"].one("span", "t-maintenance")
    assert batch_tag.text().startswith("maintenance: db-upgrade, until in ")
    assert batch_tag.one("time").attrs["datetime"] == _iso(now + timedelta(hours=2))
    silence_tag = rows["db"].one("span", "t-silence")
    assert silence_tag.text().startswith("silence: failover drill, until in ")
    assert silence_tag.attrs["title"] == f"silence {silence['id']}"
    assert rows["web-down"].all("span", "tag") == []

    # Firing alerts at the top, by check: critical before warning, acknowledged ones last.
    alert_rows = [r for r in page.all("section")[0].all("tr") if r.all("td")]
    shown = [(r.all("td")[1].text(), r.one("span", "pill").text(), "acked" in r.classes) for r in alert_rows]
    assert sorted(shown[:2]) == [("batch", "critical", False), ("db", "critical", False)]
    assert shown[2:] == [("web-ok", "warning", False), ("web-down", "critical", True)]
    by_check = {name: row for (name, _, _), row in zip(shown, alert_rows, strict=True)}
    assert by_check["db"].one("td", "rows").text() == "up 0 / 1 held back: silence"
    assert by_check["web-down"].one("td", "rows").text() == "up 0 / 1 acknowledged"
    assert by_check["web-ok"].one("td", "rows").text().startswith("latency_ms ")
    assert by_check["db"].one("td", "reason").text() == "connection refused"

    # Upcoming maintenance: the one in progress first, then the nightly one.
    windows = page.one("ul", "windows").all("li")
    assert windows[0].text().startswith("db-upgrade (batch): in progress, ends in ")
    assert windows[1].text().startswith("nightly (web-*): starts in ")
    assert page.all("section", "storm") == []

    # Every time is relative, with the exact time on hover and RFC 3339 for machines.
    times = page.all("time")
    assert len(times) >= 10
    for t in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", t.attrs["datetime"]), t.attrs
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", t.attrs["title"]), t.attrs
        assert re.fullmatch(r"just now|(in )?\d+ (s|min|h|d)( ago)?", t.text()), t.text()


async def test_every_value_is_escaped() -> None:
    label = '<script>window.pwned="label"</script>'
    toml = textwrap.dedent(
        f"""\
        [status_page]
        title = "<b>Ops</b> & co"
        [[checks]]
        name = "nightly-backup"
        type = "heartbeat"
        period = "1d"
        interval = "0.2s"
        timeout = "0.1s"
        token = "{TOKEN}"
        labels = {{ team = '{label}' }}
        """
    )
    reason = '<script>window.pwned="reason"</script><img src=x onerror="window.pwned=1">'
    comment = "<script>window.pwned='comment'</script>"
    async with running(toml) as daemon:
        status, _, _ = await call(
            daemon, "POST", "/api/v1/heartbeats/nightly-backup/fail", data=reason.encode()
        )
        assert status == 200
        end = _iso(datetime.now(UTC) + timedelta(hours=1))
        body = {"checks": ["nightly-*"], "end": end, "comment": comment}
        assert (await call(daemon, "POST", "/api/v1/silences", body))[0] == 201
        await until(
            daemon, "/api/v1/checks", lambda b: "failure reported" in (b["checks"][0]["reason"] or "")
        )
        _, html, _ = await call(daemon, "GET", "/")

    page = parse(html)
    assert [s.text() for s in page.all("script")] == [statuspage.REFRESH_SCRIPT]
    assert page.all("img") == [] and page.one("h1").children == ["<b>Ops</b> & co"]
    (row,) = check_rows(groups(page)[label]).values()
    assert row.one("div", "reason").text() == f"failure reported: {reason}"
    assert row.one("span", "t-silence").text().startswith(f"silence: {comment}, until")
    assert "&lt;script&gt;window.pwned" in html and "<script>window" not in html


async def test_a_storm_in_the_alerts_api_and_at_the_top_of_the_page(ports: tuple[int, int]) -> None:
    _, refused = ports
    names = [f"svc-{i:02}" for i in range(22)]
    toml = '[alerts]\nstorm = { checks = 2, window = "1m" }\n' + "".join(tcp_check(n, refused) for n in names)
    async with running(toml) as daemon:
        body = await until(
            daemon, "/api/v1/alerts", lambda b: b["storm"] is not None and b["storm"]["checks"] == 22
        )
        _, html, _ = await call(daemon, "GET", "/")
        _, history, _ = await call(daemon, "GET", "/api/v1/alerts?state=resolved")

    schema = DOC["paths"]["/api/v1/alerts"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"
    ]
    jsonschema.validate(body, {**schema, "components": DOC["components"]})
    storm = body["storm"]
    assert len(storm["first"]) == 20 and set(storm["first"]) < set(names)
    started = datetime.fromisoformat(storm["started_at"])
    assert abs(started.timestamp() - time.time()) < 30
    assert "storm" not in history  # the history lists resolved alerts only

    page = parse(html)
    banner = page.one("main").all("section")[0]
    assert banner.classes == ["storm"] and banner.attrs["role"] == "alert"
    assert banner.one("h2").text().startswith("Storm: 22 checks down since ")
    assert banner.one("time").attrs["datetime"] == storm["started_at"][:19] + "Z"
    assert banner.one("p").text().endswith(", ".join(storm["first"]) + " and 2 more")


async def test_the_page_stays_under_300_kb_at_200_checks(ports: tuple[int, int]) -> None:
    """The worst case: every check down (200 firing alerts, a storm), a full day of history each."""
    _, refused = ports
    names = [f"payments-service-{i:03}-eu-west" for i in range(200)]
    toml = (
        "[thresholds.latency_p95_ms]\nwarning = 500\ncritical = 1000\n"
        + "[thresholds.error_rate_pct]\nwarning = 1\ncritical = 5\n"
        + "".join(tcp_check(n, refused, f'{{ team = "team-{i % 10}" }}') for i, n in enumerate(names))
    )
    async with running(toml, history=frozenset(names)) as daemon:
        every = {(n, m) for n in names for m in ("up", "error_rate_pct")}

        def all_firing(body: Any) -> bool:
            return {(a["check"], a["metric"]) for a in body["alerts"] if a["state"] == "firing"} >= every

        alerts = await until(daemon, "/api/v1/alerts", all_firing, timeout_s=30)
        _, html, _ = await call(daemon, "GET", "/")

        # The loop is given back while the page is built and rendered: a task that only counts
        # its turns gets some in the middle of it.
        turns = 0

        async def count() -> None:
            nonlocal turns
            while True:
                await asyncio.sleep(0)
                turns += 1

        counter = asyncio.create_task(count())
        await asyncio.sleep(0)
        started, rendered = turns, await statuspage.render(daemon)
        counter.cancel()
        assert turns - started >= 10 and len(rendered) > 100_000
    size = len(html.encode())
    page = parse(html)
    assert sum(len(check_rows(s)) for s in groups(page).values()) == 200
    alerts_part = page.all("section")[1]
    assert alerts_part.one("h2").text() == f"Firing alerts {len(alerts['alerts'])}"
    shown = [r for r in alerts_part.all("tr") if r.all("td")]
    assert len(shown) == statuspage.ALERT_ROWS and all(len(r.all("td")[2].all("div")) == 2 for r in shown)
    assert (
        alerts_part.one("p").text().startswith(f"and {200 - statuspage.ALERT_ROWS} more checks with firing")
    )
    assert size < 300 * 1024, size


# ---------------------------------------------------------------- the page model's parts


def test_a_sparkline_breaks_at_hours_without_runs_and_scales_to_the_highest() -> None:
    line = sparkline(LATENCY)
    (segment,) = line.path.split("M")[1:]  # the lone hour 2 is a dot, hours 4 to 23 one line
    points = [tuple(map(int, p.split(","))) for p in segment.split()]
    assert [x for x, _ in points] == [2 + 5 * hour for hour in range(4, 24)]
    assert points[-1] == (117, 2)  # the highest hour at the top, the last at the right edge
    assert points[0] == (22, round(24 - 20 / 60 * 22))  # 20 ms of 60, above the floor at 24
    assert line.dots == ((12, 13),)  # 30 ms: half way up
    assert line.last == "60 ms" and line.title == "p95 latency per hour, last 24 h: 20 to 60 ms"
    assert sparkline([None] * 24) == statuspage.Sparkline("", (), "no latency recorded in the last 24 h", "—")
    flat = sparkline([0.0] * 24)
    assert flat.path.startswith("M2,24 7,24 ") and flat.last == "0 ms"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-3, "just now"),
        (-42, "42 s ago"),
        (-180, "3 min ago"),
        (-7300, "2 h ago"),
        (7100, "in 2 h"),
        (-3 * 86400, "3 d ago"),
        (600, "in 10 min"),
    ],
    ids=["now", "seconds", "minutes", "hours", "future-hours", "days", "future-minutes"],
)
def test_relative_times(seconds: float, shown: str) -> None:
    assert relative(seconds) == shown


# ---------------------------------------------------------------- [status_page]


def test_status_page_config_defaults_and_schema() -> None:
    config = parse_config("")
    assert (config.status_page.title, config.status_page.group_by) == ("monitor", "team")
    given = parse_config('[status_page]\ntitle = "Payments"\ngroup_by = "service"\n')
    assert (given.status_page.title, given.status_page.group_by) == ("Payments", "service")
    props = config_schema()["$defs"]["StatusPageConfig"]["properties"]
    assert props["title"]["default"] == "monitor" and props["group_by"]["default"] == "team"
    assert config_schema()["$defs"]["StatusPageConfig"]["additionalProperties"] is False


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('title = ""', "status_page.title: String should have at least 1 character"),
        ("title = 3", "status_page.title: Input should be a valid string"),
        ('group_by = ""', "status_page.group_by: String should have at least 1 character"),
        ('colour = "red"', "status_page.colour: unknown key"),
    ],
    ids=["empty-title", "number-title", "empty-group-by", "unknown-key"],
)
def test_status_page_config_errors_name_the_key(toml: str, error: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f"[status_page]\n{toml}\n")
    assert exc.value.errors == [error]
