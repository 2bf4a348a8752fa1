"""A clock the test moves by hand."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start: float = 1_795_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
