"""Draws the README's example badges with the code the daemon serves them with (monitor/badges.py):
`python docs/badges/render.py` writes docs/badges/*.svg."""

from __future__ import annotations

from pathlib import Path

from monitor import badges

HERE = Path(__file__).parent
EXAMPLES = {
    "status.svg": badges.badge("backend-api", "ok", badges.STATE_COLOURS["ok"]),
    "uptime-30d.svg": badges.badge("uptime 30d", badges.uptime_text(99.95), badges.uptime_colour(99.95)),
    "latency.svg": badges.badge("latency p95", badges.latency_text(41.7), badges.BLUE),
}

if __name__ == "__main__":
    for name, svg in EXAMPLES.items():
        (HERE / name).write_text(svg, encoding="utf-8")
