"""monitor.text: one line, and a cut that says so."""

from __future__ import annotations

import pytest

from monitor.text import one_line, shorten


@pytest.mark.parametrize(
    ("text", "limit", "shown"),
    [
        ("short", 10, "short"),
        ("exactly10!", 10, "exactly10!"),
        ("eleven char", 10, "eleven ch…"),
        ("line one\nline two", 12, "line one\nli…"),  # whitespace kept: one_line is the caller's choice
        ("ab", 1, "…"),
    ],
    ids=["shorter", "at-the-limit", "over", "keeps-line-breaks", "limit-1"],
)
def test_shorten(text: str, limit: int, shown: str) -> None:
    assert shorten(text, limit) == shown
    assert len(shorten(text, limit)) <= limit


def test_shorten_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1, not 0"):
        shorten("text", 0)


def test_one_line_collapses_every_run_of_whitespace() -> None:
    assert one_line("  <html>\n\t<body>  502 Bad Gateway </body>\r\n</html>\n") == (
        "<html> <body> 502 Bad Gateway </body> </html>"
    )
    assert one_line(" \n ") == ""
