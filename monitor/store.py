"""The state store: embedded SQLite (default), PostgreSQL for shared state, or memory."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import aiosqlite
import asyncpg


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> bool:
        """True when the store answers; `/readyz` depends on it."""
        ...


class MemoryStore:
    """Throwaway state: nothing survives a restart."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True


class SqliteStore:
    """One file next to the daemon; aiosqlite keeps its I/O off the event loop."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("pragma journal_mode=wal")
        await self._db.execute("create table if not exists meta (key text primary key, value text)")
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def ping(self) -> bool:
        if self._db is None:
            return False
        try:
            await self._db.execute("select 1")
        except Exception:
            return False
        return True


class PostgresStore:
    """Shared state for HA pairs and shards."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        async with self._pool.acquire() as conn:
            await conn.execute("create table if not exists monitor_meta (key text primary key, value text)")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with self._pool.acquire(timeout=2) as conn:
                await conn.fetchval("select 1")
        except Exception:
            return False
        return True


def make_store(url: str) -> Store:
    """`memory`, `sqlite:///relative.db`, `sqlite:////absolute.db` or `postgresql://...`."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///") or ":memory:")
    return PostgresStore(url)
