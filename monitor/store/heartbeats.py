"""The heartbeat book: each heartbeat check's first-configured time and latest ping, kept in memory
over the state store so a run judges from the newest ping, whichever replica took it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterable

from monitor.clock import Clock, SystemClock
from monitor.store.base import Heartbeat, Store, StoreError


class HeartbeatBook:
    """`{check name: Heartbeat}`. The daemon loads it from the store at start (`configure`) and
    records each ping through it (`ping`: the store first, then the book). A check's run asks
    `current`, which re-reads its one row: a ping that reached another replica is seen there.

    Without a store (a check built alone, `monitor once`) the book is memory only."""

    def __init__(self, store: Store | None = None, clock: Clock | None = None) -> None:
        self.store = store
        self.clock: Clock = clock or SystemClock()
        self._beats: dict[str, Heartbeat] = {}
        self._unsaved: set[str] = set()  # configured while the store failed: written on a later run

    def get(self, name: str) -> Heartbeat | None:
        return self._beats.get(name)

    async def configure(self, names: Iterable[str]) -> None:
        """Heartbeat checks now in the config: each keeps its stored first-configured time; a new
        one is first configured now (the store logs and counts its own faults)."""
        wanted = [n for n in names if n not in self._beats]
        if not wanted:
            return
        if self.store is not None:
            try:
                for beat in await self.store.load_heartbeats(wanted):
                    self._merge(beat)
            except StoreError:
                pass  # configured now, and written later; a stored earlier time still wins when read
        now = self.clock.now()
        for name in wanted:
            if name not in self._beats:
                self._beats[name] = Heartbeat(name, now)
                self._unsaved.add(name)
        await self._save_configured()

    async def ping(self, name: str, ok: bool, reason: str | None) -> float:
        """Record a ping (`ok` False: a reported failure) and return its time. Raises StoreError
        when the store did not take it: the book is then unchanged and the caller says so."""
        at = self.clock.now()
        if self.store is not None:
            await self.store.save_ping(name, at, ok, reason)
        old = self._beats.get(name)
        configured_at = at if old is None else old.configured_at
        self._merge(Heartbeat(name, configured_at, at, ok, reason))
        return at

    async def current(self, name: str, within_s: float) -> Heartbeat | None:
        """The latest known state of one heartbeat, its stored row re-read (bounded by
        `within_s`): a store that fails or is slow leaves the book's own copy to judge from."""
        if self.store is not None:
            try:
                async with asyncio.timeout(within_s):
                    await self._save_configured()
                    for beat in await self.store.load_heartbeats([name]):
                        self._merge(beat)
            except (StoreError, TimeoutError):
                pass  # the store logs and counts its own faults; the book still knows this replica's pings
        return self._beats.get(name)

    def _merge(self, beat: Heartbeat) -> None:
        """The newer ping and the earlier first-configured time of the two copies."""
        old = self._beats.get(beat.name)
        if old is None:
            self._beats[beat.name] = beat
            return
        newer = old if beat.last_at is None or (old.last_at or 0.0) > beat.last_at else beat
        configured_at = min(old.configured_at, beat.configured_at)
        self._beats[beat.name] = dataclasses.replace(newer, configured_at=configured_at)

    async def _save_configured(self) -> None:
        if self.store is None or not self._unsaved:
            return
        for name in sorted(self._unsaved):
            with contextlib.suppress(StoreError):
                await self.store.add_heartbeat(name, self._beats[name].configured_at)
                self._unsaved.discard(name)
