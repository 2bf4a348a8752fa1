"""The one writer to the state store: every write goes through its queue, and each round commits
what is ready in one transaction.

Callers `await` their own write; many that arrive together (an outage of 1,000 checks) become a
handful of commits. An alert's state and its outbox rows are one write, so they are stored
together or not at all. When a round fails because the store does (a StoreError), each of its
writes fails with that error; when it fails for a reason of one write's own (a payload that
cannot be encoded), its writes are tried again one at a time, so that only that one fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitor.store.base import (
    AckRequest,
    AlertRecord,
    ChangedAlerts,
    CheckState,
    DayTotal,
    Fenced,
    Heartbeat,
    HourRow,
    OutboxItem,
    Outgoing,
    Store,
    StoreError,
    Write,
    Writes,
)
from monitor.store.watched import WatchedStore

log = logging.getLogger("monitor.store.writer")

# What only a leader writes: in an HA pair these are fenced; a follower's writes (silences, ack
# requests, heartbeat pings) are not, so that its API works whoever leads.
LEADER_WRITES = frozenset(
    {"commit", "reschedule", "finish", "claim", "clear_ack", "publish_state", "save_hours"}
)
ROUND_MAX = 500  # writes in one transaction: a round stays short for the reads waiting behind it
STOP_DRAIN_S = 1.0  # at stop, how long what is queued is given (the daemon must exit in 10 s)


@dataclass(slots=True)
class _Pending:
    write: Write
    done: asyncio.Future[Any]


class StoreWriter(Writes):
    """Wraps a Store: reads go straight to it, writes through the queue and its one task.

    Until `start` (and after `stop`) each write is a transaction of its own, as a tool that
    writes a few things at a time would have it."""

    def __init__(
        self,
        store: Store,
        on_commit: Callable[[], None] = lambda: None,
        on_fenced: Callable[[Fenced], None] = lambda exc: None,
    ) -> None:
        self.store = store
        self.name = store.name
        self.rounds = 0  # transactions committed
        # In an HA pair, (shard, epoch) of this replica's latest leadership (epoch 0: never led):
        # a round with a leader's write begins with the epoch and lease check, in the same
        # transaction, and a refused round writes nothing (HA.md (b) Fencing 1).
        self.fence: tuple[str, int] | None = None
        # With shards: does an alert document or a notification payload belong to this shard's
        # checks? Reads of alerts and outbox rows keep to them (None: every one is this replica's).
        self.owns: Callable[[dict[str, Any]], bool] | None = None
        self._on_commit = on_commit
        self._on_fenced = on_fenced
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def failing(self) -> str | None:
        """Why the store fails now (see WatchedStore), or None."""
        return self.store.failing if isinstance(self.store, WatchedStore) else None

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="store-writer")

    async def stop(self, timeout_s: float = STOP_DRAIN_S) -> None:
        """Write what is queued, then stop; what a store that does not answer has not taken in
        `timeout_s` fails with StoreError."""
        if self._task is None:
            return
        try:
            async with asyncio.timeout(timeout_s):
                await self._queue.join()
        except TimeoutError:
            log.warning(
                "state store writes dropped at stop", extra={"reason": f"{self._queue.qsize()} queued"}
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        while not self._queue.empty():
            _fail(self._queue.get_nowait(), self._stopped())
            self._queue.task_done()

    # ------------------------------------------------------------ reads: straight to the store

    async def ping(self) -> bool:
        return await self.store.ping()

    def fault(self, exc: Exception) -> str | None:
        return self.store.fault(exc)

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        docs = await self.store.load_alerts(active, since)
        owns = self.owns
        return docs if owns is None else [doc for doc in docs if owns(doc)]

    async def load_alerts_changed(self, known: Mapping[str, int]) -> ChangedAlerts:
        versions, docs = await self.store.load_alerts_changed(known)
        owns = self.owns
        return versions, docs if owns is None else [doc for doc in docs if owns(doc)]

    async def load_alert(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        return await self.store.load_alert(key)

    async def pending(self) -> list[OutboxItem]:
        items = await self.store.pending()
        owns = self.owns
        return items if owns is None else [item for item in items if owns(item.payload)]

    async def load_silences(self) -> list[dict[str, Any]]:
        return await self.store.load_silences()

    async def load_heartbeats(self, names: Collection[str] | None = None) -> list[Heartbeat]:
        return await self.store.load_heartbeats(names)

    async def load_acks(self) -> list[AckRequest]:
        return await self.store.load_acks()

    async def load_check_states(self, names: Collection[str]) -> list[CheckState]:
        return await self.store.load_check_states(names)

    async def load_hours(
        self, since_hour: int, before_hour: int | None = None, check: str | None = None
    ) -> list[HourRow]:
        return await self.store.load_hours(since_hour, before_hour, check)

    async def load_days(self, since_day: int) -> list[DayTotal]:
        return await self.store.load_days(since_day)

    async def load_open_hours(self, before_hour: int) -> list[HourRow]:
        return await self.store.load_open_hours(before_hour)

    # ------------------------------------------------------------ writes: through the queue

    async def write(self, write: Write) -> Any:
        """Queue one write and wait until it is committed (or has failed: its error is raised).
        A caller cancelled before its round began takes its write back."""
        if self._task is None:
            return (await self.store.apply([write]))[0]
        return await self._submit(write)

    def commit_soon(
        self, alert: AlertRecord | None, outgoing: Outgoing, now: float
    ) -> asyncio.Future[list[OutboxItem]]:
        """The commit queued now, as a bare future: a storm's thousands of alert writes in one
        flush cost no task each."""
        if self._task is None:
            return super().commit_soon(alert, outgoing, now)
        return self._submit(Write("commit", (alert, outgoing, now)))

    def _submit(self, write: Write) -> asyncio.Future[Any]:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(write, done))
        return done

    # ------------------------------------------------------------ the task

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < ROUND_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._round(batch)
            except Exception as exc:  # a bug of the writer's own: its round fails, the writer goes on
                log.exception("state store round failed")
                for pending in batch:
                    _fail(pending, exc)
            finally:
                for pending in batch:
                    if not pending.done.done():  # cancelled mid-round: none is left waiting
                        pending.done.set_exception(self._stopped())
                    self._queue.task_done()

    async def _round(self, batch: Sequence[_Pending]) -> None:
        live = [p for p in batch if not p.done.done()]
        if not live:
            return
        try:
            results = await self._apply([p.write for p in live])
        except Fenced as exc:  # the leader's writes are refused; a follower's among them are not
            if len(live) == 1:
                self._on_fenced(exc)
                _fail(live[0], exc)
            else:
                await self._one_by_one(live)
            return
        except StoreError as exc:  # the store is failing: not asked again for each write
            for pending in live:
                _fail(pending, exc)
            return
        except Exception as exc:
            if len(live) == 1:
                _fail(live[0], exc)
                return
            await self._one_by_one(live)
            return
        for pending, result in zip(live, results, strict=True):
            if not pending.done.done():
                pending.done.set_result(result)

    async def _one_by_one(self, live: Sequence[_Pending]) -> None:
        """One write of the round is at fault: each alone, so that only it fails."""
        for i, pending in enumerate(live):
            try:
                [result] = await self._apply([pending.write])
            except Fenced as exc:
                self._on_fenced(exc)
                _fail(pending, exc)
            except StoreError as exc:  # the store failed meanwhile: the rest fail with it
                for rest in live[i:]:
                    _fail(rest, exc)
                return
            except Exception as exc:
                _fail(pending, exc)
            else:
                if not pending.done.done():
                    pending.done.set_result(result)

    async def _apply(self, writes: Sequence[Write]) -> list[Any]:
        """One transaction; a store fault, however the store raised it, as a StoreError."""
        fence = self.fence if any(w.operation in LEADER_WRITES for w in writes) else None
        fenced = [Write("fence", fence), *writes] if fence is not None else writes
        try:
            results = await self.store.apply(fenced)
        except Fenced as exc:
            exc.operations = tuple(dict.fromkeys(w.operation for w in writes if w.operation in LEADER_WRITES))
            raise
        except StoreError:
            raise
        except Exception as exc:
            if (message := self.store.fault(exc)) is None:
                raise
            raise StoreError(message) from exc
        self.rounds += 1
        self._on_commit()
        return results[1:] if fence is not None else results

    def _stopped(self) -> StoreError:
        return StoreError(f"{self.name}: not written, the store writer stopped")


def _fail(pending: _Pending, error: BaseException) -> None:
    if not pending.done.done():
        pending.done.set_exception(error)
