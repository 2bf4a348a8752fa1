"""What every state store shares: its records, its errors, the `Write` value and the Store protocol."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

READS = (
    "ping",
    "load_alerts",
    "load_alerts_changed",
    "load_alert",
    "pending",
    "load_silences",
    "load_heartbeats",
    "load_acks",
    "load_check_states",
    "load_hours",
    "load_days",
    "load_open_hours",
)
WRITES = frozenset(
    {
        "probe",
        "commit",
        "reschedule",
        "finish",
        "save_silence",
        "delete_silence",
        "save_ping",
        "add_heartbeat",
        # An HA pair's (PostgreSQL only): a leader's fence and claim, a follower's ack request.
        "fence",
        "claim",
        "request_ack",
        "clear_ack",
        "publish_state",
        "save_hours",
    }
)
# The `operation` label values of monitor_store_errors_total.
OPERATIONS = (*READS, *sorted(WRITES))


class StoreError(Exception):
    """The state store cannot do what was asked; the message is one line naming the store and
    the problem (`/var/lib/monitor/monitor-state.db is not an SQLite database`), no secret."""


class Fenced(StoreError):
    """A leader's round of writes was refused: its epoch is no longer current or its lease has
    ended (another replica leads). Nothing of the round was written; the store itself is fine."""

    def __init__(self, message: str, operations: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.operations = operations


class Conflict(Exception):
    """A compare-and-set on alert documents failed (HA.md (b) Fencing 2): each key's row changed
    since this process last read or wrote it (another shard's leader during a reshard, or a
    takeover). Nothing of the round was written; the caller reads the alert again and decides
    again. Not a StoreError: the store is fine."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(f"alert changed elsewhere: {', '.join(keys)}")
        self.keys = tuple(keys)


class Versions:
    """The version of each active alert row as this process last read or wrote it: every update
    of a row is `where version = <this>`, every new row an insert that must not find one."""

    def __init__(self) -> None:
        self.known: dict[str, int] = {}

    def loaded(self, rows: Iterable[tuple[str, int]], every: bool = True) -> None:
        """Rows just read; `every`: all the active rows (what is not among them is forgotten)."""
        if every:
            self.known = dict(rows)
        else:
            self.known.update(rows)

    def expected(self, key: str, round_: dict[str, int | None]) -> int | None:
        """The version the row must have now (None: it must not exist, or was just resolved)."""
        return round_[key] if key in round_ else self.known.get(key)

    def committed(self, round_: dict[str, int | None]) -> None:
        """A round's new versions, once its transaction committed (None: no longer active)."""
        for key, version in round_.items():
            if version is None:
                self.known.pop(key, None)
            else:
                self.known[key] = version


@dataclass(slots=True)
class OutboxItem:
    """One notification waiting for (or done with) delivery through one notifier."""

    id: int
    notifier: str
    payload: dict[str, Any]
    created_at: float
    next_at: float
    attempts: int = 0
    last_error: str | None = None
    claimed_epoch: int = 0  # the epoch of the leader that last claimed it for a send (HA pair)


@dataclass(frozen=True, slots=True)
class AlertRecord:
    """An alert document as the store keeps it; `key` names one episode of one alert."""

    key: str
    alert_id: str
    active: bool
    updated_at: float
    doc: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AckRequest:
    """An acknowledgement posted to a follower, for the leader to act on."""

    alert_id: str
    by: str | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class CheckState:
    """A check's state as its shard's leader publishes it for checks of other shards that
    depend on it: `breaching` while its `up` alert is pending or firing."""

    check: str
    up: bool
    breaching: bool
    evaluated_at: float


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A heartbeat check as the store keeps it: when it was first configured (a restart keeps
    that) and its latest ping, if any (`ok` False for a ping to `.../fail`, with its reason)."""

    name: str
    configured_at: float
    last_at: float | None = None
    ok: bool = True
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class HourRow:
    """One check's runs in one UTC hour (`hour`: hours since the epoch); the latencies are of
    the runs that succeeded, None when none did. Stores keep them to the microsecond."""

    check: str
    hour: int
    runs: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    max_ms: float | None


@dataclass(frozen=True, slots=True)
class DayTotal:
    """One check's runs and failures in one UTC day (`day`: days since the epoch)."""

    check: str
    day: int
    runs: int
    failures: int


Outgoing = list[tuple[str, dict[str, Any]]]  # (notifier, notification payload)
ChangedAlerts = tuple[dict[str, int], list[dict[str, Any]]]  # `load_alerts_changed`'s answer


@dataclass(frozen=True, slots=True)
class Write:
    """One write: the operation's name (one of WRITES) and its arguments, as its method takes them.

    `commit(alert, outgoing, now)` is `Write("commit", (alert, outgoing, now))`."""

    operation: str
    args: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.operation not in WRITES:
            raise ValueError(f"not a store write: {self.operation!r}")


class Store(Protocol):
    name: str  # as messages show it: a path, or a DSN with its credentials masked

    async def open(self) -> None:
        """Raises StoreError when the store cannot be used, saying why."""
        ...

    async def close(self) -> None: ...
    async def ping(self) -> bool:
        """True when the store answers (raises otherwise); `/readyz` depends on it."""
        ...

    def fault(self, exc: Exception) -> str | None:
        """The one-line message for `exc` when it is this store failing; None for a bug."""
        ...

    async def apply(self, writes: Sequence[Write]) -> list[Any]:
        """All `writes` in one transaction, in order, or none of them; each write's result in
        order (the new OutboxItems for `commit`, a bool for `delete_silence`, else None)."""
        ...

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]: ...
    async def load_alerts_changed(self, known: Mapping[str, int]) -> ChangedAlerts:
        """The active rows' versions by key, and the documents of those whose version is not the
        one `known` gives: an HA follower's read every second decodes only what changed (a storm's
        20,000 alerts, once read, are 20,000 versions). Like `load_alerts(active=True)`, every
        active row's version is known from then on."""
        ...

    async def load_alert(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        """One episode's row, active or not, as (active, doc); None when there is none. Its
        version is known from then on: a Conflict is answered by reading the alert again."""
        ...

    async def pending(self) -> list[OutboxItem]: ...
    async def load_silences(self) -> list[dict[str, Any]]: ...
    async def load_heartbeats(self, names: Collection[str] | None = None) -> list[Heartbeat]:
        """The heartbeats stored (only those named, when `names` is given)."""
        ...

    async def load_acks(self) -> list[AckRequest]:
        """Acknowledgements posted to followers and not yet acted on (only an HA pair has any)."""
        ...

    async def load_check_states(self, names: Collection[str]) -> list[CheckState]:
        """What other shards' leaders published of the checks named (only shards have any)."""

    async def load_hours(
        self, since_hour: int, before_hour: int | None = None, check: str | None = None
    ) -> list[HourRow]:
        """Hour rows from `since_hour` (and before `before_hour`), of one check or of all."""
        ...

    async def load_days(self, since_day: int) -> list[DayTotal]:
        """Per check and UTC day from `since_day`, the totals of the hours stored as closed."""
        ...

    async def load_open_hours(self, before_hour: int) -> list[HourRow]:
        """Hour rows before `before_hour` stored while their hour was open and never closed
        (the process stopped in that hour)."""
        ...

    # Each write spelled as a method (see `Writes`).
    async def probe(self) -> None: ...
    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]: ...
    def commit_soon(
        self, alert: AlertRecord | None, outgoing: Outgoing, now: float
    ) -> asyncio.Future[list[OutboxItem]]: ...
    async def reschedule(self, item: OutboxItem) -> None: ...
    async def finish(self, item: OutboxItem, status: str) -> None: ...
    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None: ...
    async def delete_silence(self, silence_id: str) -> bool: ...
    async def save_ping(self, name: str, at: float, ok: bool, reason: str | None) -> None: ...
    async def add_heartbeat(self, name: str, at: float) -> None: ...
    async def claim(self, item_id: int, shard: str, epoch: int) -> bool: ...
    async def request_ack(self, request: AckRequest) -> None: ...
    async def clear_ack(self, alert_id: str) -> None: ...
    async def publish_state(self, state: CheckState) -> None: ...
    async def save_hours(
        self, rows: Sequence[HourRow], closed: Sequence[HourRow], keep_from_hour: int
    ) -> None: ...


class Writes:
    """The write operations as methods, each one `Write` handed to `write`: by default a
    transaction of its own through `apply`; StoreWriter queues it for its next round instead."""

    if TYPE_CHECKING:

        async def apply(self, writes: Sequence[Write]) -> list[Any]: ...

    async def write(self, write: Write) -> Any:
        return (await self.apply([write]))[0]

    async def probe(self) -> None:
        """A real write, to see a failing store recover when nothing else is written."""
        await self.write(Write("probe"))

    async def commit(self, alert: AlertRecord | None, outgoing: Outgoing, now: float) -> list[OutboxItem]:
        """The alert's new state and the notifications it decided on, stored together: a crash
        can then neither lose a page (state saved, notification not) nor repeat one (the reverse).
        Raises Conflict when the alert's row changed since it was last read or written here."""
        items: list[OutboxItem] = await self.write(Write("commit", (alert, outgoing, now)))
        return items

    def commit_soon(
        self, alert: AlertRecord | None, outgoing: Outgoing, now: float
    ) -> asyncio.Future[list[OutboxItem]]:
        """`commit`, begun now; its future (cancelling it takes the write back while it waits)."""
        return asyncio.ensure_future(self.commit(alert, outgoing, now))

    async def reschedule(self, item: OutboxItem) -> None:
        await self.write(Write("reschedule", (item,)))

    async def finish(self, item: OutboxItem, status: str) -> None:
        await self.write(Write("finish", (item, status)))

    async def save_silence(self, silence_id: str, doc: dict[str, Any]) -> None:
        await self.write(Write("save_silence", (silence_id, doc)))

    async def delete_silence(self, silence_id: str) -> bool:
        deleted: bool = await self.write(Write("delete_silence", (silence_id,)))
        return deleted

    async def save_ping(self, name: str, at: float, ok: bool, reason: str | None) -> None:
        """A heartbeat's latest ping (`ok` False: a reported failure); an older ping than the one
        stored (from a slower replica) changes nothing. (Not `ping`: that is the health read.)"""
        await self.write(Write("save_ping", (name, at, ok, reason)))

    async def add_heartbeat(self, name: str, at: float) -> None:
        """A heartbeat check first configured at `at`; one already stored keeps its own time."""
        await self.write(Write("add_heartbeat", (name, at)))

    async def claim(self, item_id: int, shard: str, epoch: int) -> bool:
        """Mark an outbox row as being sent by the leader of `epoch`, just before the send; False
        when the epoch moved on, its lease ended or the row is no longer pending: do not send."""
        claimed: bool = await self.write(Write("claim", (item_id, shard, epoch)))
        return claimed

    async def request_ack(self, request: AckRequest) -> None:
        """A follower's: the leader acknowledges the alert (and tells the notifiers)."""
        await self.write(Write("request_ack", (request,)))

    async def clear_ack(self, alert_id: str) -> None:
        await self.write(Write("clear_ack", (alert_id,)))

    async def publish_state(self, state: CheckState) -> None:
        """A shard leader's, for a check that a check of another shard depends on."""
        await self.write(Write("publish_state", (state,)))

    async def save_hours(
        self, rows: Sequence[HourRow], closed: Sequence[HourRow], keep_from_hour: int
    ) -> None:
        """One batch of run history: the rows of open hours and the final rows of closed ones
        stored (replacing what is stored for their check and hour), each closed row added to its
        day's totals (once: a closed row is written once); then hours and days before
        `keep_from_hour` deleted."""
        await self.write(Write("save_hours", (rows, closed, keep_from_hour)))


def to_us(ms: float | None) -> int | None:
    """A latency as stores keep it: whole microseconds (what the API shows, to 0.001 ms)."""
    return None if ms is None else round(ms * 1000)


def to_ms(us: int | None) -> float | None:
    return None if us is None else us / 1000


def day_totals(closed: Sequence[HourRow]) -> list[DayTotal]:
    """Closed rows summed per check and day: one addition per day row in a batch."""
    totals: dict[tuple[str, int], list[int]] = {}
    for row in closed:
        total = totals.setdefault((row.check, row.hour // 24), [0, 0])
        total[0] += row.runs
        total[1] += row.failures
    return [DayTotal(check, day, runs, failures) for (check, day), (runs, failures) in totals.items()]


def reason(exc: BaseException) -> str:
    """One line for an exception from a driver or the OS, without "[Errno 111]" noise."""
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    text = str(exc)
    if isinstance(exc, OSError) and exc.errno is not None:
        text = os.strerror(exc.errno) if exc.errno > 0 else (exc.strerror or text)
    text = " ".join(text.split()) or type(exc).__name__
    return text[:1].lower() + text[1:]


def changed_keys(versions: Mapping[str, int], known: Mapping[str, int]) -> list[str]:
    """The keys whose version in `versions` is not the one `known` gives (new ones included)."""
    return [key for key, version in versions.items() if known.get(key) != version]


def changed_alerts(
    versions: dict[str, int], changed: list[str], rows: Iterable[Sequence[Any]], known: Versions
) -> ChangedAlerts:
    """`load_alerts_changed`'s answer from the versions read first and the changed rows, (key,
    version, JSON document), read after: a row changed in between is taken as read last, one
    resolved in between is gone."""
    for key in changed:
        versions.pop(key)
    docs = []
    for key, version, doc in rows:
        versions[key] = version
        docs.append(json.loads(doc))
    known.loaded(versions.items())
    return versions, docs
