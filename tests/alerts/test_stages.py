"""Each decision stage alone: suppress, route, plan_firing, plan_resolved, apply, on hand-made
alerts with a small fake World and a clock that is just a number."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from alerts.config import RouteConfig
from alerts.model import Alert, AlertState, Route, RouteProgress, Suppression, alert_id
from alerts.stages import Plan, Send, apply, check_suppression, plan_firing, plan_resolved, route, suppress

T0 = 1_795_000_000.0
MINUTE = 60.0


@dataclass
class FakeWorld:
    """Maintenance windows and silences as [start, end) per check; checks whose `up` breaches."""

    maintenance: dict[str, tuple[float, float]] = field(default_factory=dict)
    silences: dict[str, tuple[float, float]] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)
    blinded: set[str] = field(default_factory=set)  # checks the uplink's failure hides
    storm: bool = False

    def in_maintenance(self, check: str, now: float) -> bool:
        start, end = self.maintenance.get(check, (0.0, 0.0))
        return start <= now < end

    def silenced(self, check: str, now: float) -> bool:
        start, end = self.silences.get(check, (0.0, 0.0))
        return start <= now < end

    def up_breaching(self, check: str) -> bool:
        return check in self.down

    def depends_on(self, check: str) -> Sequence[str]:
        return self.deps.get(check, ())

    def blind(self, check: str) -> bool:
        return check in self.blinded

    def storming(self, check: str) -> bool:
        return self.storm


def make_alert(
    severity: str = "critical",
    check: str = "backend-api",
    metric: str = "latency_p95_ms",
    state: AlertState = AlertState.FIRING,
    **fields: Any,
) -> Alert:
    return Alert(
        id=alert_id(check, metric),
        check=check,
        metric=metric,
        check_type="http",
        target="api.example.com",
        state=state,
        severity=severity,
        value=1500.0,
        threshold=1000.0,
        direction="above",
        **{"started_at": T0, **fields},
    )


def make_route(**config: Any) -> Route:
    return Route.of(RouteConfig.model_validate(config))


def never_queued(_notifier: str) -> bool:
    return False


def firing(
    alert: Alert,
    routes: Sequence[Route],
    now: float,
    open_now: bool = True,
    queued: Callable[[str], bool] = never_queued,
) -> Plan:
    """plan_firing, then apply: the alert takes what was decided, as the pipeline does."""
    plan = plan_firing(alert, routes, now, open_now, queued)
    apply(alert, plan, now)
    return plan


# ---------------------------------------------------------------- suppress

EVERYTHING = ["flapping", "maintenance", "silence", "sticky", "dependency", "down"]


def world_and_alert(conditions: list[str]) -> tuple[FakeWorld, Alert]:
    world = FakeWorld(deps={"backend-api": ("database",)})
    alert = make_alert()
    if "flapping" in conditions:
        alert.flapping = True
    if "maintenance" in conditions:
        world.maintenance["backend-api"] = (T0, T0 + 3600)
    if "silence" in conditions:
        world.silences["backend-api"] = (T0, T0 + 3600)
    if "sticky" in conditions:
        alert.sticky = Suppression.DOWN  # born while its own check was down; that is over now
    if "dependency" in conditions:
        world.down.add("database")
    if "down" in conditions:
        world.down.add("backend-api")
    return world, alert


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        (EVERYTHING, Suppression.FLAPPING),
        (EVERYTHING[1:], Suppression.MAINTENANCE),
        (EVERYTHING[2:], Suppression.SILENCE),
        (EVERYTHING[3:], Suppression.DOWN),  # the sticky one, though a dependency is down now
        (EVERYTHING[4:], Suppression.DEPENDENCY),
        (EVERYTHING[5:], Suppression.DOWN),
        ([], None),
    ],
    ids=["flapping-first", "maintenance", "silence", "sticky", "dependency", "down", "none"],
)
def test_suppress_order(conditions: list[str], expected: Suppression | None) -> None:
    """flapping > maintenance > silence > sticky > dependency > down: each row takes away the
    condition that won the row before."""
    world, alert = world_and_alert(conditions)
    assert suppress(alert, T0 + 60, world) == expected


def test_suppress_asks_the_world_about_now() -> None:
    world, alert = world_and_alert(["maintenance"])
    assert suppress(alert, T0 + 3599, world) is Suppression.MAINTENANCE
    assert suppress(alert, T0 + 3600, world) is None  # the window has ended
    assert suppress(alert, T0 - 1, world) is None  # not begun


def test_an_up_alert_is_not_suppressed_by_its_own_check_being_down() -> None:
    world = FakeWorld(down={"backend-api"})
    assert suppress(make_alert(metric="up"), T0, world) is None
    assert suppress(make_alert(metric="latency_p95_ms"), T0, world) is Suppression.DOWN


def test_check_suppression_without_a_metric_never_says_down() -> None:
    """The API's `suppressed` of a check: its own `up` alert is not a suppression of it."""
    world = FakeWorld(down={"backend-api"}, deps={"backend-api": ("database",)})
    assert check_suppression("backend-api", T0, world) is None
    world.down.add("database")
    assert check_suppression("backend-api", T0, world) is Suppression.DEPENDENCY


# ---------------------------------------------------------------- route

CRITICAL = make_route(match={"severity": "critical"}, notify=["oncall"])
BACKEND = make_route(match={"check": "backend-*"}, notify=["team-chat"])
EVERY = make_route(notify=["ops-mail"])


@pytest.mark.parametrize(
    ("severity", "check", "expected"),
    [
        ("critical", "backend-api", [CRITICAL]),
        ("warning", "backend-api", [BACKEND]),
        ("warning", "database", [EVERY]),
        ("critical", "database", [CRITICAL]),
        ("warning", "api-backend", [EVERY]),  # the glob is anchored
    ],
    ids=["first-match-wins", "second", "catch-all", "severity-only", "glob-anchored"],
)
def test_route_first_match_wins(severity: str, check: str, expected: list[Route]) -> None:
    assert route(make_alert(severity, check), [CRITICAL, BACKEND, EVERY]) == expected


def test_route_continue_goes_on_to_the_next_match() -> None:
    critical_and_on = make_route(match={"severity": "critical"}, notify=["oncall"], **{"continue": True})
    routes = [critical_and_on, BACKEND, EVERY]
    assert route(make_alert("critical"), routes) == [critical_and_on, BACKEND]
    assert route(make_alert("critical", "database"), routes) == [critical_and_on, EVERY]


@pytest.mark.parametrize(
    ("labels", "matched"),
    [
        ({"team": "backend", "env": "prod"}, True),
        ({"team": "backend"}, False),
        ({"team": "frontend", "env": "prod"}, False),
        ({}, False),
    ],
    ids=["all-equal-plus-more", "one-missing", "one-differs", "none"],
)
def test_route_labels_must_all_be_equal(labels: dict[str, str], matched: bool) -> None:
    by_labels = make_route(match={"labels": {"team": "backend", "env": "prod"}}, notify=["team-chat"])
    assert route(make_alert(labels=labels), [by_labels, EVERY]) == ([by_labels] if matched else [EVERY])


def test_route_keys_are_names_or_digests_of_match_and_notify() -> None:
    named = make_route(name="pager", match={"severity": "critical"}, notify=["oncall"])
    assert named.key == "name:pager"
    same = make_route(match={"severity": "critical"}, notify=["oncall"], repeat="1h")
    assert same.key == CRITICAL.key  # repeat is not identity: editing it keeps the progress
    assert make_route(match={"severity": "critical"}, notify=["team-chat"]).key != CRITICAL.key


# ---------------------------------------------------------------- plan_firing

PAGE = make_route(
    match={"severity": "critical"},
    notify=["oncall", "team-chat"],
    repeat="30m",
    escalate=[{"after": "15m", "notify": ["ops-mail"]}, {"after": "1h", "notify": ["cto"]}],
)
WARN = make_route(match={"severity": "warning"}, notify=["team-chat"], repeat="4h", when="business_hours")
REPEAT = make_route(notify=["oncall", "team-chat"], repeat="30m")


def test_a_new_episode_notifies_every_notifier_of_its_routes() -> None:
    alert = make_alert()
    plan = plan_firing(alert, [PAGE, EVERY], T0, True, never_queued)
    assert plan.sends == [
        Send(PAGE.key, ("oncall", "team-chat"), "firing", "notify"),
        Send(EVERY.key, ("ops-mail",), "firing", "notify"),
    ]
    assert plan.announce is True
    assert plan.hold == [] and plan.release == []


def test_an_announced_episode_is_not_notified_again() -> None:
    alert = make_alert()
    firing(alert, [REPEAT], T0)
    assert not plan_firing(alert, [REPEAT], T0 + MINUTE, True, never_queued)


def test_repeat_after_repeat_not_before() -> None:
    alert = make_alert()
    firing(alert, [REPEAT], T0)
    assert not firing(alert, [REPEAT], T0 + 30 * MINUTE - 1)
    plan = firing(alert, [REPEAT], T0 + 30 * MINUTE)
    assert plan.sends == [Send(REPEAT.key, ("oncall", "team-chat"), "firing", "repeat")]
    assert plan.announce is False
    # The next one counts from this repeat, not from the first notification.
    assert not firing(alert, [REPEAT], T0 + 60 * MINUTE - 1)
    assert [s.kind for s in firing(alert, [REPEAT], T0 + 60 * MINUTE).sends] == ["repeat"]


def test_a_route_without_repeat_notifies_once() -> None:
    alert = make_alert()
    firing(alert, [EVERY], T0)
    assert not plan_firing(alert, [EVERY], T0 + 30 * 24 * 3600, True, never_queued)


def test_no_repeat_or_escalation_when_acknowledged() -> None:
    alert = make_alert()
    firing(alert, [PAGE], T0)
    alert.acknowledged = True
    assert not plan_firing(alert, [PAGE], T0 + 2 * 3600, True, never_queued)


def test_escalation_after_its_delay_from_the_first_delivery() -> None:
    # The breach began an hour before it could be delivered (a maintenance window, say).
    alert = make_alert(started_at=T0 - 3600)
    firing(alert, [PAGE], T0)
    assert not firing(alert, [PAGE], T0 + 15 * MINUTE - 1)
    assert firing(alert, [PAGE], T0 + 15 * MINUTE).sends == [
        Send(PAGE.key, ("ops-mail",), "firing", "escalate")
    ]
    assert not firing(alert, [PAGE], T0 + 16 * MINUTE)  # each step once
    # The repeat at 30 m moves the repeat clock, not the escalation's.
    assert [s.kind for s in firing(alert, [PAGE], T0 + 30 * MINUTE).sends] == ["repeat"]
    assert not firing(alert, [PAGE], T0 + 60 * MINUTE - 1)
    plan = firing(alert, [PAGE], T0 + 60 * MINUTE)
    assert [(s.kind, s.notifiers) for s in plan.sends] == [
        ("repeat", ("oncall", "team-chat")),
        ("escalate", ("cto",)),
    ]
    assert alert.progress[PAGE.key].escalated == 2


def test_escalation_steps_overdue_together_are_all_sent() -> None:
    alert = make_alert()
    firing(alert, [PAGE], T0)
    plan = firing(alert, [PAGE], T0 + 2 * 3600)
    assert [s.notifiers for s in plan.sends if s.kind == "escalate"] == [("ops-mail",), ("cto",)]


def test_business_hours_closed_holds_then_releases_at_opening() -> None:
    alert = make_alert("warning")
    plan = firing(alert, [WARN], T0, open_now=False)
    assert plan.sends == []
    assert plan.hold == [WARN.key]
    assert alert.progress[WARN.key].held is True
    assert not firing(alert, [WARN], T0 + 3600, open_now=False)  # held once, not again each tick
    plan = firing(alert, [WARN], T0 + 2 * 3600, open_now=True)
    assert plan.sends == [Send(WARN.key, ("team-chat",), "firing", "notify")]
    assert plan.release == [WARN.key]
    progress = alert.progress[WARN.key]
    assert (progress.held, progress.first_at, progress.last_at) == (False, T0 + 2 * 3600, T0 + 2 * 3600)


def test_business_hours_route_holds_its_repeats_while_closed() -> None:
    alert = make_alert("warning")
    firing(alert, [WARN], T0, open_now=True)
    assert not firing(alert, [WARN], T0 + 5 * 3600, open_now=False)
    assert not alert.progress[WARN.key].held  # a repeat waits for the next due time, not the opening
    assert [s.kind for s in firing(alert, [WARN], T0 + 5 * 3600 + 1, open_now=True).sends] == ["repeat"]


def test_business_hours_hold_only_the_routes_that_ask() -> None:
    alert = make_alert("warning")
    plan = firing(alert, [WARN, EVERY], T0, open_now=False)
    assert plan.sends == [Send(EVERY.key, ("ops-mail",), "firing", "notify")]
    assert plan.hold == [WARN.key]


def test_severity_change_notifies_again() -> None:
    alert = make_alert("warning")
    firing(alert, [WARN], T0)
    alert.severity = "critical"
    plan = firing(alert, [PAGE], T0 + MINUTE)
    assert plan.sends == [Send(PAGE.key, ("oncall", "team-chat"), "firing", "notify")]
    assert alert.notified_severity == "critical"
    alert.severity = "warning"  # and back down: announced again
    assert [s.kind for s in plan_firing(alert, [WARN], T0 + 2 * MINUTE, True, never_queued).sends] == [
        "notify"
    ]


def test_queued_suppresses_repeats_onto_an_undelivered_firing() -> None:
    alert = make_alert()
    firing(alert, [REPEAT], T0)

    def oncall_queued(notifier: str) -> bool:
        return notifier == "oncall"

    plan = firing(alert, [REPEAT], T0 + 30 * MINUTE, queued=oncall_queued)
    assert plan.sends == [Send(REPEAT.key, ("team-chat",), "firing", "repeat")]
    # Both still waiting: nothing is sent and the repeat stays due until one is delivered.
    assert not firing(alert, [REPEAT], T0 + 61 * MINUTE, queued=lambda _: True)
    assert [s.notifiers for s in firing(alert, [REPEAT], T0 + 61 * MINUTE).sends] == [("oncall", "team-chat")]


def test_queued_does_not_hold_back_a_new_severity() -> None:
    alert = make_alert("warning")
    firing(alert, [REPEAT], T0)
    alert.severity = "critical"
    plan = plan_firing(alert, [REPEAT], T0 + MINUTE, True, lambda _: True)
    assert plan.sends == [Send(REPEAT.key, ("oncall", "team-chat"), "firing", "notify")]


# ---------------------------------------------------------------- plan_resolved


def resolved(**progress: RouteProgress) -> Alert:
    alert = make_alert(state=AlertState.RESOLVED, resolved_at=T0 + 3600)
    alert.progress = dict(progress)
    return alert


def test_resolved_goes_to_the_notified_only_each_once() -> None:
    routes = {r.key: r for r in (PAGE, WARN)}
    alert = resolved(
        **{
            WARN.key: RouteProgress(first_at=T0, last_at=T0, notifiers=["team-chat"]),
            # Escalated to ops-mail; the cto step never came.
            PAGE.key: RouteProgress(
                first_at=T0, last_at=T0, escalated=1, notifiers=["oncall", "team-chat", "ops-mail"]
            ),
        }
    )
    plan = plan_resolved(alert, routes)
    assert plan.sends == [
        Send(WARN.key, ("team-chat",), "resolved", "resolved"),
        Send(PAGE.key, ("oncall", "ops-mail"), "resolved", "resolved"),
    ]


def test_resolved_respects_send_resolved_false() -> None:
    quiet = make_route(notify=["team-chat", "oncall"], send_resolved=False)
    alert = resolved(
        **{
            quiet.key: RouteProgress(first_at=T0, notifiers=["team-chat", "oncall"]),
            REPEAT.key: RouteProgress(first_at=T0, notifiers=["oncall"]),
        }
    )
    plan = plan_resolved(alert, {quiet.key: quiet, REPEAT.key: REPEAT})
    assert plan.sends == [Send(REPEAT.key, ("oncall",), "resolved", "resolved")]  # told through the other


def test_a_removed_route_is_still_told() -> None:
    alert = resolved(gone=RouteProgress(first_at=T0, notifiers=["oncall"]))
    assert plan_resolved(alert, {}).sends == [Send("gone", ("oncall",), "resolved", "resolved")]


def test_resolved_never_notified_or_already_sent_or_not_resolved_is_nothing() -> None:
    notified = RouteProgress(first_at=T0, notifiers=["oncall"])
    routes = {REPEAT.key: REPEAT}
    assert not plan_resolved(resolved(), routes)  # held, suppressed: nobody heard of it
    assert not plan_resolved(resolved(**{REPEAT.key: RouteProgress(held=True)}), routes)
    alert = resolved(**{REPEAT.key: notified})
    alert.resolve_sent = True
    assert not plan_resolved(alert, routes)
    alert = make_alert(progress={REPEAT.key: notified})  # firing
    assert not plan_resolved(alert, routes)


# ---------------------------------------------------------------- apply


def test_apply_records_each_route_progress() -> None:
    alert = make_alert()
    apply(alert, Plan(sends=[Send("a", ("oncall",), "firing", "notify")], hold=["b"], announce=True), T0)
    assert alert.progress["a"] == RouteProgress(first_at=T0, last_at=T0, notifiers=["oncall"])
    assert alert.progress["b"] == RouteProgress(held=True)
    assert alert.notified_severity == "critical"
    apply(
        alert,
        Plan(
            sends=[
                Send("a", ("oncall", "team-chat"), "firing", "repeat"),
                Send("a", ("ops-mail",), "firing", "escalate"),
                Send("b", ("team-chat",), "firing", "notify"),
            ],
            release=["b"],
        ),
        T0 + 60,
    )
    # first_at stays the first delivery; an escalation moves no repeat clock; no one twice.
    assert alert.progress["a"] == RouteProgress(
        first_at=T0, last_at=T0 + 60, escalated=1, notifiers=["oncall", "team-chat", "ops-mail"]
    )
    assert alert.progress["b"] == RouteProgress(first_at=T0 + 60, last_at=T0 + 60, notifiers=["team-chat"])
    assert alert.resolve_sent is False


def test_apply_without_announce_keeps_the_announced_severity() -> None:
    alert = make_alert("critical", notified_severity="warning")
    apply(alert, Plan(sends=[Send("a", ("oncall",), "firing", "repeat")]), T0)
    assert alert.notified_severity == "warning"


def test_apply_a_resolve_marks_it_sent_and_moves_no_progress() -> None:
    alert = resolved(a=RouteProgress(first_at=T0, last_at=T0, notifiers=["oncall"]))
    apply(alert, plan_resolved(alert, {}), T0 + 3600)
    assert alert.resolve_sent is True
    assert alert.progress["a"] == RouteProgress(first_at=T0, last_at=T0, notifiers=["oncall"])
