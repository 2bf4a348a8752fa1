"""`bench/run --quick` runs end to end and writes a complete result (no speed is asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 120

ENGINE_NUMBERS = (
    "scheduled_per_s",
    "completed_per_s",
    "completed_pct",
    "window_s",
    "cpu_s",
    "cpu_pct_of_core",
    "cpu_us_per_check",
    "rss_mb",
    "rss_peak_mb",
    "rss_mb_per_1000_checks",
)
DAEMON_NUMBERS = (
    "lag_p50_ms",
    "lag_p99_ms",
    "on_time_pct",
    "started_per_s",
    "metrics_scrape_s",
    "rss_marginal_mb_per_1000_checks",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "quick.json"
    proc = subprocess.run(
        [str(REPO / "bench" / "run"), "--quick", "--out", str(out), "--workdir", str(tmp / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads(out.read_text(encoding="utf-8")), proc.stdout


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_quick_run_writes_every_engine(quick: tuple[dict[str, Any], str]) -> None:
    result, _ = quick
    assert result["config"]["quick"] is True
    assert result["config"]["checks"] == 200
    assert set(result["engines"]) >= {"daemon", "blackbox", "floor_uvloop"}
    for name, engine in result["engines"].items():
        for key in ENGINE_NUMBERS:
            assert _is_number(engine[key]), (name, key, engine[key])
        assert engine["completed_per_s"] > 0, name
        assert engine["cpu_s"] > 0, name
        assert isinstance(engine["sustained"], bool), name
    daemon = result["engines"]["daemon"]
    for key in DAEMON_NUMBERS:
        assert _is_number(daemon[key]), (key, daemon[key])
    assert daemon["runs"]["success"] > 0
    assert set(result["ratios"]) == set(result["engines"]) - {"daemon"}
    for ratios in result["ratios"].values():
        assert _is_number(ratios["cpu_per_check"]) and _is_number(ratios["rss"])


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_quick_run_measures_detection_latency(quick: tuple[dict[str, Any], str]) -> None:
    detection = quick[0]["detection"]
    assert detection["trials"] == 3
    alert = detection["alert_critical_s"]
    assert alert is not None, detection["alert_critical_reason"]
    assert _is_number(alert["median"]) and _is_number(alert["max"])
    page = detection["pagerduty_trigger_s"]
    if page is None:  # alerting not wired yet: the result says why instead of a number
        assert isinstance(detection["pagerduty_reason"], str) and detection["pagerduty_reason"]
    else:
        assert _is_number(page["median"]) and _is_number(page["max"])
    for name, target in quick[0]["targets"].items():
        assert target["met"] in (True, False, None), name


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_quick_run_prints_the_table(quick: tuple[dict[str, Any], str]) -> None:
    table = quick[1]
    for row in ("CPU us per check", "RSS MB", "scheduler lag p99 ms", "detection latency", "blackbox"):
        assert row in table


STORM_TIMEOUT_S = 90
STORM_FIELDS = (
    "all_critical_s",
    "pages",
    "guard",
    "cpu_s",
    "interval_s",
    "trigger_after",
    "lag_p99_ms",
    "rss_mb",
)


@pytest.mark.timeout(STORM_TIMEOUT_S + 30)
def test_storm_quick_guard_stops_the_pages(tmp_path: Path) -> None:
    """`bench/run --storm --quick`: 200 checks lose their target; the guarded run pages at most
    twice, the same run with `storm = false` once per check: the guard is what stops them."""
    out = tmp_path / "storm.json"
    proc = subprocess.run(
        [
            str(REPO / "bench" / "run"),
            "--storm",
            "--quick",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "w"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=STORM_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["config"]["checks"] == 200
    assert result["config"]["interval_s"] == 2.0
    guarded, unguarded = result["storm"], result["no_guard"]
    for run in (guarded, unguarded):
        for key in STORM_FIELDS:
            assert key in run, key
        for key in ("all_critical_s", "cpu_s", "lag_p99_ms", "rss_mb"):
            assert _is_number(run[key]), (key, run[key])
        assert run["interval_s"] == 2.0 and run["trigger_after"] == 2
        assert run["critical_seen"] == 200
    assert guarded["guard"] == 10 and unguarded["guard"] is None
    assert _is_number(guarded["storm_cpu_s"]), guarded
    # The floor: each of the 200 checks runs twice (trigger_after) by the daemon's scheduler.
    floor = result["floor"]
    assert 380 <= floor["runs"] <= 400 and floor["cpu_s"] > 0, floor
    assert "floor:" in proc.stdout
    assert 1 <= guarded["pages"] <= 2, guarded
    assert unguarded["pages"] == 200, unguarded
    for run in result["targets"].values():
        for name, target in run.items():
            assert target["met"] in (True, False, None), name
    assert "PagerDuty pages" in proc.stdout and "targets" in proc.stdout


HTTPS_TIMEOUT_S = 60


@pytest.mark.timeout(HTTPS_TIMEOUT_S + 30)
def test_https_kind_runs_every_engine_with_verified_tls(tmp_path: Path) -> None:
    """`--mix https=...`: nginx over TLS with a certificate of a CA made for the run; the daemon,
    blackbox_exporter and the floor reach it by name and verify it (an untrusted or mismatched
    certificate would fail every HTTPS run)."""
    out = tmp_path / "https.json"
    argv = [str(REPO / "bench" / "run"), "--quick", "--mix", "https=80,tcp=10,websocket=10"]
    argv += ["--checks", "40", "--interval", "2", "--duration", "1", "--warmup", "0.5", "--trials", "0"]
    argv += ["--out", str(out), "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=HTTPS_TIMEOUT_S, check=False
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["config"]["mix"] == {"https": 32, "tcp": 4, "websocket": 4}
    https = result["config"]["https"]
    assert https["url"].startswith("https://localhost:") and https["url"].endswith("/health")
    assert "BEGIN CERTIFICATE" in Path(https["ca_file"]).read_text(encoding="ascii")
    assert set(result["engines"]) == {"daemon", "blackbox", "floor_uvloop"}, result["errors"]
    for name, engine in result["engines"].items():
        for key in ENGINE_NUMBERS:
            assert _is_number(engine[key]), (name, key, engine[key])
        assert engine["runs"]["success"] > 0, name
        assert engine["failed_pct"] == 0, (name, engine["runs"])
    target = result["targets"]["https_mix_cpu_le_0_6x_blackbox"]
    assert target["met"] in (True, False) and _is_number(target["limit"])


def test_follow_bench_reads_a_storm_whole_and_by_what_changed(tmp_path: Path) -> None:
    """`python -m bench.follow`: N alerts firing in a storm; each read sees all N of them."""
    out = tmp_path / "follow.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.follow", "--checks", "200", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["checks"] == 200 and result["firing"] == 200
    for read in ("load", "follow"):
        assert result[read]["alerts"] == 200, result
        assert len(result[read]["cpu_s"]) == 3 and all(_is_number(x) for x in result[read]["cpu_s"])
