"""Storms (SPEC section 12): one page when many things fail at once, and uplink blindness."""

from __future__ import annotations

from alerts.model import AlertState, Suppression, alert_id
from tests.alerts.harness import Harness, down, up, utc

NIGHT = utc(2026, 11, 24, 3, 0)
N = 40


def _checks(n: int = N, prefix: str = "svc") -> str:
    return "".join(
        f'[[checks]]\nname = "{prefix}-{i:02d}"\ntype = "tcp"\nhost = "10.0.0.{i % 250}"\nport = 80\n'
        for i in range(n)
    )


POLICY = """
[notifiers.oncall]
type = "webhook"
url = "http://127.0.0.1:1/pagerduty"
[notifiers.team-chat]
type = "webhook"
url = "http://127.0.0.1:1/slack"
[[routes]]
match = { severity = "critical" }
notify = ["oncall", "team-chat"]
repeat = "30m"
"""

NAMES = [f"svc-{i:02d}" for i in range(N)]


def harness(extra: str = "", checks: str | None = None, **kwargs: object) -> Harness:
    return Harness.from_toml(extra + POLICY + (checks if checks is not None else _checks()), NIGHT, **kwargs)


async def fail_round(h: Harness, names: list[str] = NAMES) -> None:
    for name in names:
        await h.run(name, down("connection refused"))


async def test_forty_checks_down_at_once_one_storm_notification_per_notifier() -> None:
    h = harness()
    await fail_round(h)  # all pending (trigger_after 2): the storm is seen before anything pages
    assert h.manager.storm is not None
    assert h.sent == []
    assert {a.suppressed for a in h.manager.active.values()} == {Suppression.STORM}
    await fail_round(h)
    assert [(name, n.event) for name, n in h.sent] == [("oncall", "storm"), ("team-chat", "storm")]
    storm = h.sent[0][1]
    assert storm.storm_count == N
    assert storm.storm_checks == NAMES[:20]
    assert storm.summary == "storm: 40 checks down in 1m: " + ", ".join(NAMES[:20]) + ", ... and 20 more"
    assert storm.alert_id == f"storm-0-{'2026-11-24T03:00:00.000Z'}"
    alerts = list(h.manager.active.values())
    assert all(a.state is AlertState.FIRING and a.suppressed is Suppression.STORM for a in alerts)
    assert h.manager.suppressed_counts()["storm"] == N
    # One row per notifier in the outbox, not one per alert.
    assert h.outbox.pending == 0 and len(h.sent) == 2


async def test_storm_guard_off_pages_every_check() -> None:
    h = harness("[alerts]\nstorm = false\n")
    await fail_round(h)
    await fail_round(h)
    assert h.manager.storm is None
    assert [e for _, e, _, _ in h.events()] == ["firing"] * (2 * N)


async def test_a_few_checks_down_is_no_storm() -> None:
    h = harness()
    await fail_round(h, NAMES[:10])  # not more than 10
    await fail_round(h, NAMES[:10])
    assert h.manager.storm is None
    assert len(h.events()) == 20


async def test_storm_guard_counts_within_its_window_only() -> None:
    h = harness('[alerts]\nstorm = { checks = 10, window = "1m" }\n')
    for name in NAMES[:20]:  # one new failure every 10 s: never more than 6 in a minute
        await h.run(name, down())
        await h.run(name, down())
        h.clock.advance(10)
    assert h.manager.storm is None
    assert len(h.events()) == 40


async def test_uplink_blind_only_the_uplink_checks_page() -> None:
    uplink = (
        '[[checks]]\nname = "gateway"\ntype = "tcp"\nhost = "10.0.0.1"\nport = 53\n'
        '[[checks]]\nname = "public-dns"\ntype = "tcp"\nhost = "1.1.1.1"\nport = 53\n'
    )
    # The uplink checks are evaluated last: the others' storm, already seen, must not page.
    h = harness('[monitor]\nuplink = ["gateway", "public-dns"]\n', _checks() + uplink)
    everything = [*NAMES, "gateway", "public-dns"]
    await fail_round(h, everything)
    await fail_round(h, everything)
    for _ in range(3):
        await h.advance(60)
        await fail_round(h, everything)
    assert sorted((n, c) for n, e, c, _ in h.events()) == [
        ("oncall", "gateway"),
        ("oncall", "public-dns"),
        ("team-chat", "gateway"),
        ("team-chat", "public-dns"),
    ]
    assert {a.suppressed for a in h.manager.alerts_of("svc-00")} == {Suppression.UPLINK}
    assert h.manager.storm is None
    # Sticky like "down": the network back, the others still failing are not paged one by one.
    await h.run("gateway", up())
    await h.run("public-dns", up())
    h.clear()
    await fail_round(h)
    await h.advance(60)
    assert [e for _, e, _, _ in h.events()] == []
    assert h.manager.alerts_of("svc-00")[0].suppressed is Suppression.UPLINK


async def test_uplink_not_all_down_is_not_blind() -> None:
    uplink = (
        '[[checks]]\nname = "gateway"\ntype = "tcp"\nhost = "10.0.0.1"\nport = 53\n'
        '[[checks]]\nname = "public-dns"\ntype = "tcp"\nhost = "1.1.1.1"\nport = 53\n'
    )
    h = harness('[monitor]\nuplink = ["gateway", "public-dns"]\n', _checks(2) + uplink)
    for _ in range(2):
        await fail_round(h, ["gateway", "svc-00"])
    assert sorted(c for _, e, c, _ in h.events()) == ["gateway", "gateway", "svc-00", "svc-00"]


async def test_storm_over_names_the_checks_still_down_and_they_are_not_paged_after() -> None:
    h = harness()
    await fail_round(h)
    await fail_round(h)
    h.clear()
    still = NAMES[:9]  # fewer than `checks` (10) still down: the storm is over
    for name in NAMES[9:]:
        await h.run(name, up())
    assert h.manager.storm is None
    assert [(name, n.event) for name, n in h.sent] == [("oncall", "storm_over"), ("team-chat", "storm_over")]
    over = h.sent[0][1]
    assert over.storm_checks == still
    assert over.summary == "storm over: 9 checks still down: " + ", ".join(still)
    assert over.resolved_at is not None
    h.clear()
    for _ in range(40):  # well past the route's repeat: nothing one by one
        await fail_round(h, still)
        await h.advance(60)
    assert h.sent == []
    assert all(a.suppressed is Suppression.STORM for n in still for a in h.manager.alerts_of(n))
    for name in still:  # their resolves tell no one either: no one was paged for them
        await h.run(name, up())
    assert h.sent == []


async def test_storm_repeats_with_the_updated_count_per_route_repeat() -> None:
    h = harness()
    await fail_round(h)
    await fail_round(h)
    h.clear()
    for name in NAMES[:5]:
        await h.run(name, up())
    await h.advance(29 * 60)
    assert h.sent == []
    await h.advance(60)
    assert [(name, n.event) for name, n in h.sent] == [("oncall", "storm"), ("team-chat", "storm")]
    assert h.sent[0][1].storm_count == N - 5
    assert h.sent[0][1].alert_id == f"storm-0-{'2026-11-24T03:00:00.000Z'}"  # the same incident
    h.clear()
    await h.advance(30 * 60)
    assert len(h.sent) == 2


async def test_alert_notified_before_the_storm_is_not_affected() -> None:
    h = harness()
    await fail_round(h, NAMES[:1])
    await fail_round(h, NAMES[:1])
    assert len(h.sent) == 2
    h.clock.advance(120)
    await fail_round(h, NAMES[1:])
    await fail_round(h, NAMES[1:])
    assert h.manager.storm is not None
    first = h.manager.active[alert_id("svc-00", "up")]
    assert first.suppressed is None
    assert h.sent[2][1].storm_count == N - 1
    h.clear()
    await h.advance(30 * 60)  # its own repeat still goes, next to the storm's
    assert sorted((n, e, c) for n, e, c, _ in h.events() if e == "firing") == [
        ("oncall", "firing", "svc-00"),
        ("team-chat", "firing", "svc-00"),
    ]


async def test_only_notifiers_of_routes_the_storm_alerts_would_reach() -> None:
    extra = """
    [notifiers.db-team]
    type = "webhook"
    url = "http://127.0.0.1:1/db"
    [[routes]]
    match = { check = "db-*" }
    notify = ["db-team"]
    """
    h = Harness.from_toml(extra + POLICY + _checks(), NIGHT)
    await fail_round(h)
    await fail_round(h)
    assert sorted(name for name, _ in h.sent) == ["oncall", "team-chat"]


async def test_restart_during_a_storm_sends_no_second_storm_page() -> None:
    h = harness()
    await fail_round(h)
    await fail_round(h)
    assert len(h.sent) == 2
    h2 = Harness(h.config, h.clock, store=h.store)
    await h2.manager.load()
    await h2.outbox.load()
    assert h2.manager.storm is not None
    assert len(h2.manager.storm.members) == N
    await fail_round(h2)
    await fail_round(h2)
    await h2.advance(60)
    assert h2.sent == []
    # Its repeat counts from the first process's notification, and so does the end.
    await h2.advance(29 * 60)
    assert [(name, n.event) for name, n in h2.sent] == [("oncall", "storm"), ("team-chat", "storm")]
    h2.clear()
    for name in NAMES:
        await h2.run(name, up())
    assert [(name, n.event) for name, n in h2.sent] == [("oncall", "storm_over"), ("team-chat", "storm_over")]
    h3 = Harness(h.config, h.clock, store=h.store)
    await h3.manager.load()
    assert h3.manager.storm is None


async def test_storm_notification_is_stored_before_it_is_sent_and_retried() -> None:
    from alerts.notifiers.base import Retry

    h = harness(scripts={"oncall": [Retry("connect: connection refused")]})
    await fail_round(h)
    await fail_round(h)
    assert [name for name, _ in h.sent] == ["team-chat"]
    h.clock.advance(5)
    await h.deliver()
    assert [(name, n.event) for name, n in h.sent] == [("team-chat", "storm"), ("oncall", "storm")]
