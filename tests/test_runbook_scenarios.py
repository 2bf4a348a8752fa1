"""The runbooks' incidents, end to end: `monitor run` as a process, real loopback targets, receivers
that check PagerDuty, Slack and webhook payloads field by field, a real SMTP server.

Every scenario uses the TyneBase runbook's alert policy: critical pages immediately (PagerDuty +
Slack), warnings go to Slack and email during business hours.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from tests.fakes.daemon import DaemonProcess, free_port
from tests.fakes.postgres import PostgresCluster
from tests.fakes.receivers import Receiver, Reply, pagerduty_problems, slack_problems, webhook_problems
from tests.fakes.smtp import SmtpServer

RUNBOOK = "https://wiki.example.com/tynebase-runbook#issue-1-backend-api-not-responding"


@dataclass
class Backend:
    """The backend's /health: status and latency switchable by the test."""

    status: int = 200
    delay_s: float = 0.0
    runner: web.AppRunner | None = None
    port: int = 0

    async def start(self) -> Backend:
        async def health(_: web.Request) -> web.Response:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            body = {"status": "ok" if self.status == 200 else "degraded", "uptime": 12345}
            return web.json_response(body, status=self.status)

        app = web.Application()
        app.router.add_get("/health", health)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Stack:
    """Targets, receivers and the config that ties them to a daemon."""

    tmp: Path
    backend: Backend
    collab_port: int
    pagerduty: Receiver
    slack: Receiver
    hook: Receiver
    smtp: SmtpServer
    db_dsn: str = ""
    port: int = 0
    daemons: list[DaemonProcess] = field(default_factory=list)

    def config(self, extra: str = "", database: bool = False, business_hours: str = "") -> Path:
        db = ""
        depends = ""
        if database:
            db = f'[[checks]]\nname = "database"\ntype = "postgres"\ndsn = "{self.db_dsn}"\n'
            depends = 'depends_on = ["database"]'
        hours = (
            business_hours
            or 'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\nstart = "00:00"\nend = "24:00"'
        )
        self.port = free_port()
        text = f"""
[monitor]
listen = "127.0.0.1:{self.port}"
state = "sqlite:///{self.tmp}/state.db"
default_interval = "1s"
default_timeout = "1s"
log_format = "json"

[business_hours]
{hours}

[thresholds.latency_p95_ms]
warning = 500
critical = 1000
window = "1m"

[notifiers.oncall]
type = "pagerduty"
routing_key = "${{PAGERDUTY_ROUTING_KEY}}"
url = "{self.pagerduty.url}/v2/enqueue"

[notifiers.team-chat]
type = "slack"
webhook_url = "${{SLACK_WEBHOOK_URL}}"

[notifiers.ops-mail]
type = "email"
host = "127.0.0.1"
port = {self.smtp.port}
security = "none"
from = "monitor@example.com"
to = ["ops@example.com"]

[notifiers.audit]
type = "webhook"
url = "{self.hook.url}/monitor"

[[routes]]
match = {{ severity = "critical" }}
notify = ["oncall", "team-chat"]
continue = true

[[routes]]
match = {{ severity = "warning" }}
notify = ["team-chat", "ops-mail"]
when = "business_hours"

[[routes]]
notify = ["audit"]

{db}
[[checks]]
name = "backend-api"
type = "http"
url = "http://127.0.0.1:{self.backend.port}/health"
expect_json = {{ status = "ok" }}
runbook = "{RUNBOOK}"
labels = {{ team = "backend", component = "api" }}
{depends}

[[checks]]
name = "collab-ws"
type = "websocket"
url = "ws://127.0.0.1:{self.collab_port}"
send = "ping"
expect = "pong"
{depends}
{extra}
"""
        path = self.tmp / "monitor.toml"
        path.write_text(text)
        return path

    async def run(self, config: Path) -> DaemonProcess:
        env = {
            "PAGERDUTY_ROUTING_KEY": "R0UT1NGKEY0123456789abcdef012345",
            "SLACK_WEBHOOK_URL": f"{self.slack.url}/services/T000/B000/slack-secret-path",
        }
        daemon = await DaemonProcess(config, self.port, env).start()
        self.daemons.append(daemon)
        return daemon


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    backend = await Backend().start()

    async def echo(ws: ServerConnection) -> None:
        async for message in ws:
            await ws.send("pong" if message == "ping" else str(message))

    collab = await serve(echo, "127.0.0.1", 0)
    pagerduty = await Receiver(default=202, validate=pagerduty_problems).start()
    slack = await Receiver(default=200, validate=slack_problems).start()
    hook = await Receiver(default=200, validate=webhook_problems).start()
    smtp = SmtpServer(security="none")
    await smtp.__aenter__()
    s = Stack(tmp_path, backend, collab.sockets[0].getsockname()[1], pagerduty, slack, hook, smtp)
    try:
        yield s
    finally:
        for daemon in s.daemons:
            if daemon.proc is not None and daemon.proc.returncode is None:
                await daemon.stop()
        await smtp.__aexit__(None, None, None)
        for receiver in (pagerduty, slack, hook):
            await receiver.aclose()
        collab.close()
        await backend.stop()


def triggers(receiver: Receiver, action: str = "trigger") -> list[dict]:
    return [r.json for r in receiver.requests if r.json and r.json.get("event_action") == action]


async def settle(seconds: float) -> None:
    """Let the daemon run on (for asserting that nothing more is sent)."""
    await asyncio.sleep(seconds)


async def test_backend_503_one_page_one_slack_message_then_one_resolve_each(stack: Stack) -> None:
    """Issue 1, "Backend API not responding": HTTP 503 from /health."""
    daemon = await stack.run(stack.config())
    await daemon.poll("/api/v1/checks", lambda b: all(c["up"] for c in b["checks"]))
    went_down = time.monotonic()
    stack.backend.status = 503
    [page] = await stack.pagerduty.wait_for(1, timeout_s=15)
    detection_s = time.monotonic() - went_down
    body = page.json
    assert body["event_action"] == "trigger"
    assert body["routing_key"] == "R0UT1NGKEY0123456789abcdef012345"
    assert body["payload"]["summary"] == "backend-api: up 0 < 1 (status 503)"
    assert body["payload"]["severity"] == "critical"
    assert body["payload"]["component"] == "backend-api"
    assert body["payload"]["group"] == "backend"
    assert body["payload"]["class"] == "up"
    assert body["payload"]["source"] == f"127.0.0.1:{stack.backend.port}"
    assert body["payload"]["custom_details"]["reason"] == "status 503"
    assert body["links"] == [{"href": RUNBOOK, "text": "Runbook"}]
    [chat] = await stack.slack.wait_for(1)
    assert "CRITICAL" in chat.json["text"].upper() and "backend-api" in chat.json["text"]
    await settle(3)  # still down for several more runs: no second page
    assert len(triggers(stack.pagerduty)) == 1
    assert len(stack.slack.requests) == 1
    assert stack.pagerduty.problems == [] and stack.slack.problems == []
    assert stack.smtp.messages == []  # a critical does not go to the warning route

    stack.backend.status = 200
    await stack.pagerduty.wait_for(2, timeout_s=15)
    await stack.slack.wait_for(2)
    await settle(2)
    [resolve] = triggers(stack.pagerduty, "resolve")
    assert resolve["dedup_key"] == body["dedup_key"]
    assert len(stack.pagerduty.requests) == 2 and len(stack.slack.requests) == 2
    assert "RESOLVED" in stack.slack.requests[1].json["text"].upper()
    hooks = [r.json for r in stack.hook.requests]
    assert [h["status"] for h in hooks] == ["firing", "resolved"]
    assert hooks[1]["alert"]["resolved_at"] is not None
    assert await daemon.metric("monitor_notifications_total", notifier="oncall", outcome="sent") == 2
    assert await daemon.stop() == 0
    assert "R0UT1NGKEY" not in daemon.output and "slack-secret-path" not in daemon.output
    # interval 1 s x trigger_after 2, plus up to one interval of phase: the budget is 3 s.
    assert detection_s < 10, detection_s


async def test_database_down_only_the_database_pages(stack: Stack, tmp_path: Path) -> None:
    """The database goes down while the backend and the collaboration server depend on it."""
    with PostgresCluster() as db:
        stack.db_dsn = db.dsn()
        daemon = await stack.run(stack.config(database=True))
        await daemon.poll(
            "/api/v1/checks", lambda b: len(b["checks"]) == 3 and all(c["up"] for c in b["checks"])
        )
        db.stop()
        stack.backend.status = 503  # the backend's health reports the database, as in the runbook
        await stack.pagerduty.wait_for(1, timeout_s=15)
        await settle(4)
    pages = triggers(stack.pagerduty)
    assert [p["payload"]["component"] for p in pages] == ["database"]
    alerts = {
        (a["check"], a["metric"]): a for a in (await daemon.poll("/api/v1/alerts", lambda b: True))["alerts"]
    }
    assert alerts[("database", "up")]["suppressed"] is None
    assert alerts[("backend-api", "up")]["suppressed"] == "dependency"
    assert all(r.json["text"].count("database") for r in stack.slack.requests)
    assert await daemon.stop() == 0


async def test_p95_warning_goes_to_slack_and_email_only(stack: Stack) -> None:
    """p95 latency over 500 ms but under 1000 ms: a warning, never a page."""
    stack.backend.delay_s = 0.7
    daemon = await stack.run(stack.config())
    [mail] = await stack.smtp.wait_for(1, timeout_s=15)
    assert mail.message["Subject"].startswith("[WARNING] backend-api: latency_p95_ms 7")
    assert mail.message["Subject"].endswith(" > 500")
    [chat] = await stack.slack.wait_for(1)
    assert "WARNING" in chat.json["text"].upper()
    await settle(2)
    assert stack.pagerduty.requests == []
    assert await daemon.stop() == 0


async def test_warning_outside_business_hours_is_held(stack: Stack) -> None:
    stack.backend.delay_s = 0.7
    tomorrow = (datetime.now(UTC) + timedelta(days=2)).strftime("%a").lower()
    daemon = await stack.run(
        stack.config(business_hours=f'days = ["{tomorrow}"]\nstart = "09:00"\nend = "18:00"')
    )
    alerts = await daemon.poll(
        "/api/v1/alerts",
        lambda b: any(a["metric"] == "latency_p95_ms" and a["state"] == "firing" for a in b["alerts"]),
    )
    assert alerts["alerts"][0]["severity"] == "warning"
    await settle(3)
    assert stack.slack.requests == [] and stack.smtp.messages == [] and stack.pagerduty.requests == []
    assert await daemon.stop() == 0


async def test_maintenance_window_sends_nothing_then_pages_when_it_closes(stack: Stack) -> None:
    """A maintenance window over the deployment: nothing sent; still broken when it closes: paged."""
    stack.backend.status = 503
    now = datetime.now(UTC)
    end = now + timedelta(seconds=8)
    window = f"""
[[maintenance]]
name = "deployment"
checks = ["backend-*"]
start = "{(now - timedelta(minutes=1)).isoformat()}"
end = "{end.isoformat()}"
"""
    daemon = await stack.run(stack.config(extra=window))
    await daemon.poll(
        "/api/v1/alerts",
        lambda b: any(a["suppressed"] == "maintenance" and a["state"] == "firing" for a in b["alerts"]),
    )
    checks = await daemon.poll("/api/v1/checks", lambda b: True)
    assert next(c for c in checks["checks"] if c["name"] == "backend-api")["suppressed"] == "maintenance"
    assert stack.pagerduty.requests == []
    [page] = await stack.pagerduty.wait_for(1, timeout_s=20)
    assert datetime.now(UTC) >= end
    assert page.json["payload"]["component"] == "backend-api"
    assert await daemon.stop() == 0


async def test_pagerduty_500s_retried_and_a_failing_notifier_delays_no_one(stack: Stack) -> None:
    stack.pagerduty.script = [500, 500]
    stack.hook.default = Reply(400, body={"error": "bad"})  # the audit webhook rejects everything
    stack.backend.status = 503
    daemon = await stack.run(stack.config())
    await stack.slack.wait_for(1, timeout_s=15)
    first_pd_attempt = stack.pagerduty.requests[0]
    assert first_pd_attempt.json["event_action"] == "trigger"
    requests = await stack.pagerduty.wait_for(3, timeout_s=15)  # 500, 500 (1 s, 2 s), then 202
    assert [r.json["dedup_key"] for r in requests] == [requests[0].json["dedup_key"]] * 3
    await daemon.poll(
        "/metrics",
        lambda text: 'monitor_notifications_total{notifier="oncall",outcome="sent"} 1.0' in text,
        as_json=False,
    )
    assert await daemon.metric("monitor_notifications_total", notifier="oncall", outcome="retry") == 2
    assert await daemon.metric("monitor_notifications_total", notifier="audit", outcome="failed") == 1
    assert await daemon.metric("monitor_outbox_pending") == 0
    assert await daemon.stop() == 0


async def test_kill_9_before_delivery_then_delivered_after_restart(stack: Stack) -> None:
    stack.pagerduty.script = [Reply.hang()]  # the first trigger is in flight when the daemon dies
    stack.backend.status = 503
    config = stack.config()
    daemon = await stack.run(config)
    await stack.pagerduty.wait_for(1, timeout_s=15)
    await stack.slack.wait_for(1)
    # Slack's delivery is booked (counted once it is recorded in the store); PagerDuty's is not.
    await daemon.poll(
        "/metrics",
        lambda text: 'monitor_notifications_total{notifier="team-chat",outcome="sent"} 1.0' in text,
        as_json=False,
    )
    await daemon.kill()

    restarted = await stack.run(config)
    requests = await stack.pagerduty.wait_for(2, timeout_s=15)
    assert [r.json["event_action"] for r in requests] == ["trigger", "trigger"]
    assert requests[1].json["dedup_key"] == requests[0].json["dedup_key"]
    await settle(3)
    assert len(stack.pagerduty.requests) == 2, [  # delivered once more, not paged anew
        (r.json["event_action"], r.json["payload"]["summary"]) for r in stack.pagerduty.requests
    ]
    assert len(stack.slack.requests) == 1  # Slack had it before the crash: no second "firing"
    stack.backend.status = 200
    await stack.pagerduty.wait_for(3, timeout_s=15)
    assert stack.pagerduty.requests[2].json["event_action"] == "resolve"  # no lost resolve
    assert await restarted.stop() == 0
