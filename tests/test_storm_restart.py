"""A storm across a restart (SPEC section 12), end to end: a real `monitor run` process on SQLite
state pages a loopback PagerDuty receiver. 40 checks fail together: one storm incident; SIGTERM
and a new process while it lasts: no second page; the storm ends while 9 still fail: one "storm
over" naming them, and they are not paged one by one afterwards."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.daemon import DaemonProcess, free_port
from tests.fakes.receivers import Receiver, pagerduty_problems

WEB = [f"web-{i:02d}" for i in range(31)]  # their target comes back: the storm ends
DB = [f"db-{i}" for i in range(9)]  # fewer than the guard's 10: still down when it ends
RUNS = 3  # runs of every check a process must have made before "no page" is believed


class Target:
    """A loopback TCP listener that can be cut (connections refused) and brought back on its port."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Target:
        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.server = await asyncio.start_server(accept, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def targets() -> AsyncIterator[tuple[Target, Target]]:
    web, db = await Target().start(), await Target().start()
    try:
        yield web, db
    finally:
        await web.cut()
        await db.cut()


def write_config(tmp_path: Path, port: int, web: Target, db: Target, pagerduty: str) -> Path:
    checks = "".join(
        f'[[checks]]\nname = "{name}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = {target.port}\n'
        for names, target in ((WEB, web), (DB, db))
        for name in names
    )
    path = tmp_path / "monitor.toml"
    path.write_text(
        f"""
[monitor]
listen = "127.0.0.1:{port}"
state = "sqlite:///{tmp_path / "state.db"}"
default_interval = "1s"
default_timeout = "1s"
log_format = "json"

[thresholds.up]
critical = 1
direction = "below"
trigger_after = 2

[notifiers.oncall]
type = "pagerduty"
routing_key = "storm-restart-routing-key"
url = "{pagerduty}/v2/enqueue"

[[routes]]
match = {{ severity = "critical" }}
notify = ["oncall"]

{checks}"""
    )
    return path


async def runs_of(daemon: DaemonProcess, names: list[str], result: str) -> float:
    """The fewest runs with `result` that one of `names` has made in this process."""
    _, text = await daemon.get("/metrics")
    counts = dict.fromkeys(names, 0.0)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            check = s.labels.get("check")
            if s.name == "monitor_check_runs_total" and s.labels.get("result") == result and check in counts:
                counts[check] = s.value
    return min(counts.values())


async def settled(daemon: DaemonProcess, names: list[str], failures: float) -> None:
    """Every one of `names` has failed `failures` times in this process, and nothing decided is
    still undelivered: a page it was going to send would have been sent by now."""
    deadline = asyncio.get_running_loop().time() + 20
    while await runs_of(daemon, names, "failure") < failures or await daemon.metric("monitor_outbox_pending"):
        assert asyncio.get_running_loop().time() < deadline, "the daemon did not run its checks"
        await asyncio.sleep(0.2)


async def critical_up(daemon: DaemonProcess, n: int) -> None:
    await daemon.poll("/api/v1/alerts?metric=up&count=true", lambda c: c["critical"] == n)


@pytest.mark.timeout(90)
async def test_a_restart_during_a_storm_pages_once_and_the_storm_over_names_those_still_down(
    tmp_path: Path, targets: tuple[Target, Target]
) -> None:
    web, db = targets
    async with Receiver(validate=pagerduty_problems) as pagerduty:
        port = free_port()
        config = write_config(tmp_path, port, web, db, pagerduty.url)
        first = await DaemonProcess(config, port).start()
        try:
            await first.poll("/api/v1/checks", lambda b: all(c["up"] for c in b["checks"]))
            await web.cut()  # 40 checks fail together
            await db.cut()
            [storm] = await pagerduty.wait_for(1, timeout_s=20)
            await critical_up(first, len(WEB + DB))
            assert storm.json["event_action"] == "trigger"
            incident = storm.json["dedup_key"]
            assert incident.startswith("storm-0-")
            details = storm.json["payload"]["custom_details"]
            assert details["checks_down"] >= 11 and set(details["checks"]) <= set(WEB + DB)
        finally:
            assert await first.stop() == 0

        second = await DaemonProcess(config, port).start()  # the storm goes on across the restart
        try:
            await critical_up(second, len(WEB + DB))
            await settled(second, WEB + DB, RUNS)
            assert len(pagerduty.requests) == 1, [r.json for r in pagerduty.requests]
            listed = json.loads((await second.get("/api/v1/alerts?metric=up"))[1])["alerts"]
            assert {(a["state"], a["suppressed"]) for a in listed} == {("firing", "storm")}

            await web.start()  # back on its port: 31 recover, 9 still down, fewer than 10
            [_, over] = await pagerduty.wait_for(2, timeout_s=20)
            assert (over.json["event_action"], over.json["dedup_key"]) == ("resolve", incident)
            details = over.json["payload"]["custom_details"]
            assert details["checks_down"] == len(DB) and sorted(details["checks"]) == DB
            assert over.json["payload"]["summary"].startswith("storm over: 9 checks still down: ")
            after = await runs_of(second, DB, "failure")
            await settled(second, DB, after + RUNS)
            assert len(pagerduty.requests) == 2, [r.json for r in pagerduty.requests[2:]]
            await critical_up(second, len(DB))
            listed = json.loads((await second.get("/api/v1/alerts?metric=up"))[1])["alerts"]
            assert sorted(a["check"] for a in listed) == DB
            assert {a["suppressed"] for a in listed} == {"storm"}
        finally:
            assert await second.stop() == 0
        assert pagerduty.problems == []
