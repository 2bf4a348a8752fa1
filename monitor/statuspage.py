"""The status page (`GET /`, SPEC 15): what the API source knows, as a page model, rendered by Jinja2."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from alerts.windows import matches, next_occurrence
from monitor.config import Config
from monitor.models import STATUS_RANK, Status

UPTIME_SPANS = ("24h", "7d", "30d")
OTHER_GROUP = "other"  # the group of checks without the `group_by` label
# Checks whose firing alerts are listed at the top; more are counted: in a mass outage a wall of
# rows reads no faster than the groups below, which show every check's state anyway.
ALERT_ROWS = 50
_SLICE_CHECKS = 50  # checks put in the page model between two yields to the event loop
_SLICE_CHARS = 16 * 1024  # HTML rendered between two yields: a few milliseconds
_SPARK_W, _SPARK_H, _SPARK_PAD = 119, 26, 2  # the sparkline's viewBox: 24 hours 5 units apart
_DIRECTION_SIGN = {"above": ">", "below": "<"}
# The tab's icon: a dot in the overall state's colour (inline, so no /favicon.ico request).
FAVICON_COLOURS = {"ok": "#18794e", "warning": "#a65b00", "critical": "#c4262e", "unknown": "#5f6874"}

# The one script: a reload every 30 s. The page works without it; the CSP lets only it run, so a
# value that escaped escaping still could not execute.
REFRESH_SCRIPT = "setTimeout(function(){location.reload()},30000)"
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(REFRESH_SCRIPT.encode()).digest()).decode()
HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-{_SCRIPT_HASH}'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-store",
}


class PageSource(Protocol):
    """What the page reads (the daemon, through the API's source)."""

    @property
    def config(self) -> Config: ...
    def now(self) -> float: ...
    def checks_view(self) -> dict[str, Any]: ...
    async def alerts_view(self, resolved_since: float | None) -> list[dict[str, Any]]: ...
    def silences_view(self) -> list[dict[str, Any]]: ...
    def storm_view(self) -> dict[str, Any] | None: ...
    def uptime_pct(self, name: str) -> dict[str, float | None]: ...
    def latency_hours(self, name: str) -> list[float | None]: ...


# ---------------------------------------------------------------- the page model


@dataclass(frozen=True, slots=True)
class When:
    """A time as shown: relative ("3 min ago"), exact on hover, RFC 3339 for machines."""

    iso: str
    exact: str
    relative: str


@dataclass(frozen=True, slots=True)
class Sparkline:
    """A check's hourly p95 latency over 24 h as SVG path data (gaps: hours without runs)."""

    path: str
    dots: tuple[tuple[int, int], ...]  # hours with runs between two hours without
    title: str
    last: str


@dataclass(frozen=True, slots=True)
class RowView:
    """One threshold row: its current value next to warning and critical."""

    metric: str
    value: str
    warning: str | None
    critical: str | None
    state: str


@dataclass(frozen=True, slots=True)
class Cover:
    """A maintenance window or silence covering a check now."""

    kind: str
    text: str
    until: When
    note: str


@dataclass(frozen=True, slots=True)
class CheckView:
    name: str
    type: str
    target: str
    status: str
    reason: str | None
    suppressed: str | None  # why alerts are held back when no window or silence says it
    last_run: When | None
    uptime: tuple[tuple[str, str], ...]
    sparkline: Sparkline
    rows: tuple[RowView, ...]
    covers: tuple[Cover, ...]


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    checks: tuple[CheckView, ...]
    counts: dict[str, int]
    status: str


@dataclass(frozen=True, slots=True)
class AlertView:
    """One firing alert of a check: its row, value against threshold, where it stands."""

    metric: str
    severity: str
    value: str
    threshold: str
    acknowledged: bool
    suppressed: str | None


@dataclass(frozen=True, slots=True)
class CheckAlerts:
    """A check's firing alerts in one line: one broken thing, one row (a down check's other rows
    fire with it)."""

    check: str
    severity: str
    since: When
    reason: str | None
    runbook: str | None
    acknowledged: bool  # every one of them
    alerts: tuple[AlertView, ...]


@dataclass(frozen=True, slots=True)
class WindowView:
    name: str
    checks: str
    start: When
    end: When
    active: bool


@dataclass(frozen=True, slots=True)
class StormView:
    checks: int
    since: When
    first: tuple[str, ...]
    more: int


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    status: str
    counts: dict[str, int]
    updated: When
    storm: StormView | None
    firing: int
    alerts: tuple[CheckAlerts, ...]
    more_alerts: int  # checks with firing alerts beyond ALERT_ROWS
    maintenance: tuple[WindowView, ...]
    groups: tuple[Group, ...]


# ---------------------------------------------------------------- building it


async def page_model(source: PageSource) -> Page:
    config, now = source.config, source.now()
    tz = ZoneInfo(config.monitor.timezone)
    view = source.checks_view()
    labels = {c.name: c.labels for c in config.checks}
    windows = [
        (w, occurrence) for w in config.maintenance if (occurrence := next_occurrence(w, now, tz)) is not None
    ]
    silences = [(s, _ts(s["start"]), _ts(s["end"])) for s in source.silences_view() if _ts(s["start"]) <= now]
    group_by = config.status_page.group_by
    grouped: dict[str, list[CheckView]] = {}
    for i, check in enumerate(view["checks"]):
        if i and i % _SLICE_CHECKS == 0:
            await asyncio.sleep(0)  # due checks start between slices of a long page
        name = check["name"]
        covers = [
            Cover("maintenance", w.name, _when(end, now, tz), f"maintenance window {w.name}")
            for w, (start, end) in windows
            if start <= now < end and matches(name, w.checks)
        ] + [
            Cover("silence", s["comment"] or "silenced", _when(end, now, tz), f"silence {s['id']}")
            for s, _, end in silences
            if matches(name, s["checks"])
        ]
        suppressed = check["suppressed"]
        grouped.setdefault(labels.get(name, {}).get(group_by) or OTHER_GROUP, []).append(
            CheckView(
                name=name,
                type=check["type"],
                target=check["target"],
                status=check["status"],
                reason=check["reason"],
                suppressed=None if suppressed in ("maintenance", "silence") else suppressed,
                last_run=None if check["last_run"] is None else _when(_ts(check["last_run"]), now, tz),
                uptime=tuple((span, _percent(p)) for span, p in _uptimes(source, name)),
                sparkline=sparkline(source.latency_hours(name)),
                rows=_rows(check, config),
                covers=tuple(covers),
            )
        )
    groups = tuple(
        _group(name, checks)
        for name, checks in sorted(grouped.items(), key=lambda g: (g[0] == OTHER_GROUP, g[0]))
    )
    alerts = _alerts(await source.alerts_view(None), now, tz)
    return Page(
        title=config.status_page.title,
        status=view["status"],
        counts=_counts(c for g in groups for c in g.checks),
        updated=_when(now, now, tz),
        storm=_storm(source.storm_view(), now, tz),
        firing=sum(len(a.alerts) for a in alerts),
        alerts=alerts[:ALERT_ROWS],
        more_alerts=max(0, len(alerts) - ALERT_ROWS),
        maintenance=tuple(
            WindowView(w.name, ", ".join(w.checks), _when(s, now, tz), _when(e, now, tz), s <= now)
            for w, (s, e) in sorted(windows, key=lambda item: item[1])
        ),
        groups=groups,
    )


def _uptimes(source: PageSource, name: str) -> list[tuple[str, float | None]]:
    pct = source.uptime_pct(name)
    return [(span, pct.get(span)) for span in UPTIME_SPANS]


def _rows(check: dict[str, Any], config: Config) -> tuple[RowView, ...]:
    """The rows that applied to the check's runs, in the table's order."""
    samples, states = check["samples"], check["states"]
    rows = []
    for metric, row in config.rows_for(check["name"]).items():
        if metric not in states:
            continue
        sign = _DIRECTION_SIGN[row.direction]
        value = samples.get(metric)
        rows.append(
            RowView(
                metric=metric,
                value="—" if value is None else _num(value),
                warning=None if row.warning is None else f"{sign} {_num(row.warning)}",
                critical=None if row.critical is None else f"{sign} {_num(row.critical)}",
                state=states[metric],
            )
        )
    return tuple(rows)


def _counts(checks: Any) -> dict[str, int]:
    counts = dict.fromkeys((s.value for s in Status), 0)
    for check in checks:
        counts[check.status] += 1
    return counts


def _group(name: str, checks: list[CheckView]) -> Group:
    """Worst first within a group, then by name: what needs a look is at the top."""
    checks.sort(key=lambda c: (-STATUS_RANK[Status(c.status)], c.name))
    worst = max((Status(c.status) for c in checks), key=STATUS_RANK.__getitem__)
    return Group(name, tuple(checks), _counts(checks), worst.value)


_SEVERITY_RANK = {"critical": 0, "warning": 1}


def _alerts(alerts: list[dict[str, Any]], now: float, tz: ZoneInfo) -> tuple[CheckAlerts, ...]:
    """Firing alerts by check: checks with an alert nobody acknowledged first, critical before
    warning, the longest firing first."""
    by_check: dict[str, list[dict[str, Any]]] = {}
    for alert in alerts:
        if alert["state"] == "firing":
            by_check.setdefault(alert["check"], []).append(alert)
    rows = []
    for check, found in by_check.items():
        found.sort(key=lambda a: (a["acknowledged"], _SEVERITY_RANK.get(a["severity"], 2), a["started_at"]))
        first = found[0]
        runbook = first["runbook"] or ""
        rows.append(
            CheckAlerts(
                check=check,
                severity=first["severity"],
                since=_when(min(_ts(a["started_at"]) for a in found), now, tz),
                reason=first["reason"],
                runbook=runbook if runbook.startswith(("https://", "http://")) else None,
                acknowledged=first["acknowledged"],
                alerts=tuple(
                    AlertView(
                        metric=a["metric"],
                        severity=a["severity"],
                        value="—" if a["value"] is None else _num(a["value"]),
                        threshold="—" if a["threshold"] is None else _num(a["threshold"]),
                        acknowledged=a["acknowledged"],
                        suppressed=a["suppressed"],
                    )
                    for a in found
                ),
            )
        )
    rows.sort(key=lambda r: (r.acknowledged, _SEVERITY_RANK.get(r.severity, 2), r.since.iso, r.check))
    return tuple(rows)


def _storm(storm: dict[str, Any] | None, now: float, tz: ZoneInfo) -> StormView | None:
    if storm is None:
        return None
    first = tuple(storm["first"])
    return StormView(
        storm["checks"], _when(_ts(storm["started_at"]), now, tz), first, storm["checks"] - len(first)
    )


def sparkline(hours: list[float | None]) -> Sparkline:
    """Hourly p95 latencies (oldest first, None for an hour without runs) as SVG path data on a
    scale from 0 to the highest hour."""
    known = [v for v in hours if v is not None]
    if not known:
        return Sparkline("", (), "no latency recorded in the last 24 h", "—")
    top = max(known) or 1.0
    step = (_SPARK_W - 2 * _SPARK_PAD) / max(len(hours) - 1, 1)

    def point(i: int, v: float) -> tuple[int, int]:
        x = _SPARK_PAD + i * step
        # Whole units: one is a pixel at the drawn size, finer only lengthens the page.
        return round(x), round(_SPARK_H - _SPARK_PAD - v / top * (_SPARK_H - 2 * _SPARK_PAD))

    segments: list[list[tuple[int, int]]] = [[]]
    for i, v in enumerate(hours):
        if v is None:
            if segments[-1]:
                segments.append([])
        else:
            segments[-1].append(point(i, v))
    # "M x,y x,y ...": the points after a moveto are linetos (SVG paths), which keeps it short.
    path = "".join("M" + " ".join(f"{x},{y}" for x, y in seg) for seg in segments if len(seg) > 1)
    dots = tuple(seg[0] for seg in segments if len(seg) == 1)
    title = f"p95 latency per hour, last 24 h: {_num(min(known))} to {_num(max(known))} ms"
    last = next((v for v in reversed(hours) if v is not None), None)
    return Sparkline(path, dots, title, "—" if last is None else f"{_num(last)} ms")


# ---------------------------------------------------------------- formatting


def _ts(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _when(ts: float, now: float, tz: ZoneInfo) -> When:
    local = datetime.fromtimestamp(ts, tz)
    return When(
        iso=datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        exact=local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        relative=relative(ts - now),
    )


def relative(seconds: float) -> str:
    """`-180` -> "3 min ago", `7100` -> "in 2 h": to the nearest unit."""
    span = abs(seconds)
    if span < 10:
        return "just now"
    if span < 60:
        amount = f"{span:.0f} s"
    elif span < 90 * 60:
        amount = f"{span / 60:.0f} min"
    elif span < 48 * 3600:
        amount = f"{span / 3600:.0f} h"
    else:
        amount = f"{span / 86400:.0f} d"
    return f"in {amount}" if seconds > 0 else f"{amount} ago"


def _num(value: float) -> str:
    """Short and exact enough to read: 48.2, 0.0523, 1,235."""
    if abs(value) >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def _percent(value: float | None) -> str:
    """Rounded down: 99.996 % is not shown as 100 %."""
    if value is None:
        return "—"
    if value >= 100:
        return "100%"
    return f"{math.floor(value * 100) / 100:.2f}%"


# ---------------------------------------------------------------- rendering

_ENV = Environment(
    loader=PackageLoader("monitor", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATE = _ENV.get_template("status.html")  # read at import: no file read on the event loop


def render_page(page: Page) -> Iterator[str]:
    """The page's HTML in pieces, as the template produces them."""
    return _TEMPLATE.generate(
        page=page,
        script=Markup(REFRESH_SCRIPT),
        spark=(_SPARK_W, _SPARK_H),
        uptime_spans=UPTIME_SPANS,
        favicon=FAVICON_COLOURS[page.status],
    )


async def render(source: PageSource) -> str:
    """The page's HTML, built and rendered in slices: at hundreds of checks it is a few hundred
    kilobytes, and the event loop runs due checks in between."""
    parts: list[str] = []
    size = 0
    for part in render_page(await page_model(source)):
        parts.append(part)
        size += len(part)
        if size >= _SLICE_CHARS:
            size = 0
            await asyncio.sleep(0)
    return "".join(parts)
