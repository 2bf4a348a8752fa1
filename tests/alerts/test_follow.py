"""An HA follower's view of the leader's alerts (`AlertPipeline.follow`, every second): what the
leader changed is read again, what it resolved is dropped, and the rest is not decoded again (a
storm's 20,000 alerts, read whole every second, cost 1.2 s a read)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from alerts import pipeline as pipeline_module
from alerts.model import Alert, AlertState, Suppression
from alerts.outbox import Outbox
from alerts.pipeline import AlertPipeline
from monitor.store import Store
from monitor.store.sqlite import SqliteStore
from tests.alerts.harness import Harness, policy_for, up
from tests.alerts.test_storm import NAMES, fail_round, harness


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """The leader's and the follower's store over one SQLite file: two processes' views."""
    pair = (SqliteStore(str(tmp_path / "state.db")), SqliteStore(str(tmp_path / "state.db")))
    for store in pair:
        await store.open()
    yield pair
    for store in pair:
        await store.close()


def replicas(stores: tuple[Store, Store]) -> tuple[Harness, AlertPipeline]:
    """The leader, and another replica's pipeline following it: it reads, never decides."""
    leader = harness(store=stores[0])
    outbox = Outbox(stores[1], {}, leader.clock)
    return leader, AlertPipeline(policy_for(leader.config), stores[1], outbox, leader.clock)


def view(p: AlertPipeline) -> dict[str, tuple[str, str | None, float | None, bool]]:
    return {a.check: (a.state.value, a.suppressed, a.value, a.acknowledged) for a in p.active.values()}


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The alert documents the pipeline decodes, by check."""
    seen: list[str] = []
    real = Alert.from_doc

    def counting(doc: dict[str, object]) -> Alert:
        alert = real(doc)
        seen.append(alert.check)
        return alert

    monkeypatch.setattr(pipeline_module.Alert, "from_doc", staticmethod(counting))
    return seen


async def test_a_follower_reads_only_what_the_leader_changed(
    stores: tuple[Store, Store], decoded: list[str]
) -> None:
    leader, follower = replicas(stores)
    await fail_round(leader)
    await fail_round(leader)  # 40 firing, swallowed by the storm
    await follower.load()
    assert len(decoded) == len(NAMES)
    assert view(follower) == view(leader.manager)
    assert follower.storm is not None and list(follower.storm.members) == NAMES

    decoded.clear()
    await follower.follow()  # nothing changed: nothing decoded, nothing lost
    assert decoded == []
    assert view(follower) == view(leader.manager) and len(follower.storm.members) == len(NAMES)

    await leader.run(NAMES[0], up())  # resolves (resolve_after 1)
    assert NAMES[0] not in view(leader.manager)
    await follower.follow()
    assert decoded == []  # a resolve is a row gone from the active ones: nothing to decode
    assert view(follower) == view(leader.manager)
    assert NAMES[0] not in follower.storm.members and len(follower.storm.members) == len(NAMES) - 1


async def test_a_changed_alert_replaces_the_followers_copy_and_a_storm_ends_there_too(
    stores: tuple[Store, Store], decoded: list[str]
) -> None:
    leader, follower = replicas(stores)
    await fail_round(leader)
    await fail_round(leader)
    await follower.load()
    decoded.clear()
    # The leader acknowledges one: its row changes, and only it is read again.
    await leader.manager.acknowledge(leader.manager.active[next(iter(leader.manager.active))].id, "ana", None)
    await follower.follow()
    acked = [a for a in follower.active.values() if a.acknowledged]
    assert [a.acknowledged_by for a in acked] == ["ana"] and decoded == [acked[0].check]
    # All but a few recover: the storm is over on the leader, and so on the follower.
    for name in NAMES[:-3]:
        await leader.run(name, up())
    assert leader.manager.storm is None
    await follower.follow()
    assert follower.storm is None
    assert view(follower) == view(leader.manager)
    assert {a.suppressed for a in follower.active.values()} == {Suppression.STORM}
    assert all(a.state is AlertState.FIRING for a in follower.active.values())
