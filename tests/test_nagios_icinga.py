"""`monitor once` run by a real Icinga 2 (the Debian package) as a CheckCommand: the state Icinga
takes from the exit code, the output and the perfdata it keeps, read back from its PerfdataWriter.

Icinga runs in a temporary directory of its own (config, state, logs, spool): never the machine's
/etc/icinga2 or its service."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.deploy.helpers import LoopbackHttp, json_reply
from tests.fakes.servers import refused_port
from tests.test_nagios import PERFDATA_ITEM

ROOT = Path(__file__).parent.parent
READ_BACK_WITHIN_S = 20.0
# One record per check result; the output spans lines (the status line, then the table).
_TEMPLATE = (
    r"BEGIN\tSTATE=$service.state$\tEXIT=$service.state_id$"
    r"\tOUTPUT=$service.output$\tPERFDATA=$service.perfdata$\tEND"
)
_RECORD = re.compile(r"BEGIN\tSTATE=(\w+)\tEXIT=(\d+)\tOUTPUT=(.*?)\tPERFDATA=(.*?)\tEND\n", re.S)


def icinga2() -> str:
    found = shutil.which("icinga2") or "/usr/sbin/icinga2"
    assert Path(found).exists(), "icinga2 missing: install the Debian package icinga2 (scripts/test does)"
    return found


def icinga_config(directory: Path, monitor_toml: Path) -> Path:
    perf = directory / "perfdata"
    perf.mkdir()
    command = [sys.executable, "-m", "monitor", "once", "-c", str(monitor_toml)]
    config = directory / "icinga2.conf"
    config.write_text(f"""
include <itl>

object CheckerComponent "checker" {{ }}

object CheckCommand "monitor-once" {{
  command = {_array(command)}
  env = {{ PYTHONPATH = "{ROOT}" }}
  timeout = 30s
}}

object Host "monitor-host" {{
  check_command = "dummy"
  enable_active_checks = false
}}

object Service "monitor" {{
  host_name = "monitor-host"
  check_command = "monitor-once"
  check_interval = 1s
  retry_interval = 1s
  max_check_attempts = 1
}}

object PerfdataWriter "perfdata" {{
  service_perfdata_path = "{perf}/service"
  service_temp_path = "{perf}/service.tmp"
  host_perfdata_path = "{perf}/host"
  host_temp_path = "{perf}/host.tmp"
  service_format_template = "{_TEMPLATE}"
  rotation_interval = 1s
}}
""")
    return config


def _array(items: list[str]) -> str:
    return "[ " + ", ".join(f'"{item}"' for item in items) + " ]"


@contextlib.contextmanager
def running_icinga(monitor_toml: Path) -> Iterator[Path]:
    """Icinga 2 checking `monitor once -c monitor_toml` every second; yields the PerfdataWriter's
    directory."""
    base = Path(tempfile.mkdtemp(prefix="monitor-icinga-"))
    for sub in ("data/lib/icinga2", "log/icinga2", "cache/icinga2", "spool/icinga2", "run/icinga2"):
        (base / sub).mkdir(parents=True)
    defines = {
        "DataDir": base / "data", "StateDir": base / "data", "LogDir": base / "log",
        "CacheDir": base / "cache", "SpoolDir": base / "spool", "InitRunDir": base / "run", "ConfigDir": base,
        "RunAsUser": pwd.getpwuid(os.getuid()).pw_name, "RunAsGroup": grp.getgrgid(os.getgid()).gr_name,
    }  # fmt: skip
    argv = [icinga2(), "daemon", "-c", str(icinga_config(base, monitor_toml)), "-x", "warning"]
    argv += [arg for key, value in defines.items() for arg in ("-D", f"{key}={value}")]
    with (base / "icinga.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield base / "perfdata"
    finally:
        # Icinga's umbrella process can outlive a SIGTERM while a check runs: then its whole group goes.
        os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        shutil.rmtree(base, ignore_errors=True)


def read_back(perf: Path, base_log: Path) -> tuple[str, int, str, str]:
    """The first check result Icinga wrote out: state, exit code, output, perfdata."""
    deadline = time.monotonic() + READ_BACK_WITHIN_S
    while time.monotonic() < deadline:
        for path in sorted(perf.glob("service.[0-9]*")):
            match = _RECORD.search(path.read_text())
            if match:
                return match[1], int(match[2]), match[3], match[4]
        time.sleep(0.2)
    log = base_log.read_text(errors="replace")[-3000:] if base_log.exists() else "(no log)"
    raise AssertionError(f"no check result from Icinga 2 within {READ_BACK_WITHIN_S:.0f}s:\n{log}")


def test_icinga_runs_monitor_once_as_a_plugin(tmp_path: Path) -> None:
    monitor_toml = tmp_path / "monitor.toml"
    server = LoopbackHttp({"/health": lambda _: json_reply(200, {"status": "ok"})}).start()
    try:
        with refused_port() as closed:
            monitor_toml.write_text(f"""
[thresholds.latency_p95_ms]
warning = 30000
critical = 60000

[[checks]]
name = "api"
type = "http"
url = "{server.url("/health")}"

[[checks]]
name = "collab-tcp"
type = "tcp"
host = "127.0.0.1"
port = {closed}
""")
            with running_icinga(monitor_toml) as perf:
                state, exit_code, output, perfdata = read_back(perf, perf.parent / "icinga.log")
    finally:
        server.stop()

    assert (state, exit_code) == ("CRITICAL", 2)
    first, *long_output = output.split("\n")
    assert first.strip() == "MONITOR CRITICAL - 1 of 2 checks critical: collab-tcp (connection refused)"
    assert [line.split()[0] for line in long_output[1:]] == ["api", "collab-tcp"]  # the table
    items = {m["label"]: m for m in PERFDATA_ITEM.finditer(perfdata)}
    assert " ".join(m.group(0) for m in items.values()) == perfdata.strip()
    assert items["collab-tcp up"].group(0) == "'collab-tcp up'=0;;1:;0;1"
    assert items["api up"].group(0) == "'api up'=1;;1:;0;1"
    assert items["api status_code"]["value"] == "200"
    assert items["api latency_p95_ms"]["warn"] == "~:30000" and items["api latency_p95_ms"]["uom"] == "ms"
