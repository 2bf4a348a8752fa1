"""The threshold table at work, with time passed in: how bad each row's value is, over its window.

Evaluation says only that (a level per row); turning levels into pending, firing and resolved
is alerting's, tested in tests/alerts/test_lifecycle_counting.py.
"""

from __future__ import annotations

import math
import textwrap

from monitor.config import ThresholdRow, parse_config
from monitor.evaluation import CheckEvaluator, percentile
from monitor.models import CheckResult, Level, RowEvaluation
from tests.fakes.clock import FakeClock


def ok(latency_ms: float, **samples: float) -> CheckResult:
    return CheckResult.success(latency_ms, **samples)


def failed(latency_ms: float = 5.0, **samples: float) -> CheckResult:
    return CheckResult.failure("status 503", latency_ms, **samples)


def rows_from(toml: str, check: str = "api") -> dict[str, ThresholdRow]:
    base = f'[[checks]]\nname = "{check}"\ntype = "http"\nurl = "http://127.0.0.1/"\n'
    return parse_config(textwrap.dedent(toml) + base, {}).rows_for(check)


def by_metric(ev: CheckEvaluator) -> dict[str, RowEvaluation]:
    return {e.metric: e for e in ev.evaluations()}


T0 = 1_795_000_000.0
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
    assert percentile([1.0, 2.0, 3.0], 95) == 3  # rank ceil(2.85) = 3, not an interpolation


def test_p95_over_window_warns_then_ages_out() -> None:
    clock = FakeClock(T0)
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    # 20 runs 10 s apart: 18 fast, 2 slow (10% slow -> the p95 is a slow one).
    for i in range(20):
        breaching = ev.observe(ok(700 if i in (3, 9) else 100), clock.now())
        clock.advance(10)
    assert breaching is True
    p95 = by_metric(ev)["latency_p95_ms"]
    assert (p95.level, p95.value, p95.threshold) == (Level.WARNING, 700, 500)
    assert ev.levels()["latency_p95_ms"] is Level.WARNING
    # Fast runs from t = 200: both slow runs (t = 30, 90) are still among the 30 runs of the
    # last 5 minutes at t = 320, run 3 is out at t = 330 (the window is (now - 300, now]).
    levels = {}
    while clock.now() <= T0 + 330:
        breaching = ev.observe(ok(100), clock.now())
        levels[clock.now() - T0] = by_metric(ev)["latency_p95_ms"].level
        clock.advance(10)
    assert levels[320] is Level.WARNING
    assert levels[330] is Level.OK
    assert breaching is False
    p95 = by_metric(ev)["latency_p95_ms"]
    assert (p95.level, p95.value, p95.threshold) == (Level.OK, 100, None)
    assert ev.derived["latency_p95_ms"] == 100


def test_p95_critical_above_1000() -> None:
    clock = FakeClock()
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    for latency in (1200, 1300, 1100):
        ev.observe(ok(latency), clock.now())
        clock.advance(30)
    p95 = by_metric(ev)["latency_p95_ms"]
    assert (p95.level, p95.value, p95.threshold) == (Level.CRITICAL, 1300, 1000)


def test_p95_leaves_failed_runs_out() -> None:
    """A refused connection is fast and a timeout is the timeout: neither is the service's speed."""
    ev = CheckEvaluator("api", rows_from(P95_ROWS))
    ev.observe(ok(600), 0)
    for t in range(1, 40):
        ev.observe(failed(latency_ms=1.0), t)
    assert ev.derived["latency_p95_ms"] == 600


def test_error_rate_over_window() -> None:
    clock = FakeClock()
    rows = rows_from('[thresholds.error_rate_pct]\nwarning = 1\ncritical = 5\nwindow = "5m"\n')
    ev = CheckEvaluator("api", rows)
    for i in range(50):  # one failure in 50 runs = 2%: warning (> 1%), not critical (> 5%)
        ev.observe(failed() if i == 10 else ok(50), clock.now())
        clock.advance(5)
    rate = by_metric(ev)["error_rate_pct"]
    assert (rate.level, rate.value, rate.threshold) == (Level.WARNING, 2.0, 1)
    for _ in range(3):  # three more failures: 4 in the last 5 minutes (53 runs) -> 7.5%
        ev.observe(failed(), clock.now())
        clock.advance(5)
    rate = by_metric(ev)["error_rate_pct"]
    assert rate.level is Level.CRITICAL
    assert rate.value == 4 / 53 * 100
    # Five clean minutes later all four failures are out of the window.
    for _ in range(61):
        ev.observe(ok(50), clock.now())
        clock.advance(5)
    assert by_metric(ev)["error_rate_pct"].value == 0.0
    assert ev.levels()["error_rate_pct"] is Level.OK


def test_direction_below_tls_days_left() -> None:
    ev = CheckEvaluator("api", rows_from(""))
    levels = []
    for t, days in enumerate((30, 14, 13.5, 3, 2)):
        ev.observe(ok(10, tls_days_left=days), t)
        levels.append(by_metric(ev)["tls_days_left"].level)
    # Below the threshold breaches; at it does not (14 is not < 14, 3 is not < 3).
    assert levels == [Level.OK, Level.OK, Level.WARNING, Level.WARNING, Level.CRITICAL]
    assert by_metric(ev)["tls_days_left"].threshold == 3


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
        [[checks]]
        name = "web"
        type = "http"
        url = "http://127.0.0.1/"
        """
        )
    )
    config = parse_config(text, {})
    api = CheckEvaluator("api", config.rows_for("api"))
    web = CheckEvaluator("web", config.rows_for("web"))
    for ev in (api, web):
        ev.observe(failed(), 0)
        ev.observe(ok(400), 10)
    # 400 ms: over the override's 300 for api, under the global 500 for web.
    assert by_metric(api)["latency_p95_ms"].level is Level.WARNING
    assert by_metric(api)["latency_p95_ms"].threshold == 300
    assert by_metric(web)["latency_p95_ms"].level is Level.OK
    # 50% errors: critical where the row applies, nothing where the check opted out.
    assert by_metric(web)["error_rate_pct"].level is Level.CRITICAL
    assert "error_rate_pct" not in by_metric(api)
    assert "error_rate_pct" not in api.levels()
    assert "error_rate_pct" not in api.derived


def test_row_without_its_metric_keeps_its_last_level_and_value() -> None:
    rows = rows_from(P95_ROWS + "[thresholds.status_code]\nwarning = 399\ncritical = 499\n")
    ev = CheckEvaluator("api", rows)
    ev.observe(ok(700, status_code=503), 0)
    assert ev.levels()["status_code"] is Level.CRITICAL
    # A refused connection: no status code, and no successful run for the p95 after this.
    assert ev.observe(CheckResult.failure("connection refused", 1), 400) is True  # `up` breaches
    assert set(by_metric(ev)) == {"up"}  # only what the latest run produced goes to alerting
    assert ev.levels()["status_code"] is Level.CRITICAL
    assert ev.levels()["latency_p95_ms"] is Level.WARNING
    assert ev.derived["latency_p95_ms"] == 700  # the window no longer holds it: last value kept
    assert ev.applied() == ["up", "latency_p95_ms", "status_code"]
    assert "connections_pct" not in ev.levels()  # never produced by an http check
    # The next run with a status code moves the row again.
    ev.observe(ok(10, status_code=200), 410)
    assert by_metric(ev)["status_code"].value == 200
    assert ev.levels()["status_code"] is Level.OK


def test_evaluations_field_by_field() -> None:
    ev = CheckEvaluator("api", rows_from(P95_ROWS + "[thresholds.up]\nresolve_after = 3\n"))
    ev.observe(ok(1200, tls_days_left=10), 0)
    assert ev.evaluations() == [
        RowEvaluation("up", Level.OK, 1.0, None, "below", 2, 3),
        RowEvaluation("tls_days_left", Level.WARNING, 10.0, 14, "below", 1, 1),
        RowEvaluation("latency_p95_ms", Level.CRITICAL, 1200.0, 1000, "above", 1, 1),
    ]
    assert ev.observe(failed(), 10) is True
    assert ev.evaluations() == [
        RowEvaluation("up", Level.CRITICAL, 0.0, 1, "below", 2, 3),
        RowEvaluation("latency_p95_ms", Level.CRITICAL, 1200.0, 1000, "above", 1, 1),
    ]


def test_a_breach_is_a_level_not_a_count() -> None:
    """trigger_after is alerting's to count: the first failed run is already critical here."""
    ev = CheckEvaluator("api", rows_from("[thresholds.up]\ntrigger_after = 5\n"))
    assert ev.observe(failed(), 0) is True
    assert ev.levels() == {"up": Level.CRITICAL}
    assert ev.observe(ok(10), 10) is False
    assert ev.levels() == {"up": Level.OK}
    assert by_metric(ev)["up"].trigger_after == 5


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
