"""Alert lifecycle, routing and suppression, driven through runbook scenarios on a fake clock.

The policy is the TyneBase runbook's "Alert Configuration": critical pages immediately
(PagerDuty + Slack), warnings are notified during business hours (Slack + email).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import textwrap
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from alerts.model import Alert, AlertPolicy, AlertState, Route, RouteProgress, alert_id
from monitor.config import parse_config
from monitor.models import CheckResult
from tests.alerts.harness import Failed, Harness, Retry, down, policy_for, up, utc

POLICY = """
[monitor]
timezone = "Europe/London"
[business_hours]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "18:00"
[thresholds.latency_p95_ms]
warning = 500
critical = 1000
window = "5m"
[notifiers.oncall]
type = "webhook"
url = "http://127.0.0.1:1/pagerduty"
[notifiers.team-chat]
type = "webhook"
url = "http://127.0.0.1:1/slack"
[notifiers.ops-mail]
type = "webhook"
url = "http://127.0.0.1:1/mail"
[[routes]]
match = { severity = "critical" }
notify = ["oncall", "team-chat"]
repeat = "30m"
escalate = [ { after = "15m", notify = ["ops-mail"] } ]
[[routes]]
match = { severity = "warning" }
notify = ["team-chat", "ops-mail"]
when = "business_hours"
repeat = "4h"
[[checks]]
name = "database"
type = "tcp"
host = "db"
port = 5432
[[checks]]
name = "backend-api"
type = "http"
url = "https://tynebase-backend.fly.dev/health"
depends_on = ["database"]
runbook = "https://wiki.example.com/runbook#issue-1-backend-api-not-responding"
labels = { team = "backend" }
[[checks]]
name = "collab-ws"
type = "websocket"
url = "wss://tynebase-collab.fly.dev"
depends_on = ["database"]
"""

MONDAY_10 = utc(2026, 11, 23, 10, 0)  # 10:00 in London (UTC in winter): business hours
MONDAY_22 = utc(2026, 11, 23, 22, 0)


def harness(at=MONDAY_10, extra: str = "", **kwargs: object) -> Harness:
    return Harness.from_toml(POLICY + extra, at, **kwargs)


async def all_up(h: Harness) -> None:
    for check in ("database", "backend-api", "collab-ws"):
        await h.run(check, up())


async def test_backend_503_pages_once_and_resolves_once() -> None:
    """Issue 1, Backend API not responding: one page + one Slack message, one resolve each."""
    h = harness()
    await all_up(h)
    await h.run("database", up())
    await h.run("backend-api", down())  # pending (trigger_after 2)
    assert h.sent == []
    assert h.manager.active[alert_id("backend-api", "up")].state == "pending"
    await h.run("backend-api", down())
    assert h.events() == [
        ("oncall", "firing", "backend-api", "critical"),
        ("team-chat", "firing", "backend-api", "critical"),
    ]
    page = h.sent[0][1]
    assert page.runbook == "https://wiki.example.com/runbook#issue-1-backend-api-not-responding"
    assert page.summary == "backend-api: up 0 < 1 (status 503)"
    assert page.alert_id == alert_id("backend-api", "up")
    for _ in range(5):  # still down: no second page
        h.clock.advance(30)
        await h.run("database", up())
        await h.run("backend-api", down())
    assert len(h.sent) == 2
    await h.run("backend-api", up())
    assert h.events()[2:] == [
        ("oncall", "resolved", "backend-api", "critical"),
        ("team-chat", "resolved", "backend-api", "critical"),
    ]
    resolved = h.sent[2][1]
    assert resolved.duration_s == 150
    assert alert_id("backend-api", "up") not in h.manager.active


async def test_database_down_only_the_database_pages() -> None:
    """The database goes down while backend and collaboration server depend on it."""
    h = harness()
    await all_up(h)
    h.clock.advance(10)
    # The dependents happen to run first after the outage begins.
    for _ in range(3):
        await h.run("backend-api", down("connect: connection refused"))
        await h.run("collab-ws", down("handshake refused: status 502"))
        await h.run("database", down("connection refused"))
        h.clock.advance(30)
    assert {(n, c) for n, e, c, s in h.events()} == {("oncall", "database"), ("team-chat", "database")}
    assert h.manager.active[alert_id("backend-api", "up")].suppressed == "dependency"
    assert h.manager.check_suppression("collab-ws", h.clock.now()) == "dependency"
    # The database recovers; the dependents' alerts, born in its outage, resolve unannounced.
    await h.run("database", up())
    await h.run("backend-api", up())
    await h.run("collab-ws", up())
    assert {(n, e, c) for n, e, c, s in h.events()} == {
        ("oncall", "firing", "database"),
        ("team-chat", "firing", "database"),
        ("oncall", "resolved", "database"),
        ("team-chat", "resolved", "database"),
    }


async def test_dependency_recovered_but_dependent_still_down_stays_one_outage() -> None:
    h = harness()
    await all_up(h)
    for _ in range(2):
        await h.run("database", down())
        await h.run("backend-api", down())
    await h.run("database", up())
    for _ in range(3):
        await h.run("backend-api", down())
    # The backend's breach began during the database outage: part of the outage already paged.
    assert [c for _, e, c, _ in h.events() if e == "firing"] == ["database", "database"]
    assert h.manager.active[alert_id("backend-api", "up")].suppressed == "dependency"


async def test_p95_warning_held_outside_business_hours_released_at_opening() -> None:
    """p95 latency over 500 ms but under 1000 ms: a warning to Slack/email only, in business hours."""
    h = harness(at=MONDAY_22)
    for _ in range(10):
        await h.run("database", up())
        await h.run("backend-api", up(latency_ms=700))
        h.clock.advance(30)
    alert = h.manager.active[alert_id("backend-api", "latency_p95_ms")]
    assert alert.state == "firing" and alert.severity == "warning"
    assert h.sent == []  # 22:00: held, nobody is woken for a warning
    await h.advance(10 * 3600)  # to Tuesday 08:xx: still closed
    assert h.sent == []
    await h.advance(3600)  # past 09:00 Tuesday
    assert h.events() == [
        ("team-chat", "firing", "backend-api", "warning"),
        ("ops-mail", "firing", "backend-api", "warning"),
    ]
    assert all(name != "oncall" for name, _ in h.sent)


async def test_held_warning_that_resolves_before_opening_is_never_sent() -> None:
    h = harness(at=MONDAY_22)
    for _ in range(3):
        await h.run("database", up())
        await h.run("backend-api", up(latency_ms=700))
    for _ in range(12):  # 6 minutes of fast runs clear the 5-minute window
        h.clock.advance(30)
        await h.run("backend-api", up(latency_ms=50))
    assert alert_id("backend-api", "latency_p95_ms") not in h.manager.active
    await h.advance(12 * 3600)
    assert h.sent == []


MAINTENANCE = """
[[maintenance]]
name = "deployment window"
checks = ["*"]
cron = "0 2 * * *"
duration = "2h"
"""


async def test_maintenance_window_sends_nothing_then_still_broken_check_pages_at_close() -> None:
    """A maintenance window covering the 02:00-04:00 deployment."""
    h = harness(at=utc(2026, 11, 24, 2, 10), extra=MAINTENANCE)
    for _ in range(4):
        await h.run("database", up())
        await h.run("backend-api", down())
        h.clock.advance(60)
    alert = h.manager.active[alert_id("backend-api", "up")]
    assert alert.state == "firing" and alert.suppressed == "maintenance"
    assert h.manager.check_suppression("backend-api", h.clock.now()) == "maintenance"
    assert h.sent == []
    await h.advance(3600 + 40 * 60)  # 03:54: still inside
    assert h.sent == []
    await h.advance(10 * 60)  # 04:04: the window has closed, the backend is still down
    assert h.events() == [
        ("oncall", "firing", "backend-api", "critical"),
        ("team-chat", "firing", "backend-api", "critical"),
    ]


async def test_fixed_during_maintenance_is_never_sent() -> None:
    h = harness(at=utc(2026, 11, 24, 2, 10), extra=MAINTENANCE)
    for result in (down(), down(), down(), up()):
        await h.run("database", up())
        await h.run("backend-api", result)
    await h.advance(3 * 3600)
    assert h.sent == []


async def test_repeat_escalation_and_acknowledgement() -> None:
    h = harness()
    await all_up(h)
    await h.run("database", down())
    await h.run("database", down())
    assert [(n, e) for n, e, _, _ in h.events()] == [("oncall", "firing"), ("team-chat", "firing")]
    h.clear()
    await h.advance(15 * 60)  # not acknowledged after 15 min: escalate to ops-mail
    assert [(n, e) for n, e, _, _ in h.events()] == [("ops-mail", "firing")]
    h.clear()
    await h.advance(15 * 60)  # 30 min after the page: repeat
    assert [(n, e) for n, e, _, _ in h.events()] == [("oncall", "firing"), ("team-chat", "firing")]
    h.clear()
    acked = await h.manager.acknowledge(alert_id("database", "up"), "alice", "looking")
    assert acked is not None and acked.acknowledged
    await h.deliver()
    assert sorted((n, e) for n, e, _, _ in h.events()) == [
        ("oncall", "acknowledged"),
        ("ops-mail", "acknowledged"),
        ("team-chat", "acknowledged"),
    ]
    h.clear()
    await h.advance(3 * 3600)  # acknowledged: no repeats
    assert h.sent == []
    assert await h.manager.acknowledge("no-such-alert", None, None) is None


async def test_severity_change_is_notified() -> None:
    h = harness(extra="[thresholds.body_bytes]\nwarning = 1000\ncritical = 5000\n")
    await h.run("database", up())
    await h.run("backend-api", CheckResult.success(10, body_bytes=2000))
    await h.advance(12 * 60)
    assert ("team-chat", "firing", "backend-api", "warning") in h.events()
    h.clear()
    await h.run("backend-api", CheckResult.success(10, body_bytes=9000))
    assert h.events() == [
        ("oncall", "firing", "backend-api", "critical"),
        ("team-chat", "firing", "backend-api", "critical"),
    ]
    h.clear()
    await h.run("backend-api", CheckResult.success(10, body_bytes=10))
    # Resolved goes to every notifier that was told it was firing, on either route.
    assert sorted(n for n, e, _, _ in h.events() if e == "resolved") == ["oncall", "ops-mail", "team-chat"]


async def test_flapping_holds_notifications_and_sends_one_notice() -> None:
    h = harness(extra="[thresholds.up]\ntrigger_after = 1\n")
    await h.run("database", up())
    for _ in range(8):  # down/up every minute: 16 state changes in 16 minutes
        await h.run("database", down())
        h.clock.advance(60)
        await h.run("database", up())
        h.clock.advance(60)
    flapping = [e for e in h.events() if e[1] == "flapping"]
    assert flapping == [
        ("oncall", "flapping", "database", "critical"),
        ("team-chat", "flapping", "database", "critical"),
    ]
    firing = [e for e in h.events() if e[1] == "firing"]
    assert len(firing) <= 2 * 4  # the first cycles paged, then it was recognised and held
    before = len(h.sent)
    for _ in range(4):
        await h.run("database", down())
        h.clock.advance(60)
        await h.run("database", up())
        h.clock.advance(60)
    assert len(h.sent) == before  # held while flapping, no second notice
    assert h.manager.check_suppression("database", h.clock.now()) is None


async def test_silence_holds_then_releases() -> None:
    h = harness()
    now = h.clock.now()
    silence = await h.manager.add_silence(["backend-*"], now, now + 3600, "deploying")
    await h.run("database", up())
    await h.run("backend-api", down())
    await h.run("backend-api", down())
    assert h.sent == []
    assert h.manager.active[alert_id("backend-api", "up")].suppressed == "silence"
    assert await h.manager.delete_silence(silence.id)
    await h.deliver()
    assert [(n, c) for n, _, c, _ in h.events()] == [("oncall", "backend-api"), ("team-chat", "backend-api")]
    assert not await h.manager.delete_silence(silence.id)


async def test_outbox_retries_with_backoff_then_delivers() -> None:
    h = harness(scripts={"oncall": [Retry("HTTP 500"), Retry("HTTP 500"), Retry("HTTP 429", after_s=10)]})
    await h.run("database", down())
    await h.run("database", down())
    assert [n for n, *_ in h.events()] == ["team-chat"]  # Slack is not held up by PagerDuty
    assert h.outbox.pending == 1
    await h.advance(1, step=1)  # attempt 2 after 1 s
    await h.advance(2, step=1)  # attempt 3 after 2 s more: 429 asks for 10 s
    assert h.notifiers["oncall"].attempts == 3
    await h.advance(9, step=1)
    assert [n for n, *_ in h.events()] == ["team-chat"]
    await h.advance(1, step=1)
    assert [n for n, *_ in h.events()] == ["team-chat", "oncall"]
    assert h.outbox.pending == 0


async def test_permanent_failure_is_recorded_and_does_not_block() -> None:
    h = harness(scripts={"oncall": [Failed("HTTP 400: invalid routing key")]})
    await h.run("database", down())
    await h.run("database", down())
    assert [n for n, *_ in h.events()] == ["team-chat"]
    assert [i.last_error for i in h.outbox.failed] == ["HTTP 400: invalid routing key"]
    await h.run("database", up())
    assert [(n, e) for n, e, *_ in h.events()] == [
        ("team-chat", "firing"),
        ("oncall", "resolved"),
        ("team-chat", "resolved"),
    ]


async def test_gives_up_after_24_hours() -> None:
    h = harness(scripts={"oncall": [Retry("HTTP 503")] * 1000})
    await h.run("database", down())
    await h.run("database", down())
    await h.advance(25 * 3600, step=300)
    assert h.outbox.failed[0].last_error.startswith("gave up after 24h")
    assert h.outbox.pending <= 1  # repeats are not piled up behind an undelivered page
    assert h.notifiers["oncall"].attempts < 320  # 1 s doubling to 5 min, not a tight loop


async def test_state_survives_a_restart_no_second_page_no_lost_resolve() -> None:
    h = harness()
    await all_up(h)
    await h.run("database", down())
    await h.run("database", down())
    assert len(h.sent) == 2
    # A new process on the same store: same clock, fresh evaluators and manager.
    h2 = Harness(h.config, h.clock, store=h.store)
    await h2.manager.load()
    await h2.outbox.load()
    # Loaded with its counts: still firing, so the next failure pages no one again.
    assert h2.manager.active[alert_id("database", "up")].state is AlertState.FIRING
    await h2.run("database", down())
    await h2.advance(60)
    assert h2.sent == []
    await h2.run("database", up())
    assert [(n, e) for n, e, *_ in h2.events()] == [("oncall", "resolved"), ("team-chat", "resolved")]


async def test_undelivered_notification_survives_a_restart() -> None:
    h = harness(scripts={"oncall": [Retry("connect: connection refused")]})
    await h.run("database", down())
    await h.run("database", down())
    assert h.outbox.pending == 1
    h2 = Harness(h.config, h.clock, store=h.store)
    await h2.outbox.load()
    await h2.manager.load()
    h2.clock.advance(5)
    await h2.deliver()
    assert [(n, e) for n, e, *_ in h2.events()] == [("oncall", "firing")]


async def test_mass_outage_tick_gives_way_to_the_loop_and_still_settles_every_alert() -> None:
    """1,200 checks down at once: the tick yields to the loop (runs due meanwhile start on time)
    and every alert still gets its repeat."""
    checks = "".join(
        f'[[checks]]\nname = "svc-{i:04d}"\ntype = "tcp"\nhost = "10.0.0.1"\nport = 80\n' for i in range(1200)
    )
    h = Harness.from_toml(
        """
        [alerts]
        storm = false  # one page per check here: what is tested is the tick giving way
        [notifiers.oncall]
        type = "webhook"
        url = "http://127.0.0.1:1/pagerduty"
        [[routes]]
        match = { severity = "critical" }
        notify = ["oncall"]
        repeat = "30m"
        """
        + checks,
        utc(2026, 11, 24, 3, 0),
    )
    for name in h.evaluators:
        await h.run(name, down("connection refused"))
        await h.run(name, down("connection refused"))
    assert len(h.events()) == 1200
    h.clear()

    h.clock.advance(31 * 60)
    other_work_ran_during_tick = False

    async def other_work() -> None:
        nonlocal other_work_ran_during_tick
        other_work_ran_during_tick = not tick.done()

    tick = asyncio.ensure_future(h.manager.tick(h.clock.now()))
    await asyncio.gather(tick, other_work())
    await h.deliver()
    assert other_work_ran_during_tick
    assert sorted(check for _, event, check, _ in h.events() if event == "firing") == sorted(h.evaluators)


def test_stored_alert_is_what_asdict_gives_and_shares_nothing_with_the_live_alert() -> None:
    alert = Alert(
        id="f24a9de11a97c8cf",
        check="backend-api",
        metric="up",
        check_type="http",
        target="api.example.com",
        state=AlertState.FIRING,
        severity="critical",
        value=0.0,
        threshold=1.0,
        direction="below",
        started_at=1_764_000_000.0,
        labels={"team": "platform"},
        progress={"0": RouteProgress(first_at=1.0, last_at=2.0, escalated=1, notifiers=["oncall"])},
    )
    doc = alert.to_doc()
    assert doc == dataclasses.asdict(alert)
    assert json.loads(json.dumps(doc)) == doc  # plain JSON values, as the store keeps them
    assert Alert.from_doc(json.loads(json.dumps(doc))) == alert
    alert.labels["team"] = "other"
    alert.progress["0"].notifiers.append("ops-mail")
    assert doc["labels"] == {"team": "platform"}
    assert doc["progress"]["0"]["notifiers"] == ["oncall"]


# ---------------------------------------------------------------- reload keeps route progress

NEW_ROUTE = """
match = { check = "collab-*" }
notify = ["ops-mail"]
"""


def reordered(policy: str) -> str:
    """`policy` with its two routes swapped and an unrelated route put first."""
    head, critical, rest = policy.split("[[routes]]")
    warning, checks = rest.split("[[checks]]", 1)
    return (
        head
        + "[[routes]]"
        + NEW_ROUTE
        + "[[routes]]"
        + warning
        + "[[routes]]"
        + critical
        + "[[checks]]"
        + checks
    )


async def page_then_reload(h: Harness, reload: AlertPolicy) -> list[tuple[str, int]]:
    """The database pages at 0; the policy is swapped at 5 min; (notifier, minute) of every
    firing delivered after the page, up to 61 minutes."""
    await all_up(h)
    start = h.clock.now()
    await h.run("database", down())
    await h.run("database", down())
    assert [(n, e) for n, e, _, _ in h.events()] == [("oncall", "firing"), ("team-chat", "firing")]
    h.clear()
    await h.advance(5 * 60)
    h.manager.policy = reload
    delivered: list[tuple[str, int]] = []
    for _ in range(56):
        await h.advance(60)
        delivered += [
            (name, round((h.clock.now() - start) / 60)) for name, n in h.sent if n.event == "firing"
        ]
        h.clear()
    return delivered


async def test_reload_reordering_routes_keeps_repeat_and_escalation() -> None:
    """The critical route moves from first to third: its repeat (30 m) and escalation (15 m)
    go on from the page, and the reorder itself pages nobody."""
    h = harness()
    before = h.manager.policy
    after = policy_for(parse_config(textwrap.dedent(reordered(POLICY)), {}))
    # Progress is kept by Route.key: the critical route's key is the same at its new index, and
    # the route now at its old index is another. Keyed by index, the alert's progress would
    # belong to the new collab route and the critical route would start with none: no first
    # delivery to escalate from, no last one to repeat from (see the next test).
    assert [r.config.notify for r in after.routes] == [
        ["ops-mail"],
        ["team-chat", "ops-mail"],
        ["oncall", "team-chat"],
    ]
    assert after.routes[2].key == before.routes[0].key
    assert after.routes[0].key != before.routes[0].key
    delivered = await page_then_reload(h, after)
    assert delivered == [
        ("ops-mail", 15),
        ("oncall", 30),
        ("team-chat", 30),
        ("oncall", 60),
        ("team-chat", 60),
    ]
    alert = h.manager.active[alert_id("database", "up")]
    assert set(alert.progress) == {before.routes[0].key}
    assert alert.progress[before.routes[0].key].escalated == 1


async def test_progress_keyed_by_index_would_lose_repeat_and_escalation() -> None:
    """The control of the test above: the same scenario with routes keyed by their index (as
    progress used to be) sends neither the escalation nor the repeats."""
    h = harness()
    by_index = dataclasses.replace(
        h.manager.policy, routes=tuple(Route(str(i), r.config) for i, r in enumerate(h.manager.policy.routes))
    )
    h.manager.policy = by_index
    after = policy_for(parse_config(textwrap.dedent(reordered(POLICY)), {}))
    after = dataclasses.replace(
        after, routes=tuple(Route(str(i), r.config) for i, r in enumerate(after.routes))
    )
    assert await page_then_reload(h, after) == []


# ---------------------------------------------------------------- business hours across midnight

NIGHT_SHIFT = """
[monitor]
timezone = "Europe/London"
[business_hours]
days = ["mon", "tue", "wed", "thu", "fri"]
start = "22:00"
end = "06:00"
[thresholds.body_bytes]
warning = 1000
critical = 5000
[notifiers.team-chat]
type = "webhook"
url = "http://127.0.0.1:1/slack"
[[routes]]
match = { severity = "warning" }
notify = ["team-chat"]
when = "business_hours"
[[checks]]
name = "backend-api"
type = "http"
url = "https://tynebase-backend.fly.dev/health"
"""
LONDON = ZoneInfo("Europe/London")


def london(*args: int) -> datetime:
    return datetime(*args, tzinfo=LONDON)  # June 2026: summer time, an hour ahead of UTC


@pytest.mark.parametrize(
    ("breach", "delivered"),
    [
        (london(2026, 6, 1, 23, 0), london(2026, 6, 1, 23, 0)),  # Monday night: open
        (london(2026, 6, 6, 3, 0), london(2026, 6, 6, 3, 0)),  # Saturday 03:00 is Friday's night
        (london(2026, 6, 7, 3, 0), london(2026, 6, 8, 22, 0)),  # Sunday 03:00: held to Monday 22:00
    ],
    ids=["monday-23:00", "saturday-03:00", "sunday-03:00"],
)
async def test_night_shift_business_hours_cross_midnight(breach: datetime, delivered: datetime) -> None:
    h = Harness.from_toml(NIGHT_SHIFT, breach)
    await h.run("backend-api", CheckResult.success(10, body_bytes=2000))
    while not h.sent and h.clock.now() < breach.timestamp() + 3 * 86400:
        await h.advance(60)
    assert h.events() == [("team-chat", "firing", "backend-api", "warning")]
    assert datetime.fromtimestamp(h.clock.now(), LONDON) == delivered
