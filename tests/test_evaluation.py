"""The threshold table at work, with time passed in: windows, directions, trigger/resolve counts."""

from __future__ import annotations

import math
import textwrap

from monitor.config import ThresholdRow, parse_config
from monitor.evaluation import HISTORY_RUNS, CheckEvaluator, percentile
from monitor.models import CheckResult, Level, RowState
from tests.fakes.clock import FakeClock


def ok(latency_ms: float, **samples: float) -> CheckResult:
    return CheckResult.success(latency_ms, **samples)


def failed(latency_ms: float = 5.0) -> CheckResult:
    return CheckResult.failure("status 503", latency_ms, status_code=503)


def rows_from(toml: str, check: str = "api") -> dict[str, ThresholdRow]:
    base = f'[[checks]]\nname = "{check}"\ntype = "http"\nurl = "http://127.0.0.1/"\n'
    return parse_config(textwrap.dedent(toml) + base, {}).rows_for(check)


P95_ROWS = """
[thresholds.latency_p95_ms]
warning = 500
critical = 1000
window = "5m"
"""


def test_percentile_nearest_rank() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 95) == 95
    assert percentile(values, 99) == 99
    assert percentile([7.0], 95) == 7


def test_p95_over_window_warns_then_ages_out() -> None:
    clock = FakeClock()
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    # 20 runs 10 s apart: 18 fast, 2 slow (10% slow -> p95 is slow).
    for i in range(20):
        ev.observe(ok(700 if i in (3, 9) else 100), clock.now())
        clock.advance(10)
    status = ev.statuses["latency_p95_ms"]
    assert status.state is RowState.WARNING
    assert status.value == 700
    assert status.threshold == 500
    # Five minutes of fast runs push the slow ones out of the window: resolved.
    for _ in range(31):
        ev.observe(ok(100), clock.now())
        clock.advance(10)
    assert ev.statuses["latency_p95_ms"].state is RowState.OK
    assert ev.derived["latency_p95_ms"] == 100


def test_p95_critical_above_1000() -> None:
    clock = FakeClock()
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    for latency in (1200, 1300, 1100):
        ev.observe(ok(latency), clock.now())
        clock.advance(30)
    assert ev.statuses["latency_p95_ms"].state is RowState.CRITICAL
    assert ev.worst() is Level.CRITICAL


def test_error_rate_over_window() -> None:
    clock = FakeClock()
    rows = rows_from('[thresholds.error_rate_pct]\nwarning = 1\ncritical = 5\nwindow = "5m"\n')
    ev = CheckEvaluator("api", rows)
    for i in range(50):  # one failure in 50 runs = 2%: warning (> 1%), not critical (> 5%)
        ev.observe(failed() if i == 10 else ok(50), clock.now())
        clock.advance(5)
    assert ev.derived["error_rate_pct"] == 2.0
    assert ev.statuses["error_rate_pct"].state is RowState.WARNING
    for _ in range(3):  # three more failures: 4 in the last 5 minutes (60 runs) -> 6.67%
        ev.observe(failed(), clock.now())
        clock.advance(5)
    assert ev.statuses["error_rate_pct"].state is RowState.CRITICAL


def test_direction_below_tls_days_left() -> None:
    ev = CheckEvaluator("api", rows_from(""))
    ev.observe(ok(10, tls_days_left=30), 0)
    assert ev.statuses["tls_days_left"].state is RowState.OK
    ev.observe(ok(10, tls_days_left=4), 1)
    assert ev.statuses["tls_days_left"].state is RowState.WARNING
    ev.observe(ok(10, tls_days_left=2), 2)
    assert ev.statuses["tls_days_left"].state is RowState.CRITICAL


def test_up_trigger_after_two_and_resolve_after() -> None:
    rows = rows_from("[thresholds.up]\nresolve_after = 2\n")
    ev = CheckEvaluator("api", rows)
    ev.observe(ok(10), 0)
    ev.observe(failed(), 30)
    up = ev.statuses["up"]
    assert up.state is RowState.PENDING and up.since == 30
    ev.observe(failed(), 60)
    assert up.state is RowState.CRITICAL
    assert up.since == 30  # the breach began at the first failed run
    ev.observe(ok(10), 90)
    assert up.state is RowState.CRITICAL  # one clean run is not enough with resolve_after = 2
    ev.observe(ok(10), 120)
    assert up.state is RowState.OK and up.since is None


def test_pending_cancelled_by_a_clean_run() -> None:
    ev = CheckEvaluator("api", rows_from(""))
    ev.observe(failed(), 0)
    assert ev.statuses["up"].state is RowState.PENDING
    ev.observe(ok(10), 30)
    assert ev.statuses["up"].state is RowState.OK
    ev.observe(failed(), 60)
    assert ev.statuses["up"].state is RowState.PENDING  # the count starts again


def test_severity_moves_while_firing() -> None:
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    ev.observe(ok(600), 0)
    assert ev.statuses["latency_p95_ms"].state is RowState.WARNING
    ev.observe(ok(5000), 1)
    assert ev.statuses["latency_p95_ms"].state is RowState.CRITICAL  # p95 of (600, 5000)
    assert ev.statuses["latency_p95_ms"].since == 0


def test_per_check_override_and_opt_out() -> None:
    text = (
        P95_ROWS
        + "[thresholds.error_rate_pct]\nwarning = 1\ncritical = 5\n"
        + textwrap.dedent(
            """
        [[checks]]
        name = "api"
        type = "http"
        url = "http://127.0.0.1/"
        thresholds = { latency_p95_ms = { warning = 300, critical = 800 }, error_rate_pct = false }
        """
        )
    )
    ev = CheckEvaluator("api", parse_config(text, {}).rows_for("api"))
    ev.observe(failed(), 0)
    ev.observe(ok(400), 10)
    assert ev.statuses["latency_p95_ms"].state is RowState.WARNING  # 400 > 300 (override), < 500 (global)
    assert "error_rate_pct" not in ev.statuses  # opted out: 50% errors raise nothing


def test_row_without_its_metric_keeps_state() -> None:
    rows = rows_from("[thresholds.status_code]\nwarning = 399\ncritical = 499\n")
    ev = CheckEvaluator("api", rows)
    ev.observe(ok(10, status_code=503), 0)
    assert ev.statuses["status_code"].state is RowState.CRITICAL
    ev.observe(CheckResult.failure("connection refused", 1), 10)  # no status_code sample
    assert ev.statuses["status_code"].state is RowState.CRITICAL
    assert "connections_pct" not in ev.statuses  # never produced by an http check


def test_single_run_ignores_trigger_after() -> None:
    ev = CheckEvaluator("api", rows_from(""), single_run=True)
    ev.observe(failed(), 0)
    assert ev.statuses["up"].state is RowState.CRITICAL


def test_window_keeps_span_and_history_over_days_of_runs() -> None:
    """Times are kept as small offsets that move forward: after two days of runs every 10 s the
    p95 still covers exactly the last 5 minutes and the history has each run's time to the ms."""
    clock = FakeClock(1_795_000_000.123)
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    runs: list[tuple[float, float]] = []
    for i in range(2 * 8640):
        latency = 100.0 + (i * 37) % 500 + 0.25
        ev.observe(ok(latency) if i % 7 else failed(), clock.now())
        runs.append((clock.now(), latency if i % 7 else math.nan))
        clock.advance(10 + (i % 3) * 0.0137)  # a real loop's jitter: not whole seconds
    now = runs[-1][0]
    in_window = sorted(lat for t, lat in runs if t > now - 300 and lat == lat)
    assert ev.derived["latency_p95_ms"] == percentile(in_window, 95)
    history = list(ev.window.history())
    assert len(history) == HISTORY_RUNS
    for (t, up), (t_run, lat) in zip(history, runs[-HISTORY_RUNS:], strict=True):
        assert abs(t - t_run) < 0.001
        assert up is (lat == lat)


def test_history_outlives_a_short_window() -> None:
    """A check without window rows, or with a window shorter than its last runs, still shows
    its last HISTORY_RUNS runs on the status page."""
    clock = FakeClock()
    ev = CheckEvaluator("api", rows_from(""))
    for i in range(HISTORY_RUNS + 5):
        ev.observe(ok(10) if i % 2 else failed(), clock.now())
        clock.advance(60)
    history = list(ev.window.history())
    assert len(history) == HISTORY_RUNS
    assert [up for _, up in history] == [bool(i % 2) for i in range(5, HISTORY_RUNS + 5)]
    assert history[-1][0] == clock.now() - 60


def test_resolved_row_is_handed_off_as_ok_with_its_value() -> None:
    """Rows that are ok keep only their value; alerting still gets them, so it can resolve."""
    clock = FakeClock()
    ev = CheckEvaluator("api", rows_from(""))
    for _ in range(2):
        assert ev.observe(failed(), clock.now()) is True
        clock.advance(10)
    assert ev.levels()["up"] == 2.0
    assert ev.observe(ok(10), clock.now()) is False
    by_metric = {e.metric: e for e in ev.evaluations()}
    assert by_metric["up"].state is RowState.OK
    assert by_metric["up"].value == 1.0
    assert by_metric["up"].since is None
    assert ev.statuses["up"].state is RowState.OK
    assert ev.levels()["up"] == 0.0
    assert ev.worst() is Level.OK
