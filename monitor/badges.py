"""Status, uptime and latency badges: SVG in the flat style of shields.io."""

from __future__ import annotations

import math
from html import escape

GREEN = "#4c1"
YELLOW_GREEN = "#97ca00"
YELLOW = "#dfb317"
RED = "#e05d44"
GREY = "#9f9f9f"
BLUE = "#007ec6"
LABEL = "#555"

STATE_COLOURS = {"ok": GREEN, "warning": YELLOW, "critical": RED, "unknown": GREY, "pending": YELLOW}
NO_DATA = "no data"

# Verdana 11 px, as shields.io measures: the width of a few narrow and wide characters, else 7 px.
_WIDTHS = {
    **dict.fromkeys("ijlI.,:;!|' ", 3.5),
    **dict.fromkeys("frt()-/", 4.5),
    **dict.fromkeys("mwMW%", 10.0),
}
_PAD = 10.0


def _width(text: str) -> float:
    return sum(_WIDTHS.get(c, 7.0) for c in text) + _PAD


def uptime_colour(pct: float | None) -> str:
    if pct is None:
        return GREY
    if pct >= 99.9:
        return GREEN
    if pct >= 99.0:
        return YELLOW_GREEN
    return YELLOW if pct >= 95.0 else RED


def uptime_text(pct: float | None) -> str:
    """Rounded down: 99.999 % is not shown as 100 %."""
    return NO_DATA if pct is None else f"{math.floor(pct * 100) / 100:g}%"


def latency_text(ms: float | None) -> str:
    if ms is None:
        return NO_DATA
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 10 else f"{ms:.2f} ms"


def badge(label: str, value: str, colour: str) -> str:
    """One badge: `label` on grey, `value` on `colour`; both escaped."""
    lw, vw = round(_width(label)), round(_width(value))
    w = lw + vw
    lx, vx = lw / 2, lw + vw / 2
    label_, value_ = escape(label), escape(value)
    title = escape(f"{label}: {value}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="20" role="img" aria-label="{title}">'
        f"<title>{title}</title>"
        '<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/>'
        '<stop offset="1" stop-opacity=".1"/></linearGradient>'
        f'<clipPath id="r"><rect width="{w}" height="20" rx="3" fill="#fff"/></clipPath>'
        f'<g clip-path="url(#r)"><rect width="{lw}" height="20" fill="{LABEL}"/>'
        f'<rect x="{lw}" width="{vw}" height="20" fill="{escape(colour)}"/>'
        f'<rect width="{w}" height="20" fill="url(#s)"/></g>'
        '<g fill="#fff" text-anchor="middle" font-size="11"'
        ' font-family="Verdana,Geneva,DejaVu Sans,sans-serif">'
        f'<text x="{lx}" y="15" fill="#010101" fill-opacity=".3">{label_}</text>'
        f'<text x="{lx}" y="14">{label_}</text>'
        f'<text x="{vx}" y="15" fill="#010101" fill-opacity=".3">{value_}</text>'
        f'<text x="{vx}" y="14">{value_}</text></g></svg>'
    )
