"""The `memory` state store: nothing survives a restart."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from monitor.store.base import (
    AckRequest,
    AlertRecord,
    ChangedAlerts,
    CheckState,
    Conflict,
    DayTotal,
    Heartbeat,
    HourRow,
    OutboxItem,
    Versions,
    Write,
    Writes,
    changed_keys,
    day_totals,
)


class MemoryStore(Writes):
    """Throwaway state; a round is applied to copies that replace the state only when all of it
    worked, so it too is all or nothing."""

    name = "memory"

    def __init__(self) -> None:
        self._alerts: dict[str, tuple[bool, float, dict[str, Any], int]] = {}  # ..., version
        self._outbox: dict[int, OutboxItem] = {}
        self._silences: dict[str, dict[str, Any]] = {}
        self._heartbeats: dict[str, Heartbeat] = {}
        # By hour (day), then check: pruning drops whole hours. A row with whether it is closed.
        self._hours: dict[int, dict[str, tuple[HourRow, bool]]] = {}
        self._days: dict[int, dict[str, DayTotal]] = {}
        self._next_id = 1
        self.versions = Versions()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    def fault(self, exc: Exception) -> str | None:
        return None  # nothing here can fail but a bug

    async def apply(self, writes: Sequence[Write]) -> list[Any]:
        round_ = _Round(
            dict(self._alerts),
            dict(self._outbox),
            dict(self._silences),
            self._next_id,
            dict(self._heartbeats),
            self.versions,
        )
        results = [round_.run(write) for write in writes]
        self.versions.committed(round_.versions)
        self._alerts, self._outbox, self._silences = round_.alerts, round_.outbox, round_.silences
        self._heartbeats = round_.heartbeats
        self._next_id = round_.next_id
        # Run history is not copied per round (it is large): its writes, which cannot fail, are
        # applied once the rest of the round has worked.
        for rows, closed, keep_from_hour in round_.hours:
            for row in rows:
                self._hours.setdefault(row.hour, {})[row.check] = (row, False)
            for row in closed:
                self._hours.setdefault(row.hour, {})[row.check] = (row, True)
            for t in day_totals(closed):
                day = self._days.setdefault(t.day, {})
                old = day.get(t.check, DayTotal(t.check, t.day, 0, 0))
                day[t.check] = DayTotal(t.check, t.day, old.runs + t.runs, old.failures + t.failures)
            for hour in [h for h in self._hours if h < keep_from_hour]:
                del self._hours[hour]
            for day in [d for d in self._days if d < keep_from_hour // 24]:
                del self._days[day]
        return results

    async def load_alerts(self, active: bool, since: float = 0.0) -> list[dict[str, Any]]:
        rows = [(k, r) for k, r in self._alerts.items() if r[0] == active and r[1] >= since]
        if active:
            self.versions.loaded(((k, r[3]) for k, r in rows), every=since == 0.0)
        return [json.loads(json.dumps(r[2])) for _, r in rows]

    async def load_alerts_changed(self, known: Mapping[str, int]) -> ChangedAlerts:
        versions = {k: r[3] for k, r in self._alerts.items() if r[0]}
        self.versions.loaded(versions.items())
        return versions, [json.loads(json.dumps(self._alerts[k][2])) for k in changed_keys(versions, known)]

    async def load_alert(self, key: str) -> tuple[bool, dict[str, Any]] | None:
        row = self._alerts.get(key)
        if row is None:
            return None
        self.versions.committed({key: row[3] if row[0] else None})
        return row[0], json.loads(json.dumps(row[2]))

    async def pending(self) -> list[OutboxItem]:
        return sorted(self._outbox.values(), key=lambda i: i.id)

    async def load_silences(self) -> list[dict[str, Any]]:
        return list(self._silences.values())

    async def load_heartbeats(self, names: Collection[str] | None = None) -> list[Heartbeat]:
        if names is None:
            return list(self._heartbeats.values())
        return [h for name in names if (h := self._heartbeats.get(name)) is not None]

    async def load_acks(self) -> list[AckRequest]:
        return []  # acks posted to a follower: only an HA pair (PostgreSQL) has followers

    async def load_check_states(self, names: Collection[str]) -> list[CheckState]:
        return []  # published by other shards: only shards (PostgreSQL) have them

    async def load_hours(
        self, since_hour: int, before_hour: int | None = None, check: str | None = None
    ) -> list[HourRow]:
        found = []
        for hour in sorted(self._hours):
            if hour < since_hour or (before_hour is not None and hour >= before_hour):
                continue
            rows = self._hours[hour]
            if check is None:
                found.extend(rows[name][0] for name in sorted(rows))
            elif check in rows:
                found.append(rows[check][0])
        return found

    async def load_days(self, since_day: int) -> list[DayTotal]:
        return [t for day in sorted(self._days) if day >= since_day for t in self._days[day].values()]

    async def load_open_hours(self, before_hour: int) -> list[HourRow]:
        return [
            row
            for hour in sorted(self._hours)
            if hour < before_hour
            for row, closed in self._hours[hour].values()
            if not closed
        ]


class _Round:
    """One round's writes, made on copies of the store's tables."""

    def __init__(
        self,
        alerts: dict[str, tuple[bool, float, dict[str, Any], int]],
        outbox: dict[int, OutboxItem],
        silences: dict[str, dict[str, Any]],
        next_id: int,
        heartbeats: dict[str, Heartbeat],
        known: Versions,
    ) -> None:
        self.alerts, self.outbox, self.silences, self.next_id = alerts, outbox, silences, next_id
        self.heartbeats = heartbeats
        self.hours: list[tuple[list[HourRow], list[HourRow], int]] = []  # staged: see MemoryStore.apply
        self.known = known
        self.versions: dict[str, int | None] = {}  # the alert rows' new versions

    def run(self, write: Write) -> Any:
        args = write.args
        match write.operation:
            case "commit":
                return self._commit(*args)
            case "finish":
                item, _status = args
                self.outbox.pop(item.id, None)
            case "save_silence":
                silence_id, doc = args
                self.silences[silence_id] = doc
            case "delete_silence":
                return self.silences.pop(args[0], None) is not None
            case "save_ping":
                name, at, ok, reason = args
                old = self.heartbeats.get(name)
                if old is None:
                    self.heartbeats[name] = Heartbeat(name, at, at, ok, reason)
                elif old.last_at is None or at >= old.last_at:
                    self.heartbeats[name] = dataclasses.replace(old, last_at=at, ok=ok, reason=reason)
            case "add_heartbeat":
                name, at = args
                self.heartbeats.setdefault(name, Heartbeat(name, at))
            case "save_hours":
                rows, closed, keep_from_hour = args
                self.hours.append((list(rows), list(closed), keep_from_hour))
            case _:  # probe; reschedule: the worker's item is the stored item
                pass
        return None

    def _commit(
        self, alert: AlertRecord | None, outgoing: list[tuple[str, dict[str, Any]]], now: float
    ) -> Any:
        if alert is not None:
            # Compare-and-set, as PostgreSQL's (one writer here: the interface is the same).
            expected = self.known.expected(alert.key, self.versions)
            stored = self.alerts.get(alert.key)
            if (stored[3] if stored is not None else None) != expected:
                raise Conflict([alert.key])
            version = 1 if expected is None else expected + 1
            doc = json.loads(json.dumps(alert.doc))
            self.alerts[alert.key] = (alert.active, alert.updated_at, doc, version)
            self.versions[alert.key] = version if alert.active else None
        items = []
        for notifier, payload in outgoing:
            json.dumps(payload)  # what a durable store could not keep fails here too
            item = OutboxItem(self.next_id, notifier, payload, now, now)
            self.outbox[item.id] = item
            self.next_id += 1
            items.append(item)
        return items
