"""At-least-once delivery: written to the store before any send, retried with backoff, one worker
per notifier so that none can delay another (or the checks).

While the store fails, what it could not take is held in memory, in order, and stored by a later
`flush`: a page is late, never lost, and never sent before it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Protocol

from alerts.notifiers.base import Delivery, Failed, Notification, Notifier, Retry, Sent, deliver
from monitor.clock import Clock
from monitor.store import AlertRecord, Conflict, OutboxItem, Store, StoreError

log = logging.getLogger("alerts.outbox")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0  # 5 minutes
GIVE_UP_AFTER_S = 24 * 3600.0
FAILED_KEPT = 100
RETRY_AFTER_MAX_S = 3600.0  # a receiver asking for more than an hour is not believed


class Lease(Protocol):
    """An HA leader's right to send (HA.md (b) Fencing 3, 4): its epoch, what is left of its
    lease by its own clock, and the claim of a row in the store just before it is sent."""

    epoch: int

    def left(self) -> float: ...
    async def claim(self, item: OutboxItem) -> bool | None:
        """True: send it; False: the row is no longer pending; None: this replica may not send
        now (its lease is over by its own clock, or the store refused or failed the claim)."""
        ...


def _outcome(task: asyncio.Future[Any]) -> BaseException | None:
    """Why a write did not get stored (a write still going when its flush was cancelled is
    held again, as one cancelled mid-write always was), or None once it is."""
    if not task.done():
        task.cancel()
        return asyncio.CancelledError()
    if task.cancelled():
        return asyncio.CancelledError()
    return task.exception()


def backoff_s(attempts: int, jitter: float = 1.0) -> float:
    """Delay before attempt `attempts + 1`: 1 s doubling to 5 min; `jitter` in [0.8, 1.2]
    spreads notifiers that failed together."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, attempts - 1)) * jitter


class Outbox:
    """The durable queue and its workers. `commit` returns once the notifications are stored."""

    def __init__(
        self,
        store: Store,
        notifiers: dict[str, Notifier],
        clock: Clock,
        on_outcome: Callable[[str, str], None] = lambda notifier, outcome: None,
        jitter: Callable[[], float] = lambda: random.uniform(0.8, 1.2),
        on_redelivered: Callable[[str], None] = lambda notifier: None,
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.clock = clock
        self._on_outcome = on_outcome
        self._on_redelivered = on_redelivered
        self._jitter = jitter
        self.lease: Lease | None = None  # set while leading an HA pair; None: a single replica sends
        self._in_doubt: set[int] = set()  # rows a previous leader claimed and may have sent
        self._queues: dict[str, deque[OutboxItem]] = {name: deque() for name in notifiers}
        self._wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in notifiers}
        self._tasks: list[asyncio.Task[None]] = []
        # The latest permanent failures, with their reasons (the store keeps every failed row).
        self.failed: deque[OutboxItem] = deque(maxlen=FAILED_KEPT)
        # Not stored yet, oldest first: per alert episode its latest record and the notifications
        # decided since (merged, so one failing alert holds one entry).
        self._unstored: OrderedDict[str, tuple[AlertRecord | None, list[tuple[str, dict[str, Any]]]]]
        self._unstored = OrderedDict()
        self._unsettled: dict[int, tuple[OutboxItem, str]] = {}  # rows whose new status is not stored
        self._flushing = asyncio.Lock()
        self._flushed: asyncio.Event | None = None  # set when the flush going now ends
        self._stalled = False  # the last flush failed: commits are held for the next one
        self._records = 0  # names record-less commits in _unstored

    @property
    def pending(self) -> int:
        """Notifications not delivered yet, those held for a failing store included."""
        held = sum(len(payloads) for _, payloads in self._unstored.values())
        return held + sum(len(q) for q in self._queues.values())

    @property
    def unstored(self) -> int:
        """Writes held for the store: alert episodes and outbox rows."""
        return len(self._unstored) + len(self._unsettled)

    def queued(self, notifier: str, alert_id: str, event: str) -> bool:
        """Is such a notification still waiting? A repeat is not piled onto an undelivered one."""
        if any(
            n == notifier and p["alert_id"] == alert_id and p["event"] == event
            for _, payloads in self._unstored.values()
            for n, p in payloads
        ):
            return True
        return any(
            i.payload["alert_id"] == alert_id and i.payload["event"] == event
            for i in self._queues.get(notifier, ())
        )

    async def load(self) -> None:
        """Take up what a previous process left undelivered (kill -9 included). A leader taking
        over sends first, per notifier, the rows an earlier leader claimed (in doubt: maybe sent)."""
        epoch = self.lease.epoch if self.lease is not None else 0
        items = await self.store.pending()
        doubtful = [i for i in items if 0 < i.claimed_epoch < epoch]
        self._in_doubt = {i.id for i in doubtful}
        for item in doubtful + [i for i in items if i.id not in self._in_doubt]:
            if item.notifier in self._queues:
                self._queues[item.notifier].append(item)
            else:
                item.last_error = "notifier no longer configured"
                await self.store.finish(item, "failed")
                log.error("undeliverable: notifier removed", extra={"notifier": item.notifier})

    async def commit(self, alert: AlertRecord | None, outgoing: list[tuple[str, Notification]]) -> None:
        """Store the alert's state and its notifications in one transaction, then wake the workers:
        nothing is sent before it is stored. While the store fails they are held instead (no
        store error is raised): the next `flush` stores them, after everything held before."""
        payloads = [(name, n.to_json()) for name, n in outgoing if name in self._queues]
        if alert is None:
            self._records += 1
        key = alert.key if alert is not None else f"\0{self._records}"
        self._hold(key, alert, payloads)
        if self._flushed is not None:
            # A flush is going: it stores what is held until none is, this commit's too most often
            # (a storm's thousands then wait for it together, not in line for a flush each).
            await self._flushed.wait()
            if key not in self._unstored:
                return
        if not self._stalled:  # else a failing store is not asked again by every check run
            await self.flush()

    def _hold(
        self,
        key: str,
        alert: AlertRecord | None,
        payloads: list[tuple[str, dict[str, Any]]],
        first: bool = False,
    ) -> None:
        """Keep a commit for `flush`; `first`: it was held before anything now held (a retry)."""
        held = self._unstored.get(key)
        if held is not None:
            earlier, later = (payloads, held[1]) if first else (held[1], payloads)
            newest = (held[0] if first else alert) or alert or held[0]
            alert, payloads = newest, earlier + later
        self._unstored[key] = (alert, payloads)
        if first:
            self._unstored.move_to_end(key, last=False)

    async def flush(self) -> None:
        """Store what is held, oldest first, and queue its notifications; stops at the first
        store failure (counted and logged by the store), leaving the rest for the next flush.
        Everything held is handed to the store at once: the store's writer commits what arrives
        together in one transaction (a storm's thousands of alerts are a few, not thousands).
        Raises Conflict, once the rest is stored, naming the alerts changed elsewhere: their
        decisions are dropped, to be taken again on the alert as stored."""
        conflicts: list[str] = []
        async with self._flushing:
            flushed = self._flushed = asyncio.Event()
            try:
                while self._unstored:
                    conflicts += await self._store_held()
                for entry in list(self._unsettled.values()):
                    item, status = entry
                    await self._store_status(item, status)
                    if self._unsettled.get(item.id) is entry:  # else settled again meanwhile
                        del self._unsettled[item.id]
            except StoreError:
                self._stalled = True
                return
            finally:
                self._flushed = None
                flushed.set()
            self._stalled = False
        if conflicts:
            raise Conflict(conflicts)

    async def _store_held(self) -> list[str]:
        """Stores what is held; the keys of the alerts whose write was a Conflict."""
        held = [self._unstored.popitem(last=False) for _ in range(len(self._unstored))]
        now = self.clock.now()
        writes = []
        for key, (alert, payloads) in held:
            payloads = [(n, p) for n, p in payloads if n in self._queues]  # (after a reload)
            task = self.store.commit_soon(alert, payloads, now)
            writes.append((key, alert, payloads, task))
        queued = 0  # writes whose rows are queued (or that failed), in order
        try:
            for *_, task in writes:  # each one's rows queued once it is stored, not the whole batch
                if not task.done():
                    await asyncio.wait([task])
                if _outcome(task) is None:
                    for item in task.result():
                        self._enqueue(item)
                queued += 1
        finally:
            outcomes = [(key, alert, payloads, task, _outcome(task)) for key, alert, payloads, task in writes]
            for key, alert, payloads, _, error in reversed(outcomes):  # back in front, in order
                if isinstance(error, StoreError | asyncio.CancelledError):
                    self._hold(key, alert, payloads, first=True)
            for *_, task, error in outcomes[queued:]:  # stored while a cancelled flush waited
                if error is None:
                    for item in task.result():
                        self._enqueue(item)
        conflicts: list[str] = []
        for key, *_, error in outcomes:
            if isinstance(error, Conflict):  # changed elsewhere: its decision is dropped
                conflicts += error.keys
                log.warning("alert changed elsewhere, deciding again", extra={"alert": key})
        for *_, error in outcomes:
            if error is not None and not isinstance(error, Conflict):
                raise error  # the first: a store failure, or the one write's own fault
        return conflicts

    def _enqueue(self, item: OutboxItem) -> None:
        queue = self._queues.get(item.notifier)
        if queue is None:  # a reload removed its notifier while the row was being stored
            item.last_error = "notifier no longer configured"
            self._unsettled[item.id] = (item, "failed")
            return
        queue.append(item)
        self._wake[item.notifier].set()

    async def _store_status(self, item: OutboxItem, status: str) -> None:
        if status == "pending":
            await self.store.reschedule(item)
        else:
            await asyncio.shield(self.store.finish(item, status))  # the "mark delivered" write

    async def reconfigure(self, notifiers: dict[str, Notifier]) -> None:
        """A reloaded config's notifiers. What is undelivered or not stored stays, in order, with
        nothing read from the store (it may be failing); a removed notifier's rows fail."""
        await self.stop()
        for name in self._queues.keys() - notifiers.keys():
            for item in self._queues.pop(name):
                item.last_error = "notifier no longer configured"
                self._unsettled[item.id] = (item, "failed")
                log.error("undeliverable: notifier removed", extra={"notifier": name})
            del self._wake[name]
        for name in notifiers.keys() - self._queues.keys():
            self._queues[name], self._wake[name] = deque(), asyncio.Event()
        self.notifiers = notifiers
        self.start()
        with contextlib.suppress(Conflict):  # those alerts are read again at their next decision
            await self.flush()

    def drop(self) -> None:
        """An HA leader that stops leading forgets what it queued and held: the next leader takes
        it up from the store, and what was not stored is decided again there."""
        for queue in self._queues.values():
            queue.clear()
        self._unstored.clear()
        self._unsettled.clear()
        self._in_doubt.clear()
        self._stalled = False

    def start(self) -> None:
        for name in self.notifiers:
            self._tasks.append(asyncio.create_task(self._worker(name), name=f"outbox-{name}"))

    async def stop(self) -> None:
        """Stop the workers; anything not yet delivered stays in the store for the next start."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _worker(self, name: str) -> None:
        wake = self._wake[name]
        while True:
            next_at = await self.step(name)
            wake.clear()
            delay = None if next_at is None else max(0.0, next_at - self.clock.now())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), delay)

    async def step(self, name: str) -> float | None:
        """Deliver what is due for one notifier, in order; returns when the head is next due.

        Strict order per notifier: a resolve never overtakes the trigger it answers.
        """
        queue = self._queues[name]
        notifier = self.notifiers[name]
        while queue:
            item = queue[0]
            now = self.clock.now()
            if item.next_at > now:
                return item.next_at
            lease = self.lease
            if lease is None:
                delivery = await deliver(notifier, Notification.from_json(item.payload))
            else:
                claimed = await self._claim(lease, item)
                if claimed is None:
                    return now + BACKOFF_FIRST_S  # not leading now: no send (demotion follows)
                if not claimed:
                    queue.popleft()  # no longer pending: settled by another leader
                    continue
                try:
                    # A send may not outlive the lease: past it, another leader may send the same.
                    async with asyncio.timeout(lease.left()):
                        delivery = await deliver(notifier, Notification.from_json(item.payload))
                except TimeoutError:
                    return now + BACKOFF_FIRST_S  # in doubt: the next leader sends it again
            await self._settle(item, delivery)
            if isinstance(delivery, Retry):
                return item.next_at  # the head waits; nothing behind it overtakes
        return None

    async def _settle(self, item: OutboxItem, delivery: Delivery) -> None:
        queue = self._queues[item.notifier]
        item.attempts += 1
        fields = {"notifier": item.notifier, "attempt": item.attempts}
        now = self.clock.now()
        if isinstance(delivery, Retry) and now - item.created_at >= GIVE_UP_AFTER_S:
            delivery = Failed(f"gave up after 24h: {delivery.reason}")
        if isinstance(delivery, Sent):
            queue.popleft()
            await self._settled(item, "sent")
            if item.id in self._in_doubt:
                self._in_doubt.discard(item.id)
                self._on_redelivered(item.notifier)
            if item.attempts > 1:
                log.info("delivered after retries", extra=fields)
        elif isinstance(delivery, Retry):
            item.last_error = delivery.reason
            delay = backoff_s(item.attempts, self._jitter())
            if delivery.after_s is not None:
                delay = max(delay, min(delivery.after_s, RETRY_AFTER_MAX_S))
            item.next_at = now + delay
            await self._settled(item, "pending")
            if item.attempts == 1:  # a repeated error is logged once, not at every attempt
                log.warning("delivery failed, retrying", extra={**fields, "reason": delivery.reason})
        else:
            queue.popleft()
            item.last_error = delivery.reason
            await self._settled(item, "failed")
            self.failed.append(item)
            log.error("delivery failed permanently", extra={**fields, "reason": delivery.reason})
        self._on_outcome(item.notifier, delivery.outcome)

    async def _claim(self, lease: Lease, item: OutboxItem) -> bool | None:
        """As Lease.claim; a store that fails the claim means no send now."""
        try:
            return await lease.claim(item)
        except StoreError:  # fenced, or the store failing (counted and logged by the store)
            return None

    async def _settled(self, item: OutboxItem, status: str) -> None:
        """Store a row's new status; a failing store gets it at the next flush, and the worker
        goes on (a sent row not yet marked is sent again only if the process restarts first)."""
        try:
            await self._store_status(item, status)
        except StoreError:
            self._unsettled[item.id] = (item, status)
        else:
            self._unsettled.pop(item.id, None)  # an older status held for it is now out of date
