"""`monitor once` as a Nagios plugin: its output read the way Nagios reads it (the first line's text
before ` | `, the perfdata after it, parsed item by item with the guidelines' grammar), against real
loopback targets; and the exit codes."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from monitor.cli import main
from monitor.once import perfdata_item
from monitor.thresholds import ThresholdRow
from tests.fakes.servers import LoopbackServers, json_handler, refused_port

MONITOR = [sys.executable, "-m", "monitor"]

# https://www.monitoring-plugins.org/doc/guidelines.html, "Performance data" and "Threshold and ranges".
_NUM = r"-?[0-9]+(?:\.[0-9]+)?"
_RANGE = rf"@?(?:(?:~|{_NUM}):)?(?:{_NUM})?"
PERFDATA_ITEM = re.compile(
    rf"'(?P<label>(?:[^'=]|'')+)'=(?P<value>{_NUM}|U)(?P<uom>us|ms|s|%|B|KB|MB|GB|TB|c)?"
    rf"(?:;(?P<warn>{_RANGE})(?:;(?P<crit>{_RANGE})(?:;(?P<min>{_NUM})?(?:;(?P<max>{_NUM})?)?)?)?)?"
)


@dataclass
class Perf:
    value: float | None
    uom: str
    warn: str
    crit: str
    min: str
    max: str


@dataclass
class PluginOutput:
    code: int
    status: str  # OK|WARNING|CRITICAL|UNKNOWN, from the status line
    text: str  # the status line's text after `MONITOR <STATUS> - `
    perfdata: dict[str, Perf]
    long_output: list[str]


def parse_plugin_output(code: int, out: str) -> PluginOutput:
    """What Nagios keeps: the first line's text up to the first `|`, then its perfdata."""
    first, *rest = out.rstrip("\n").split("\n")
    text, sep, perf = first.partition(" | ")
    assert "|" not in text, first
    match = re.fullmatch(r"MONITOR (OK|WARNING|CRITICAL|UNKNOWN) - (.+)", text)
    assert match, first
    perfdata: dict[str, Perf] = {}
    if sep:
        items = list(PERFDATA_ITEM.finditer(perf))
        assert " ".join(m.group(0) for m in items) == perf, f"not perfdata by the guidelines: {perf}"
        for m in items:
            value = None if m["value"] == "U" else float(m["value"])
            perfdata[m["label"].replace("''", "'")] = Perf(
                value, m["uom"] or "", m["warn"] or "", m["crit"] or "", m["min"] or "", m["max"] or ""
            )
    for line in rest:
        assert "|" not in line, f"a `|` in long output starts perfdata: {line}"
    return PluginOutput(code, match[1], match[2], perfdata, rest)


def alerts(nagios_range: str, value: float) -> bool:
    """The guidelines' reading of a range: alert when outside start..end (ends included), or
    inside with a leading `@`."""
    inside_alerts = nagios_range.startswith("@")
    spec = nagios_range.removeprefix("@")
    start_text, colon, end_text = spec.partition(":")
    if not colon:
        start_text, end_text = "0", spec
    start = -math.inf if start_text == "~" else float(start_text or 0)
    end = math.inf if end_text == "" else float(end_text)
    inside = start <= value <= end
    return inside if inside_alerts else not inside


@pytest.fixture
async def targets() -> AsyncIterator[dict[str, str]]:
    async def slow(_: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.12)
        return web.json_response({"status": "ok"})

    async with LoopbackServers() as servers:
        with refused_port() as closed:
            yield {
                "ok": await servers.http({"/health": json_handler({"status": "ok", "uptime": 42})}),
                "down": await servers.http({"/health": json_handler({"status": "bad"})}),
                "slow": await servers.http({"/health": slow}),
                "closed": str(closed),
            }


def write_config(tmp_path: Path, targets: dict[str, str]) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(f"""
[thresholds.latency_p95_ms]
warning = 50
critical = 60000

[thresholds.uptime_s]
warning = 10
direction = "below"

[[checks]]
name = "web"
type = "http"
url = "{targets["ok"]}/health"
metrics = {{ uptime_s = "uptime" }}

[[checks]]
name = "api"
type = "http"
url = "{targets["down"]}/health"
expect_body = "ok|ready"

[[checks]]
name = "collab-tcp"
type = "tcp"
host = "127.0.0.1"
port = {targets["closed"]}

[[checks]]
name = "slow"
type = "http"
url = "{targets["slow"]}/health"
""")
    return path


async def monitor_once(config: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *MONITOR, "once", "-c", str(config), *args, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_status_line_names_the_worst_checks_and_perfdata_carries_every_sample(
    tmp_path: Path, targets: dict[str, str]
) -> None:
    config = write_config(tmp_path, targets)
    output = parse_plugin_output(*await monitor_once(config))
    code, raw = await monitor_once(config, "--json")
    checks = {c["name"]: c for c in json.loads(raw)["checks"]}

    assert (output.code, output.status, code) == (2, "CRITICAL", 2)
    # A `|` in a reason would start perfdata: it shows as `¦`.
    assert output.text == (
        "2 of 4 checks critical: api (expect_body: /ok\N{BROKEN BAR}ready/ not found), "
        "collab-tcp (connection refused); 1 warning"
    )
    # Every sample of every check is one perfdata item with its unit, as `--json` reports it.
    assert set(output.perfdata) == {f"{n} {m}" for n, c in checks.items() for m in c["samples"]}
    stable = {"up", "status_code", "body_bytes", "uptime_s"}  # the same in both runs
    for name, check in checks.items():
        for metric in stable & set(check["samples"]):
            assert output.perfdata[f"{name} {metric}"].value == check["samples"][metric], (name, metric)
    # Latency against the same run's table (its MS column, to 0.1 ms).
    table_ms = {line.split()[0]: float(line.split()[4]) for line in output.long_output[1:]}
    for name, ms in table_ms.items():
        assert output.perfdata[f"{name} latency_ms"].value == pytest.approx(ms, abs=0.051), name
    assert output.perfdata["web latency_ms"].uom == "ms" and output.perfdata["web latency_ms"].min == "0"
    assert output.perfdata["web uptime_s"].uom == "s"
    assert output.perfdata["slow body_bytes"].uom == "B"
    assert (output.perfdata["web up"].min, output.perfdata["web up"].max) == ("0", "1")
    assert output.perfdata["web status_code"].uom == ""
    # The thresholds: Nagios' reading of each range alerts exactly where the state says so.
    assert output.perfdata["web up"].crit == "1:"
    assert output.perfdata["slow latency_p95_ms"].warn == "~:50"
    assert output.perfdata["web uptime_s"].warn == "10:"
    compared = 0
    for name, check in checks.items():
        for metric, state in check["states"].items():
            perf = output.perfdata.get(f"{name} {metric}")
            if perf is None or perf.value is None:
                continue
            crit = bool(perf.crit) and alerts(perf.crit, perf.value)
            warn = bool(perf.warn) and alerts(perf.warn, perf.value)
            assert state == ("critical" if crit else "warning" if warn else "ok"), (name, metric, perf)
            compared += 1
    assert compared == 7  # up of 4 checks, latency_p95_ms of the 2 that answered, uptime_s
    # The table follows as long output: one line per check under its header.
    assert output.long_output[0].split() == ["CHECK", "TYPE", "STATUS", "UP", "MS", "STATES", "REASON"]
    assert [line.split()[0] for line in output.long_output[1:]] == list(checks)


async def test_warning_and_ok_runs_exit_1_and_0(tmp_path: Path, targets: dict[str, str]) -> None:
    config = write_config(tmp_path, targets)

    warning = parse_plugin_output(*await monitor_once(config, "--check", "web", "--check", "slow"))
    assert (warning.code, warning.status) == (1, "WARNING")
    assert re.fullmatch(r"1 of 2 checks warning: slow \(latency_p95_ms [0-9.]+ms > 50\)", warning.text)

    ok = parse_plugin_output(*await monitor_once(config, "--check", "web"))
    assert (ok.code, ok.status, ok.text) == (0, "OK", "1 of 1 checks ok")
    assert ok.perfdata["web uptime_s"].value == 42


def test_usage_errors_are_unknown_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[[checks]]\nname = "x"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 1\n')
    unknown = parse_plugin_output(main(["once", "-c", str(good), "--check", "nope"]), capsys.readouterr().out)
    assert (unknown.code, unknown.status, unknown.text) == (3, "UNKNOWN", '--check: unknown check "nope"')
    assert unknown.perfdata == {}

    bad = tmp_path / "bad.toml"
    bad.write_text('[[checks]]\nname = "x"\ntype = "http"\nurl = "nope"\n\n[[checks]]\nname = "y"\n')
    invalid = parse_plugin_output(main(["once", "-c", str(bad)]), capsys.readouterr().out)
    assert (invalid.code, invalid.status) == (3, "UNKNOWN")
    assert invalid.text.startswith("invalid configuration: checks[0].url: ") and invalid.text.endswith(
        " (and 1 more)"
    )
    assert invalid.long_output[-1] == "checks[1].type: required key missing"


@pytest.mark.parametrize(
    ("metric", "value", "row", "item"),
    [
        ("latency_ms", 0.77, None, "'c latency_ms'=0.77ms;;;0"),
        ("up", 0.0, ThresholdRow("up", None, 1, "below"), "'c up'=0;;1:;0;1"),
        ("cpu_pct", 96.5, ThresholdRow("cpu_pct", 70, 90), "'c cpu_pct'=96.5%;~:70;~:90"),
        ("database_size_bytes", 1.5e12, None, "'c database_size_bytes'=1500000000000B;;;0"),
        ("tiny", 1e-7, None, "'c tiny'=0.0000001"),
        ("inf", math.inf, None, "'c inf'=U"),
        ("it's=odd", 1.0, None, "'c it''s_odd'=1"),
    ],
    ids=["latency", "up-below", "pct-above", "bytes-no-exponent", "small", "not-finite", "quoting"],
)
def test_perfdata_item_follows_the_guidelines(
    metric: str, value: float, row: ThresholdRow | None, item: str
) -> None:
    written = perfdata_item("c", metric, value, row)
    assert written == item
    assert PERFDATA_ITEM.fullmatch(written), written
