"""Leader election for an HA pair on PostgreSQL (SPEC section 9, HA.md (b)): a session advisory
lock on a dedicated connection, plus the `monitor_cluster` row whose epoch fences every write the
leader makes, and whose lease the leader renews.

A paused or cut-off leader keeps its advisory lock while its backend lives: `idle_session_timeout`
ends that backend, and the leader stops by its own monotonic clock (D) before its lease (L) ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from monitor.store.base import reason

log = logging.getLogger("monitor.cluster")

CHANNEL = "monitor_cluster_resign"  # NOTIFY'd by a leader that resigns: followers try at once
STATEMENT_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 5.0
RETRY_S = 1.0  # P: how often a follower tries the lock (jittered)


class Role(enum.StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(frozen=True, slots=True)
class Budget:
    """The timings derived from `failover` F (HA.md (b) Budget)."""

    renew_s: float  # R: the leader renews its lease this often
    idle_s: float  # S: PostgreSQL ends a silent session (and frees its lock) after this
    deadline_s: float  # D: the leader stops claiming this long after its last good renew began
    lease_s: float  # L: how long a renewed lease lasts in the row

    @classmethod
    def of(cls, failover_s: float) -> Budget:
        renew, idle = failover_s / 7, 0.4 * failover_s
        if idle <= 2 * renew:  # cannot happen with these ratios; kept as the design's own rule
            raise ValueError(f"failover {failover_s}s: S must exceed 2R")
        # D = S - 1; a short failover (S - 1 near R) takes the midpoint of R and S instead, so
        # that a renew on time always comes before the deadline.
        deadline = max(idle - 1.0, (renew + idle) / 2)
        return cls(renew, idle, deadline, 2 * failover_s / 3)


_SCHEMA = """
create table if not exists monitor_cluster (
  shard text primary key, epoch bigint not null, holder text not null,
  holder_pid integer not null, expires_at timestamptz not null)
"""
# Won only on the session that holds the lock: behind a transaction-pooling proxy the insert runs
# on another backend than the lock, and the guard refuses it.
_CLAIM = """
insert into monitor_cluster (shard, epoch, holder, holder_pid, expires_at)
select $1, 1, $2, pg_backend_pid(), now() + make_interval(secs => $3)
where exists (select from pg_locks where locktype = 'advisory' and pid = pg_backend_pid() and granted)
on conflict (shard) do update set epoch = monitor_cluster.epoch + 1, holder = excluded.holder,
  holder_pid = excluded.holder_pid, expires_at = excluded.expires_at
returning epoch
"""
_RENEW = """
update monitor_cluster set expires_at = now() + make_interval(secs => $3)
where shard = $1 and epoch = $2 and holder_pid = pg_backend_pid() returning epoch
"""
_CURRENT = "select epoch, holder from monitor_cluster where shard = $1"
# PostgreSQL 13 has no idle_session_timeout: a lapsed holder's backend is ended by a follower.
_TERMINATE_LAPSED = """
select pg_terminate_backend(c.holder_pid) from monitor_cluster c
join pg_locks l on l.pid = c.holder_pid and l.locktype = 'advisory' and l.granted
where c.shard = $1 and c.expires_at < now() and c.holder_pid <> pg_backend_pid()
"""


class Elector:
    """Campaigns for the lock of one shard (`i/N`) and keeps it; `on_change` is called whenever
    the role or epoch changes. The state is read by the daemon: `role`, `epoch`, `leader`."""

    def __init__(
        self,
        dsn: str,
        shard: int,
        shards: int,
        failover_s: float,
        on_change: Callable[[], None],
        holder: str | None = None,
    ) -> None:
        self.dsn = dsn
        self.shard_key = f"{shard}/{shards}"
        self.budget = Budget.of(failover_s)
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}"
        self.role = Role.FOLLOWER
        self.epoch: int | None = None  # the shard's current epoch, as last seen
        self.leader: str | None = None  # the holder id of the shard's leader, as last seen
        self.transitions = 0
        self.refused: str | None = None  # why this replica refused to lead, if it did
        self.renew_seconds: Callable[[float], None] = lambda s: None  # observes each renew's time
        self._on_change = on_change
        self._conn: asyncpg.Connection | None = None
        self._idle_timeout = True  # the server has idle_session_timeout (PostgreSQL 14+)
        self._renewed_at = 0.0  # monotonic start of the last good renew (or of the win)
        self._wake = asyncio.Event()
        self._stopping = False

    @property
    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    @property
    def lock_key(self) -> str:
        return f"monitor/{self.shard_key}"

    def lease_left(self) -> float:
        """Seconds this leader may still claim and send (0 when not leading): D from the start of
        its last good renew, by the monotonic clock, which advances through a SIGSTOP."""
        if self.role is not Role.LEADER:
            return 0.0
        return max(0.0, self.budget.deadline_s - (time.monotonic() - self._renewed_at))

    # ------------------------------------------------------------ the loop

    async def run(self) -> None:
        while not self._stopping:
            try:
                if self.role is Role.LEADER:
                    await self._hold()
                else:
                    await self._campaign()
            except Exception as exc:  # the connection or the server failed: start over, as a follower
                self._lost(reason(exc))
                await self._sleep(self._jittered())

    async def _connection(self) -> asyncpg.Connection:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        self._conn = None
        conn = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S)
        try:
            await conn.execute(f"set statement_timeout = '{int(STATEMENT_TIMEOUT_S * 1000)}ms'")
            try:
                await conn.execute(f"set idle_session_timeout = '{int(self.budget.idle_s * 1000)}ms'")
            except asyncpg.UndefinedObjectError:
                self._idle_timeout = False
                log.warning(
                    "no idle_session_timeout (PostgreSQL 13): a lapsed leader is ended by its follower",
                    extra={"reason": self.shard_key},
                )
            async with conn.transaction():
                await conn.execute("select pg_advisory_xact_lock(hashtext('monitor/schema'))")
                await conn.execute(_SCHEMA)
            await conn.add_listener(CHANNEL, self._resigned)
            # A session ended by the server (pg_terminate_backend, a restart) demotes at once,
            # not at the next renew: the lock is free already.
            conn.add_termination_listener(self._terminated)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    def _terminated(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn and not self._stopping:
            self.step_down("the lock session ended")

    def _resigned(self, *args: object) -> None:
        if args and args[-1] == self.shard_key:
            self._wake.set()

    async def _campaign(self) -> None:
        """One try for the lock; on a win, the epoch is bumped on the same session."""
        conn = await self._connection()
        if not self._idle_timeout:
            await conn.fetch(_TERMINATE_LAPSED, self.shard_key)
        started = time.monotonic()
        # Refused once for a shared session: that does not change while the process runs.
        if self.refused is None and await conn.fetchval(
            "select pg_try_advisory_lock(hashtext($1))", self.lock_key
        ):
            shared = await self._shared_session(conn)
            epoch = None
            if not shared:
                epoch = await conn.fetchval(_CLAIM, self.shard_key, self.holder, self.budget.lease_s)
            if epoch is None:
                await conn.execute("select pg_advisory_unlock(hashtext($1))", self.lock_key)
                self._refuse(
                    "the advisory lock is not held by this session (a transaction-pooling proxy "
                    "such as pgbouncer in transaction mode?): use a direct or session-pooled "
                    "connection to lead"
                )
            else:
                self._renewed_at = started
                self._become(Role.LEADER, epoch, self.holder)
                log.warning("leading", extra={"reason": f"shard {self.shard_key} epoch {epoch}"})
                return
        else:
            row = await conn.fetchrow(_CURRENT, self.shard_key)
            epoch, leader = (row[0], row[1]) if row is not None else (None, None)
            if (epoch, leader) != (self.epoch, self.leader):
                self.epoch, self.leader = epoch, leader
                self._on_change()
        await self._sleep(self._jittered())

    async def _shared_session(self, conn: asyncpg.Connection) -> bool:
        """Does another client see this session's settings? Behind a transaction-pooling proxy,
        a fresh connection is handed the server session just released (LIFO), settings and
        advisory lock included, and the pg_locks guard alone would pass while no client can be
        told apart from another."""
        token = secrets.token_hex(8)
        await conn.execute(f"set monitor.session = '{token}'")
        probe = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT_S)
        try:
            seen = await probe.fetchval("select current_setting('monitor.session', true)")
        finally:
            await probe.close()
        return bool(seen == token)

    def _refuse(self, why: str) -> None:
        log.error("refusing to lead", extra={"reason": why})
        self.refused = why

    async def _hold(self) -> None:
        """Renew every R; a renew that fails, finds no row or is late ends the leadership."""
        await self._sleep(max(0.0, self.budget.renew_s - (time.monotonic() - self._renewed_at)))
        if self.role is not Role.LEADER or self._stopping:
            return
        if self.lease_left() <= 0:  # woken after a pause: the lease may be someone else's now
            self._lost("lease deadline passed before renewing")
            return
        conn = self._conn
        if conn is None:
            self._lost("no connection")
            return
        started = time.monotonic()
        try:
            async with asyncio.timeout(STATEMENT_TIMEOUT_S):
                epoch = await conn.fetchval(_RENEW, self.shard_key, self.epoch, self.budget.lease_s)
        except Exception as exc:
            self._lost(f"lease not renewed: {reason(exc)}")
            return
        if epoch is None:
            self._lost("lease taken over")
            return
        self._renewed_at = started
        self.renew_seconds(time.monotonic() - started)

    def _lost(self, why: str) -> None:
        """Demote (if leading) and drop the session: its lock goes with it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        if self.role is Role.LEADER:
            log.warning("leadership lost", extra={"reason": why})
            self._become(Role.FOLLOWER, self.epoch, None)
        else:
            log.debug("election session failed", extra={"reason": why})

    def _become(self, role: Role, epoch: int | None, leader: str | None) -> None:
        if role is not self.role:
            self.transitions += 1
        self.role, self.epoch, self.leader = role, epoch, leader
        self._on_change()

    def step_down(self, why: str) -> None:
        """A write was refused (the epoch moved on) or the takeover failed: demote now, not at the
        next renew; the lock goes with the session."""
        if self.role is Role.LEADER:
            self._lost(why)
            self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        """Until `seconds` pass or a wake-up (a resign NOTIFY'd, a step down) comes; one that came
        before the sleep began ends it at once."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _jittered(self) -> float:
        return RETRY_S * random.uniform(0.8, 1.2)

    # ------------------------------------------------------------ stop

    async def resign(self) -> None:
        """SIGTERM: end the lease, free the lock and tell the followers, so that one leads at once."""
        self._stopping = True
        self._wake.set()
        conn, self._conn = self._conn, None
        was_leader = self.role is Role.LEADER
        if was_leader:
            self._become(Role.FOLLOWER, self.epoch, None)
        if conn is None:
            return
        try:
            async with asyncio.timeout(STATEMENT_TIMEOUT_S):
                if was_leader:
                    await conn.execute(
                        "update monitor_cluster set expires_at = now() where shard = $1 and epoch = $2 "
                        "and holder_pid = pg_backend_pid()",
                        self.shard_key,
                        self.epoch,
                    )
                    await conn.execute("select pg_advisory_unlock_all()")
                    await conn.execute("select pg_notify($1, $2)", CHANNEL, self.shard_key)
                    log.info("resigned", extra={"reason": f"shard {self.shard_key} epoch {self.epoch}"})
                await conn.close()
        except Exception as exc:
            log.warning("resign incomplete", extra={"reason": reason(exc)})
            conn.terminate()
