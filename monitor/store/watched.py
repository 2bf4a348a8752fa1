"""WatchedStore: a store's faults as StoreError, counted by operation, logged once per state change."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from monitor.models import format_duration
from monitor.store.base import (
    READS,
    AckRequest,
    ChangedAlerts,
    CheckState,
    DayTotal,
    Fenced,
    Heartbeat,
    HourRow,
    OutboxItem,
    Store,
    StoreError,
    Write,
    Writes,
)

log = logging.getLogger("monitor.store")
T = TypeVar("T")

OPERATION_TIMEOUT_S = 30.0  # a store that answers nothing (a black-holed server) fails, not hangs
# A read that works does not clear a failed write: a locked or full store still reads.


class WatchedStore(Writes):
    """A store as the daemon uses it: a fault is a StoreError, counted by operation and logged
    once per state change (when the store starts failing, when it recovers); `failing` holds the
    latest reason meanwhile. A failed write is only cleared by a write that works: a store that
    still reads may not take writes (locked, disk full). A failed round of writes counts once
    for each operation in it."""

    def __init__(self, store: Store, on_error: Callable[[str], None] = lambda operation: None) -> None:
        self.store = store
        self.name = store.name
        self.failing: str | None = None
        self._on_error = on_error
        self._writes_failed = False
        self._since = 0.0

    async def open(self) -> None:
        try:
            await self.store.open()
        except StoreError:
            raise
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            raise StoreError(message) from exc

    async def close(self) -> None:
        try:
            await self.store.close()
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            log.warning("state store did not close cleanly", extra={"reason": message})

    async def _do(self, operations: Sequence[str], call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(OPERATION_TIMEOUT_S):
                result = await call()
        except Fenced:
            raise  # the store answered: this leader is out of date, the store is not failing
        except StoreError as exc:
            self._failed(operations, exc)
            raise
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            if isinstance(exc, TimeoutError):
                message = f"{self.name}: no answer in {format_duration(OPERATION_TIMEOUT_S)}"
            error = StoreError(message)
            self._failed(operations, error)
            raise error from exc
        writes = any(op not in READS for op in operations)
        if self.failing is not None and (writes or not self._writes_failed):
            log.info(
                "state store recovered",
                extra={"reason": f"failed for {format_duration(round(time.monotonic() - self._since))}"},
            )
            self.failing, self._writes_failed = None, False
        return result

    def _failed(self, operations: Sequence[str], error: StoreError) -> None:
        for operation in operations:
            self._on_error(operation)
        if self.failing is None:
            self._since = time.monotonic()
            log.error("state store failing", extra={"reason": f"{', '.join(operations)}: {error}"})
        self.failing = str(error)
        self._writes_failed |= any(op not in READS for op in operations)

    async def ping(self) -> bool:
        try:
            return await self._do(("ping",), self.store.ping)
        except StoreError:
            return False

    async def apply(self, writes: Sequence[Write]) -> list[Any]:
        operations = tuple(dict.fromkeys(w.operation for w in writes))
        return await self._do(operations, lambda: self.store.apply(writes))

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        return await self._do(("load_alerts",), lambda: self.store.load_alerts(active, since))

    async def load_alerts_changed(self, known: Mapping[str, int]) -> ChangedAlerts:
        return await self._do(("load_alerts_changed",), lambda: self.store.load_alerts_changed(known))

    async def load_alert(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        return await self._do(("load_alert",), lambda: self.store.load_alert(key))

    async def pending(self) -> list[OutboxItem]:
        return await self._do(("pending",), self.store.pending)

    async def load_silences(self) -> list[dict[str, Any]]:
        return await self._do(("load_silences",), self.store.load_silences)

    async def load_heartbeats(self, names: Collection[str] | None = None) -> list[Heartbeat]:
        return await self._do(("load_heartbeats",), lambda: self.store.load_heartbeats(names))

    async def load_acks(self) -> list[AckRequest]:
        return await self._do(("load_acks",), self.store.load_acks)

    async def load_check_states(self, names: Collection[str]) -> list[CheckState]:
        return await self._do(("load_check_states",), lambda: self.store.load_check_states(names))

    async def load_hours(
        self, since_hour: int, before_hour: int | None = None, check: str | None = None
    ) -> list[HourRow]:
        return await self._do(("load_hours",), lambda: self.store.load_hours(since_hour, before_hour, check))

    async def load_days(self, since_day: int) -> list[DayTotal]:
        return await self._do(("load_days",), lambda: self.store.load_days(since_day))

    async def load_open_hours(self, before_hour: int) -> list[HourRow]:
        return await self._do(("load_open_hours",), lambda: self.store.load_open_hours(before_hour))

    def fault(self, exc: Exception) -> str | None:
        return str(exc) if isinstance(exc, StoreError) else self.store.fault(exc)
