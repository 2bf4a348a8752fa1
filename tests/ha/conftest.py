"""Fixtures of the HA tests: `ha_lab`, a fresh database with its target, PagerDuty and scraper."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.postgres import PostgresCluster
from tests.ha.harness import HaLab


@pytest.fixture
async def ha_lab(pg_cluster: PostgresCluster, tmp_path: Path) -> AsyncIterator[HaLab]:
    """An `HaLab` on a database of its own; replicas are started by the test (`await ha_lab.start(2)`)
    and whatever is still running at the end is killed."""
    async with pg_cluster.database(f"ha_{uuid.uuid4().hex[:12]}") as database:
        lab = await HaLab(pg_cluster, database, tmp_path).open()
        try:
            yield lab
        finally:
            await lab.aclose()
