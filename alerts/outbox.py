"""At-least-once delivery: written to the store before any send, retried with backoff, one worker
per notifier so that none can delay another (or the checks)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Callable

from alerts.notifiers.base import Delivery, Failed, Notification, Notifier, Retry, Sent, deliver
from monitor.clock import Clock
from monitor.store import AlertRecord, OutboxItem, Store

log = logging.getLogger("alerts.outbox")

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0  # 5 minutes
GIVE_UP_AFTER_S = 24 * 3600.0
RETRY_AFTER_MAX_S = 3600.0  # a receiver asking for more than an hour is not believed


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
    ) -> None:
        self.store = store
        self.notifiers = notifiers
        self.clock = clock
        self._on_outcome = on_outcome
        self._jitter = jitter
        self._queues: dict[str, deque[OutboxItem]] = {name: deque() for name in notifiers}
        self._wake: dict[str, asyncio.Event] = {name: asyncio.Event() for name in notifiers}
        self._tasks: list[asyncio.Task[None]] = []
        self.failed: list[OutboxItem] = []  # permanent failures since start, for the API and tests

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def queued(self, notifier: str, alert_id: str, event: str) -> bool:
        """Is such a notification still waiting? A repeat is not piled onto an undelivered one."""
        return any(
            i.payload["alert_id"] == alert_id and i.payload["event"] == event
            for i in self._queues.get(notifier, ())
        )

    async def load(self) -> None:
        """Take up what a previous process left undelivered (kill -9 included)."""
        for item in await self.store.pending():
            if item.notifier in self._queues:
                self._queues[item.notifier].append(item)
            else:
                item.last_error = "notifier no longer configured"
                await self.store.finish(item, "failed")
                log.error("undeliverable: notifier removed", extra={"notifier": item.notifier})

    async def commit(self, alert: AlertRecord | None, outgoing: list[tuple[str, Notification]]) -> None:
        """Store the alert's state and its notifications in one transaction, then wake the workers:
        nothing is sent before it is stored."""
        payloads = [(name, n.to_json()) for name, n in outgoing if name in self._queues]
        for item in await self.store.commit(alert, payloads, self.clock.now()):
            self._queues[item.notifier].append(item)
            self._wake[item.notifier].set()

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
            delivery = await deliver(notifier, Notification.from_json(item.payload))
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
            await asyncio.shield(self.store.finish(item, "sent"))
            if item.attempts > 1:
                log.info("delivered after retries", extra=fields)
        elif isinstance(delivery, Retry):
            item.last_error = delivery.reason
            delay = backoff_s(item.attempts, self._jitter())
            if delivery.after_s is not None:
                delay = max(delay, min(delivery.after_s, RETRY_AFTER_MAX_S))
            item.next_at = now + delay
            await self.store.reschedule(item)
            if item.attempts == 1:  # a repeated error is logged once, not at every attempt
                log.warning("delivery failed, retrying", extra={**fields, "reason": delivery.reason})
        else:
            queue.popleft()
            item.last_error = delivery.reason
            await asyncio.shield(self.store.finish(item, "failed"))
            self.failed.append(item)
            log.error("delivery failed permanently", extra={**fields, "reason": delivery.reason})
        self._on_outcome(item.notifier, delivery.outcome)
