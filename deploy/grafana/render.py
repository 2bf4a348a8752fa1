#!/usr/bin/env python3
"""Draws deploy/grafana/monitor.json's panels with matplotlib from a live Prometheus' query results.

Grafana does not run everywhere (it is not in Debian, and CI has no image registry), so this
draws the dashboard's own panels, at their grid positions, from the same PromQL through
Prometheus' HTTP API:

    python deploy/grafana/render.py --prometheus http://127.0.0.1:9090 --out dashboard.png

`--demo MINUTES` makes the data first, as deploy/grafana/dashboard.png was made: loopback targets
(steady, slow, flaky, one that goes down for a while), `monitor run` checking them every few
seconds and notifying a loopback webhook, and the Debian `prometheus` binary scraping it with
deploy/prometheus/prometheus.yml's `monitor` job and rules. Needs matplotlib and PyYAML.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: files only
import matplotlib.dates as mdates
import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

HERE = Path(__file__).resolve().parent
DEPLOY = HERE.parent
# Grafana's dark theme, so the picture looks like what users will see.
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = {"green": "#73bf69", "red": "#f2495c", "orange": "#ff9830", "yellow": "#fade2a"}
PALETTE = [
    "#7eb26d",
    "#eab839",
    "#6ed0e0",
    "#ef843c",
    "#e24d42",
    "#1f78c1",
    "#ba43a9",
    "#705da0",
    "#508642",
    "#cca300",
]
# Series whose meaning has a colour: results, outcomes, severities.
NAMED = {
    "success": COLORS["green"],
    "sent": COLORS["green"],
    "p50": COLORS["green"],
    "failure": COLORS["red"],
    "failed": COLORS["red"],
    "critical": COLORS["red"],
    "timeout": COLORS["orange"],
    "retry": COLORS["orange"],
    "warning": COLORS["orange"],
    "p99": COLORS["yellow"],
    "error": "#b877d9",
    "skipped": "#8e8e8e",
}
GRID_UNIT_IN = 0.34  # one Grafana grid row (30 px) in inches at the chosen width


# ---------------------------------------------------------------- Prometheus API


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise RuntimeError(f"{params.get('query')}: {body.get('error')}")
        return body["data"]

    def instant(self, expr: str) -> list[dict[str, Any]]:
        return self._get("query", query=expr)["result"]

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._get("query_range", query=expr, start=str(start), end=str(end), step=str(step))["result"]


def substitute(expr: str, rate_interval: str, range_: str) -> str:
    """Grafana's variables as "All" and its interval macros."""
    for variable, value in (
        ("$__rate_interval", rate_interval),
        ("$__interval", rate_interval),
        ("$__range", range_),
        ("$job", ".*"),
        ("$instance", ".*"),
        ("$check", ".*"),
    ):
        expr = expr.replace(variable, value)
    return expr


def legend(template: str, labels: dict[str, str]) -> str:
    if not template:
        return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template)


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use 30s, 5m, 1h)")
    return float(match.group(1)) * units[match.group(2)]


# ---------------------------------------------------------------- drawing


def fmt_value(value: float, unit: str) -> str:
    if math.isnan(value):
        return "NaN"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ms":
        return f"{value:.0f} ms"
    if unit == "percent":
        return f"{value:.1f}%"
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}"


def threshold_color(value: float, steps: list[dict[str, Any]]) -> str:
    color = steps[0]["color"] if steps else "green"
    for step in steps[1:]:
        if step["value"] is not None and value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def style_axes(ax: Any, title: str) -> None:
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.set_title(title, color=TEXT, fontsize=9, loc="left", pad=4)


def draw_stat(ax: Any, panel: dict[str, Any], prom: Prometheus, subst: dict[str, str]) -> bool:
    defaults = panel["fieldConfig"]["defaults"]
    result = prom.instant(substitute(panel["targets"][0]["expr"], **subst))
    style_axes(ax, panel["title"])
    ax.set_xticks([])
    ax.set_yticks([])
    if not result:
        ax.text(
            0.5, 0.45, "No data", color=TEXT, ha="center", va="center", fontsize=12, transform=ax.transAxes
        )
        return False
    value = float(result[0]["value"][1])
    color = threshold_color(value, defaults["thresholds"]["steps"])
    ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, color=color, alpha=0.85))
    ax.text(
        0.5,
        0.42,
        fmt_value(value, defaults.get("unit", "none")),
        color="white",
        ha="center",
        va="center",
        fontsize=20,
        fontweight="bold",
        transform=ax.transAxes,
    )
    return True


def draw_timeseries(
    ax: Any,
    panel: dict[str, Any],
    prom: Prometheus,
    window: tuple[float, float, float],
    subst: dict[str, str],
) -> bool:
    start, end, step = window
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "none")
    style_axes(ax, panel["title"])
    drawn = 0
    bars = defaults.get("custom", {}).get("drawStyle") == "bars"
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    base: dict[float, float] = {}
    for target in panel["targets"]:
        for series in prom.range(substitute(target["expr"], **subst), start, end, step):
            points = [(float(t), float(v)) for t, v in series["values"] if not math.isnan(float(v))]
            if not points:
                continue
            times = [datetime.fromtimestamp(t, UTC) for t, _ in points]
            values = [v for _, v in points]
            label = legend(target.get("legendFormat", ""), series["metric"])
            color = NAMED.get(label.split()[-1], PALETTE[drawn % len(PALETTE)]) if label else PALETTE[0]
            if stacked:
                bottoms = [base.get(t, 0.0) for t, _ in points]
                tops = [b + v for b, v in zip(bottoms, values, strict=True)]
                ax.fill_between(times, bottoms, tops, color=color, alpha=0.6, label=label, linewidth=0)
                for (t, _), top in zip(points, tops, strict=True):
                    base[t] = top
            elif bars:
                ax.bar(times, values, width=step / 86400 * 0.8, color=color, label=label, alpha=0.8)
            else:
                ax.plot(times, values, color=color, linewidth=1.2, label=label)
            drawn += 1
    if not drawn:
        ax.text(
            0.5, 0.5, "No data", color=TEXT, ha="center", va="center", fontsize=11, transform=ax.transAxes
        )
        ax.set_xticks([])
        ax.set_yticks([])
        return False
    ax.grid(color=GRID, linewidth=0.5)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: fmt_value(v, unit)))
    if "min" in defaults:
        ax.set_ylim(bottom=defaults["min"])
    ax.legend(
        loc="upper left",
        fontsize=6,
        facecolor=PANEL,
        edgecolor=GRID,
        labelcolor=TEXT,
        ncol=1 if drawn < 7 else 2,
        framealpha=0.8,
    )
    return True


def draw_timeline(
    ax: Any,
    panel: dict[str, Any],
    prom: Prometheus,
    window: tuple[float, float, float],
    subst: dict[str, str],
) -> bool:
    start, end, step = window
    defaults = panel["fieldConfig"]["defaults"]
    mapping = defaults["mappings"][0]["options"]
    style_axes(ax, panel["title"])
    target = panel["targets"][0]
    rows = sorted(
        prom.range(substitute(target["expr"], **subst), start, end, step),
        key=lambda s: legend(target.get("legendFormat", ""), s["metric"]),
    )
    if not rows:
        ax.text(
            0.5, 0.5, "No data", color=TEXT, ha="center", va="center", fontsize=11, transform=ax.transAxes
        )
        return False
    labels = []
    for i, series in enumerate(rows):
        labels.append(legend(target.get("legendFormat", ""), series["metric"]))
        for t, v in series["values"]:
            key = str(int(float(v))) if not math.isnan(float(v)) else None
            color = COLORS.get(mapping.get(key, {}).get("color", "green"), "#555")
            ax.add_patch(
                Rectangle(
                    (mdates.date2num(datetime.fromtimestamp(float(t), UTC)), i - 0.4),
                    step / 86400,
                    0.8,
                    color=color,
                    linewidth=0,
                )
            )
    # Room on the left for the row labels, as Grafana sizes its label column to them.
    box = ax.get_position()
    label_w = max(len(label) for label in labels) * 0.065 / ax.figure.get_figwidth()
    ax.set_position((box.x0 + label_w, box.y0, box.width - label_w, box.height))
    ax.set_xlim(
        mdates.date2num(datetime.fromtimestamp(start, UTC)), mdates.date2num(datetime.fromtimestamp(end, UTC))
    )
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
    return True


def draw_table(ax: Any, panel: dict[str, Any], prom: Prometheus, subst: dict[str, str]) -> bool:
    style_axes(ax, panel["title"])
    ax.set_xticks([])
    ax.set_yticks([])
    result = prom.instant(substitute(panel["targets"][0]["expr"], **subst))
    if not result:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        return False
    keys = sorted({k for r in result for k in r["metric"]})
    rows = [[r["metric"].get(k, "") for k in keys] + [r["value"][1]] for r in result]
    table = ax.table(cellText=rows, colLabels=[*keys, "up"], loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for cell in table.get_celld().values():
        cell.set_facecolor(PANEL)
        cell.set_edgecolor(GRID)
        cell.get_text().set_color(TEXT)
    return True


def render(
    prom: Prometheus, dashboard: dict[str, Any], out: Path, range_s: float, scrape_s: float
) -> list[str]:
    """Draws every panel; returns the titles of those that had no data."""
    end = time.time()
    start = end - range_s
    step = max(scrape_s, range_s / 240)
    # Grafana's $__rate_interval: at least four scrapes, at least one step plus a scrape.
    rate_interval = f"{int(max(4 * scrape_s, step + scrape_s))}s"
    subst = {"rate_interval": rate_interval, "range_": f"{int(range_s)}s"}
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    width_in = 20.0
    fig = plt.figure(figsize=(width_in, rows * GRID_UNIT_IN + 0.8), facecolor=BACKGROUND)
    height = rows * GRID_UNIT_IN + 0.8
    fig.text(
        0.01,
        1 - 0.25 / height,
        f"{dashboard['title']}  ·  last {int(range_s // 60)} minutes  ·  "
        f"{datetime.fromtimestamp(end, UTC):%Y-%m-%d %H:%M} UTC",
        color=TEXT,
        fontsize=12,
        va="top",
    )
    top = 1 - 0.7 / height
    empty = []
    for panel in panels:
        g = panel["gridPos"]
        pad_x, pad_y = 0.006, 0.45 / height
        left = g["x"] / 24 + pad_x + (0.03 if panel["type"] == "timeseries" else 0)  # y tick labels
        width = g["w"] / 24 - 2 * pad_x - (left - g["x"] / 24 - pad_x)
        y_top = top - g["y"] * GRID_UNIT_IN / height
        h = g["h"] * GRID_UNIT_IN / height - pad_y
        ax = fig.add_axes((left, y_top - h, width, h - 0.25 / height))
        window = (start, end, step)
        if panel["type"] == "stat":
            ok = draw_stat(ax, panel, prom, subst)
        elif panel["type"] == "timeseries":
            ok = draw_timeseries(ax, panel, prom, window, subst)
        elif panel["type"] == "state-timeline":
            ok = draw_timeline(ax, panel, prom, window, subst)
        elif panel["type"] == "table":
            ok = draw_table(ax, panel, prom, subst)
        else:
            raise ValueError(f"panel type {panel['type']!r} has no drawing here")
        if not ok:
            empty.append(panel["title"])
    fig.savefig(out, dpi=80, facecolor=BACKGROUND)
    plt.close(fig)
    return empty


# ---------------------------------------------------------------- --demo: real data to draw


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Targets:
    """Loopback HTTP targets: /api (steady, 20-80 ms), /search (slow, 300-900 ms), /flaky (10% 503),
    /billing (down for a few minutes in the middle), and /hook (a webhook receiver)."""

    def __init__(self, outage: tuple[float, float]) -> None:
        self.outage = outage
        targets = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = targets.answer(self.path)
                body = json.dumps({"status": "ok" if status == 200 else "degraded"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str) -> int:
        now = time.time()
        if path == "/api":
            time.sleep(random.uniform(0.02, 0.08))
        elif path == "/search":
            time.sleep(random.uniform(0.3, 0.9) if random.random() < 0.3 else random.uniform(0.1, 0.3))
        elif path == "/flaky":
            time.sleep(random.uniform(0.01, 0.05))
            return 503 if random.random() < 0.1 else 200
        elif path == "/billing":
            return 503 if self.outage[0] <= now < self.outage[1] else 200
        return 200


@contextlib.contextmanager
def _process(argv: list[str], log: Path, **kwargs: Any) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s")


@contextlib.contextmanager
def demo(minutes: float, scrape_s: float) -> Iterator[Prometheus]:
    import yaml  # only the demo writes a Prometheus config

    tmp = Path(tempfile.mkdtemp(prefix="monitor-demo-"))
    begin = time.time()
    targets = _Targets(outage=(begin + minutes * 60 * 0.45, begin + minutes * 60 * 0.62))
    base = f"http://127.0.0.1:{targets.port}"
    monitor_port, prom_port = _free_port(), _free_port()
    (tmp / "monitor.toml").write_text(f"""
[monitor]
listen = "127.0.0.1:{monitor_port}"
state = "sqlite:///{tmp}/state.db"
default_interval = "5s"
default_timeout = "3s"
log_format = "text"

[thresholds.latency_p95_ms]
warning = 500
critical = 1000
window = "2m"

[thresholds.error_rate_pct]
warning = 5
critical = 20
window = "2m"

[[checks]]
name = "api"
type = "http"
url = "{base}/api"

[[checks]]
name = "search"
type = "http"
url = "{base}/search"

[[checks]]
name = "checkout"
type = "http"
url = "{base}/flaky"

[[checks]]
name = "billing"
type = "http"
url = "{base}/billing"

[[checks]]
name = "monitor-port"
type = "tcp"
host = "127.0.0.1"
port = {monitor_port}

[notifiers.chat]
type = "webhook"
url = "{base}/hook"

[[routes]]
match = {{}}
notify = ["chat"]
""")
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=f"{scrape_s:g}s", evaluation_interval=f"{scrape_s:g}s")
    config["rule_files"] = [str(DEPLOY / "prometheus" / "rules" / "*.yml")]
    config.pop("alerting", None)
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "monitor"]
    job.update(
        scrape_interval=f"{scrape_s:g}s",
        scrape_timeout=f"{scrape_s:g}s",
        static_configs=[{"targets": [f"127.0.0.1:{monitor_port}"]}],
    )
    config["scrape_configs"] = [job]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    try:
        with (
            _process(
                [sys.executable, "-m", "monitor", "run", "-c", str(tmp / "monitor.toml")],
                tmp / "monitor.log",
                cwd=DEPLOY.parent,
            ),
            _process(
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=warn",
                ],
                tmp / "prometheus.log",
            ),
        ):
            _wait(f"http://127.0.0.1:{monitor_port}/readyz")
            _wait(f"http://127.0.0.1:{prom_port}/-/ready")
            print(f"demo: collecting {minutes:g} minutes of data in {tmp}", flush=True)
            time.sleep(max(0.0, begin + minutes * 60 - time.time()))
            yield Prometheus(f"http://127.0.0.1:{prom_port}")
    finally:
        targets.server.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prometheus", help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--demo", type=float, metavar="MINUTES", help="collect this much demo data first")
    parser.add_argument("--dashboard", type=Path, default=HERE / "monitor.json")
    parser.add_argument("--out", type=Path, default=HERE / "dashboard.png")
    parser.add_argument(
        "--range", type=duration_s, default=None, help="time range drawn (default 1h, or the demo)"
    )
    parser.add_argument(
        "--scrape-interval", type=duration_s, default=15.0, help="the scrape interval (default 15s)"
    )
    args = parser.parse_args(argv)
    if bool(args.prometheus) == bool(args.demo):
        parser.error("give exactly one of --prometheus URL or --demo MINUTES")
    dashboard = json.loads(args.dashboard.read_text())
    if args.demo:
        scrape_s = 5.0
        with demo(args.demo, scrape_s) as prom:
            empty = render(prom, dashboard, args.out, args.range or args.demo * 60, scrape_s)
    else:
        empty = render(
            Prometheus(args.prometheus), dashboard, args.out, args.range or 3600.0, args.scrape_interval
        )
    print(f"wrote {args.out}" + (f"; no data: {', '.join(empty)}" if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
