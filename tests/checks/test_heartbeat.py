"""The heartbeat check alone: its config (derived interval, grace default, secret token) and its
judgement from the heartbeat book on a fake clock, the store re-read for other replicas' pings."""

from __future__ import annotations

import textwrap
from typing import Any

import aiohttp
import pytest

from checks import CheckDeps, check_types
from checks.heartbeat import HeartbeatCheck
from monitor.config import ConfigError, parse_config
from monitor.models import iso
from monitor.store import HeartbeatBook, MemoryStore, StoreError
from tests.fakes.clock import FakeClock

TOKEN = "hb-token-s3cret-value"


def heartbeat(monitor: str = "", **keys: str) -> Any:
    table = {"name": "job", "type": "heartbeat", "period": "1d", "token": TOKEN, **keys}
    lines = "\n".join(f'{k} = "{v}"' for k, v in table.items())
    return parse_config(textwrap.dedent(monitor) + "[[checks]]\n" + lines, {}).checks[0]


@pytest.mark.parametrize(
    ("monitor", "keys", "interval_s", "timeout_s"),
    [
        pytest.param("", {}, 60.0, 10.0, id="1d-gives-1m"),
        pytest.param("", {"period": "5m"}, 30.0, 10.0, id="5m-gives-30s"),
        pytest.param("", {"period": "30s"}, 3.0, 3.0, id="30s-gives-3s-timeout-within"),
        pytest.param('[monitor]\ndefault_interval = "20s"\n', {}, 60.0, 10.0, id="not-default-interval"),
        pytest.param(
            '[monitor]\ndefault_timeout = "5s"\n', {"period": "10s"}, 1.0, 1.0, id="not-default-timeout"
        ),
        pytest.param("", {"interval": "2h", "timeout": "1s"}, 7200.0, 1.0, id="as-written"),
        pytest.param("", {"interval": "2s", "timeout": "5s"}, 2.0, 2.0, id="timeout-kept-within"),
    ],
)
def test_the_interval_defaults_to_the_smaller_of_period_tenth_and_1m(
    monitor: str, keys: dict[str, str], interval_s: float, timeout_s: float
) -> None:
    check = heartbeat(monitor, **keys)
    assert (check.interval, check.timeout) == (interval_s, timeout_s)


def test_grace_defaults_to_0_and_the_token_is_a_secret() -> None:
    check = heartbeat()
    assert check.grace == 0.0 and check.period == 86400.0
    assert TOKEN not in repr(check) and check.token.get_secret_value() == TOKEN
    assert heartbeat(grace="1h").grace == 3600.0


@pytest.mark.parametrize(
    ("table", "error"),
    [
        pytest.param('name = "j"\ntype = "heartbeat"\ntoken = "t0k3n"', "checks[0].period: ", id="no-period"),
        pytest.param('name = "j"\ntype = "heartbeat"\nperiod = "1d"', "checks[0].token: ", id="no-token"),
        pytest.param(
            'name = "j"\ntype = "heartbeat"\nperiod = "0s"\ntoken = "t0k3n"',
            "checks[0].period: ",
            id="period-0",
        ),
        pytest.param(
            'name = "j"\ntype = "heartbeat"\nperiod = "1d"\ntoken = ""', "checks[0].token: ", id="empty-token"
        ),
    ],
)
def test_period_and_token_are_required(table: str, error: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[[checks]]\n" + table, {})
    assert any(e.startswith(error) for e in caught.value.errors), caught.value.errors


def test_the_type_is_registered() -> None:
    assert check_types()["heartbeat"] is HeartbeatCheck


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def book(store: MemoryStore, clock: FakeClock) -> HeartbeatBook:
    book = HeartbeatBook(store, clock)
    await book.configure(["job"])
    return book


def make(http_session: aiohttp.ClientSession, book: HeartbeatBook, **keys: str) -> HeartbeatCheck:
    return HeartbeatCheck(heartbeat(**keys), CheckDeps(http=http_session, heartbeats=book))


async def test_checkdeps_without_a_book_still_builds(http_session: aiohttp.ClientSession) -> None:
    check = HeartbeatCheck(heartbeat(), CheckDeps(http=http_session))
    result = await check.run()  # configured when first seen: waiting
    assert result.up and result.reason is not None and result.reason.startswith("waiting for the first ping")
    assert check.target() == "/api/v1/heartbeats/job"


async def test_up_within_period_plus_grace_down_after_with_since_last_s(
    http_session: aiohttp.ClientSession, book: HeartbeatBook, clock: FakeClock
) -> None:
    check = make(http_session, book, period="10m", grace="2m")
    await book.ping("job", True, None)
    clock.advance(12 * 60)
    result = await check.run()
    assert result.up and result.reason is None and result.samples == {"since_last_s": 720.0}
    clock.advance(1.5)
    result = await check.run()
    assert not result.up and result.reason == "no ping for 12m 1s (period 10m + grace 2m)"
    assert result.samples == {"since_last_s": 721.5}


async def test_without_grace_the_reason_names_the_period_alone(
    http_session: aiohttp.ClientSession, book: HeartbeatBook, clock: FakeClock
) -> None:
    check = make(http_session, book, period="1h")
    await book.ping("job", True, None)
    clock.advance(3 * 3600 + 125)
    assert (await check.run()).reason == "no ping for 3h 2m (period 1h)"


async def test_a_never_pinged_heartbeat_is_waiting_then_down(
    http_session: aiohttp.ClientSession, book: HeartbeatBook, clock: FakeClock
) -> None:
    check = make(http_session, book, period="1h", grace="30m")
    due = clock.now() + 5400
    clock.advance(5400)
    result = await check.run()
    assert result.up and result.samples == {}
    assert result.reason == f"waiting for the first ping (down after {iso(due)})"
    clock.advance(1)
    result = await check.run()
    assert not result.up and result.reason == "no ping since configured 1h 30m ago" and result.samples == {}


async def test_a_fail_ping_is_down_with_its_reason(
    http_session: aiohttp.ClientSession, book: HeartbeatBook, clock: FakeClock
) -> None:
    check = make(http_session, book)
    await book.ping("job", False, "backup volume full")
    clock.advance(42)
    result = await check.run()
    assert not result.up and result.reason == "failure reported: backup volume full"
    assert result.samples == {"since_last_s": 42.0}


async def test_a_ping_another_replica_stored_is_read_at_the_run(
    http_session: aiohttp.ClientSession, book: HeartbeatBook, store: MemoryStore, clock: FakeClock
) -> None:
    check = make(http_session, book, period="1h")
    clock.advance(7200)
    assert not (await check.run()).up
    await store.save_ping("job", clock.now() - 5, True, None)  # through the shared store, not this book
    result = await check.run()
    assert result.up and result.samples == {"since_last_s": 5.0}
    await store.save_ping("job", clock.now() - 60, False, "older")  # an older ping changes nothing
    assert (await check.run()).up


async def test_a_failing_store_leaves_the_book_to_judge(
    http_session: aiohttp.ClientSession,
    book: HeartbeatBook,
    store: MemoryStore,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    check = make(http_session, book)
    await book.ping("job", True, None)

    async def down(*_: Any) -> None:
        raise StoreError("state.db: disk full")

    monkeypatch.setattr(store, "load_heartbeats", down)
    clock.advance(10)
    result = await check.run()
    assert result.up and result.samples == {"since_last_s": 10.0}


async def test_the_first_configured_time_is_stored_once(store: MemoryStore, clock: FakeClock) -> None:
    first = HeartbeatBook(store, clock)
    await first.configure(["job"])
    configured_at = clock.now()
    clock.advance(100)
    again = HeartbeatBook(store, clock)  # a restart
    await again.configure(["job", "other"])
    assert [(h.name, h.configured_at) for h in await store.load_heartbeats()] == [
        ("job", configured_at),
        ("other", clock.now()),
    ]
    beat = again.get("job")
    assert beat is not None and beat.configured_at == configured_at


async def test_a_first_configured_time_the_store_refused_is_written_at_a_later_run(
    http_session: aiohttp.ClientSession, store: MemoryStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down(*_: Any) -> None:
        raise StoreError("state.db: disk full")

    book = HeartbeatBook(store, clock)
    with monkeypatch.context() as patched:
        patched.setattr(store, "add_heartbeat", down)
        await book.configure(["job"])
    assert await store.load_heartbeats() == []
    await make(http_session, book).run()
    assert [h.configured_at for h in await store.load_heartbeats()] == [clock.now()]
