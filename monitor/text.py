"""Text for people: one line, cut to a length with an ellipsis that says it was cut."""

from __future__ import annotations

__all__ = ["ELLIPSIS", "one_line", "shorten"]

ELLIPSIS = "…"


def one_line(text: str) -> str:
    """`text` with every run of whitespace (line breaks too) made one space, ends stripped."""
    return " ".join(text.split())


def shorten(text: str, limit: int) -> str:
    """`text` when it has at most `limit` characters, else its start and "…", `limit` in all.

    Whitespace is kept as it is: callers wanting one line call `one_line` first.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS
