"""The outbox of an HA leader: the claim before each send, rows in doubt first and counted, no
send past the lease, and the webhook's X-Monitor-Notification-Id, stable per outbox row."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace

import aiohttp
import pytest

from alerts.notifiers.webhook import ID_HEADER, WebhookConfig, WebhookNotifier
from alerts.outbox import Outbox
from monitor.daemon import _Lease
from monitor.store import MemoryStore, OutboxItem
from tests.fakes.clock import FakeClock
from tests.fakes.receivers import Receiver, Receivers
from tests.notifiers.samples import notification


class FakeLease:
    """What the daemon's lease answers, scripted: time left and claims, with the claims made."""

    def __init__(self, epoch: int, left_s: float = 10.0, claims: bool | None = True) -> None:
        self.epoch = epoch
        self.left_s = left_s
        self.answer = claims
        self.claimed: list[int] = []

    def left(self) -> float:
        return self.left_s

    async def claim(self, item: OutboxItem) -> bool | None:
        if self.left_s <= 0:
            return None
        self.claimed.append(item.id)
        return self.answer


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    receivers = Receivers()
    try:
        yield await receivers.start(script=[503], default=200)
    finally:
        await receivers.aclose()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def _outbox(store: MemoryStore, hook: Receiver, session: aiohttp.ClientSession, clock: FakeClock,
            redelivered: list[str]) -> Outbox:  # fmt: skip
    config = WebhookConfig.model_validate({"type": "webhook", "url": f"{hook.url}/in"})
    return Outbox(
        store, {"hook": WebhookNotifier("hook", config, session)}, clock, jitter=lambda: 1.0,
        on_redelivered=redelivered.append,
    )  # fmt: skip


async def test_rows_in_doubt_go_first_are_counted_and_keep_their_notification_id(
    hook: Receiver, session: aiohttp.ClientSession
) -> None:
    clock, store, redelivered = FakeClock(), MemoryStore(), []
    fresh, doubtful = await store.commit(
        None,
        [("hook", notification("firing").to_json()), ("hook", notification("resolved").to_json())],
        clock.now(),
    )
    doubtful.claimed_epoch = 1  # claimed by the leader of epoch 1, which died mid-send
    outbox = _outbox(store, hook, session, clock, redelivered)
    lease = FakeLease(epoch=2)
    outbox.lease = lease
    await outbox.load()
    retry_at = await outbox.step("hook")  # the in-doubt row first: 503
    assert retry_at is not None and lease.claimed == [doubtful.id]
    clock.advance(retry_at - clock.now())
    assert await outbox.step("hook") is None  # the retry (200), then the other row
    assert lease.claimed == [doubtful.id, doubtful.id, fresh.id]
    assert redelivered == ["hook"]  # once, when it finally went out
    first, again, other = await hook.wait_for(3)
    assert [r.json["event"] for r in (first, again, other)] == ["resolved", "resolved", "firing"]
    assert first.headers[ID_HEADER] == again.headers[ID_HEADER] != other.headers[ID_HEADER]
    assert len(first.headers[ID_HEADER]) == 32
    assert await store.pending() == []


async def test_no_send_past_the_lease_or_when_the_claim_fails(
    hook: Receiver, session: aiohttp.ClientSession
) -> None:
    clock, store = FakeClock(), MemoryStore()
    await store.commit(None, [("hook", notification("firing").to_json())], clock.now())
    outbox = _outbox(store, hook, session, clock, [])
    lease = FakeLease(epoch=1, left_s=0.0)
    outbox.lease = lease
    await outbox.load()
    assert await outbox.step("hook") == clock.now() + 1.0  # tried again shortly, nothing sent
    lease.left_s, lease.answer = 10.0, False  # the row is no longer pending: another leader sent it
    assert await outbox.step("hook") is None
    assert hook.requests == [] and outbox.pending == 0


async def test_a_shard_leader_never_claims_a_row_of_another_shards_check() -> None:
    """Whatever was loaded, the lease refuses a row whose check this shard does not own, before
    any claim is asked of the store."""
    asked: list[int] = []

    async def claim(item_id: int, shard: str, epoch: int) -> bool:
        asked.append(item_id)
        return True

    elector = SimpleNamespace(epoch=3, shard_key="0/2", lease_left=lambda: 5.0)
    store = SimpleNamespace(owns=lambda payload: payload["check"] == "database", claim=claim)
    lease = _Lease(elector, store, 3, lambda: None)  # type: ignore[arg-type]
    mine = OutboxItem(1, "hook", {"check": "database"}, 0.0, 0.0)
    theirs = OutboxItem(2, "hook", {"check": "backend-api"}, 0.0, 0.0)
    assert await lease.claim(theirs) is False
    assert await lease.claim(mine) is True
    assert asked == [1]
