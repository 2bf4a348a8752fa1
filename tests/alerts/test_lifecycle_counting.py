"""lifecycle.count alone: levels of one row, evaluation after evaluation, into an alert's state."""

from __future__ import annotations

import pytest

from alerts.lifecycle import Transition, count, open_alert
from alerts.model import Alert, AlertState, CheckInfo, alert_id
from monitor.models import Level, RowEvaluation

INFO = CheckInfo("backend-api", "http", "api.example.com", {"team": "backend"}, "https://wiki/runbook")
T0 = 1_795_000_000.0


def up_row(level: Level, trigger_after: int = 2, resolve_after: int = 1) -> RowEvaluation:
    value, threshold = (0.0, 1.0) if level > Level.OK else (1.0, None)
    return RowEvaluation("up", level, value, threshold, "below", trigger_after, resolve_after)


def p95_row(value: float, trigger_after: int = 1, resolve_after: int = 2) -> RowEvaluation:
    level, threshold = Level.OK, None
    if value > 1000:
        level, threshold = Level.CRITICAL, 1000.0
    elif value > 500:
        level, threshold = Level.WARNING, 500.0
    return RowEvaluation("latency_p95_ms", level, value, threshold, "above", trigger_after, resolve_after)


def run(rows: list[RowEvaluation], reason: str | None = None) -> tuple[Alert, list[Transition]]:
    """Open an alert on the first row and count every row into it, a minute apart."""
    alert = open_alert(INFO, rows[0], reason, T0)
    transitions = [count(alert, row, reason, T0 + 60 * i) for i, row in enumerate(rows)]
    return alert, transitions


def test_open_alert_is_a_pending_episode_of_the_check_and_row() -> None:
    alert = open_alert(INFO, p95_row(700), "slow", T0)
    assert alert.id == alert_id("backend-api", "latency_p95_ms")
    assert (alert.check, alert.metric, alert.check_type, alert.target) == (
        "backend-api",
        "latency_p95_ms",
        "http",
        "api.example.com",
    )
    assert (alert.state, alert.severity, alert.breaching) == (AlertState.PENDING, "warning", 0)
    assert (alert.value, alert.threshold, alert.direction) == (700, 500, "above")
    assert (alert.started_at, alert.reason, alert.runbook) == (T0, "slow", "https://wiki/runbook")
    assert alert.labels == {"team": "backend"} and alert.labels is not INFO.labels


def test_trigger_after_two_opens_pending_then_fires() -> None:
    alert, transitions = run([up_row(Level.CRITICAL), up_row(Level.CRITICAL), up_row(Level.CRITICAL)])
    assert transitions == [Transition.OPENED, Transition.FIRED, Transition.NONE]
    assert alert.state is AlertState.FIRING
    assert alert.severity == "critical"
    assert alert.breaching == 3
    assert alert.level == 2


def test_first_breach_is_pending_with_trigger_after_two() -> None:
    alert, transitions = run([up_row(Level.CRITICAL)])
    assert transitions == [Transition.OPENED]
    assert alert.state is AlertState.PENDING
    assert alert.level == 0  # pending is not firing: monitor_alert_state stays 0


def test_trigger_after_one_fires_on_the_first_breach() -> None:
    alert, transitions = run([up_row(Level.CRITICAL, trigger_after=1)])
    assert transitions == [Transition.OPENED]
    assert alert.state is AlertState.FIRING


def test_pending_dropped_by_a_clean_run_and_the_count_starts_again() -> None:
    alert = open_alert(INFO, up_row(Level.CRITICAL), "status 503", T0)
    assert count(alert, up_row(Level.CRITICAL), "status 503", T0) is Transition.OPENED
    assert count(alert, up_row(Level.OK), None, T0 + 30) is Transition.DROPPED
    assert alert.state is AlertState.PENDING and alert.breaching == 0
    assert alert.resolved_at is None  # it never fired: not a resolve
    # A breach after the clean run is a first breach again, not the second of trigger_after 2.
    assert count(alert, up_row(Level.CRITICAL), "status 503", T0 + 60) is Transition.OPENED
    assert alert.state is AlertState.PENDING
    assert count(alert, up_row(Level.CRITICAL), "status 503", T0 + 90) is Transition.FIRED


def test_resolve_after_two_needs_two_clean_runs_in_a_row() -> None:
    rows = [
        up_row(Level.CRITICAL, resolve_after=2),
        up_row(Level.CRITICAL, resolve_after=2),  # firing
        up_row(Level.OK, resolve_after=2),  # one clean run: still firing
        up_row(Level.CRITICAL, resolve_after=2),  # breaching again: the clean count starts over
        up_row(Level.OK, resolve_after=2),
        up_row(Level.OK, resolve_after=2),  # two in a row: resolved
    ]
    alert, transitions = run(rows)
    assert transitions == [
        Transition.OPENED,
        Transition.FIRED,
        Transition.NONE,
        Transition.NONE,
        Transition.NONE,
        Transition.RESOLVED,
    ]
    assert alert.state is AlertState.RESOLVED
    assert alert.resolved_at == T0 + 5 * 60
    assert alert.level == 0


def test_one_clean_run_resolves_with_resolve_after_one() -> None:
    alert, transitions = run([up_row(Level.CRITICAL), up_row(Level.CRITICAL), up_row(Level.OK)])
    assert transitions[-1] is Transition.RESOLVED
    assert alert.resolved_at == T0 + 120
    assert alert.value == 1.0


def test_severity_moves_while_firing() -> None:
    alert, transitions = run([p95_row(600), p95_row(5000), p95_row(5000), p95_row(700)])
    assert transitions == [Transition.OPENED, Transition.SEVERITY, Transition.NONE, Transition.SEVERITY]
    assert alert.state is AlertState.FIRING
    assert (alert.severity, alert.value, alert.threshold) == ("warning", 700, 500)
    assert alert.started_at == T0  # one episode throughout


def test_a_clean_run_while_firing_keeps_the_severity() -> None:
    alert, transitions = run([p95_row(5000), p95_row(100)])  # resolve_after 2
    assert transitions == [Transition.OPENED, Transition.NONE]
    assert alert.state is AlertState.FIRING
    assert alert.severity == "critical"
    assert alert.level == 2
    assert alert.value == 100  # the value is the latest, the severity the last breach's
    assert alert.threshold == 1000


def test_pending_alert_takes_the_worse_severity_before_firing() -> None:
    alert, transitions = run([p95_row(600, trigger_after=2), p95_row(5000, trigger_after=2)])
    assert transitions == [Transition.OPENED, Transition.FIRED]
    assert alert.severity == "critical"


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [(["status 503", "timeout after 10s"], "timeout after 10s"), (["status 503", None], None)],
    ids=["latest-failure", "cleared-by-a-clean-run"],
)
def test_reason_is_the_latest_runs(reasons: list[str | None], expected: str | None) -> None:
    alert = open_alert(INFO, p95_row(700), reasons[0], T0)
    count(alert, p95_row(5000), reasons[0], T0)
    count(alert, p95_row(5000 if reasons[1] else 100), reasons[1], T0 + 60)
    assert alert.reason == expected
