"""The fake receivers themselves: scripts, waiting, and validators that do catch bad payloads."""

from __future__ import annotations

import copy
from typing import Any

import aiohttp
import pytest

from alerts.notifiers.alertmanager import build_alerts
from alerts.notifiers.pagerduty import build_event
from alerts.notifiers.slack import build_message
from alerts.notifiers.webhook import build_body
from tests.fakes.receivers import (
    Receivers,
    Reply,
    alertmanager_problems,
    pagerduty_problems,
    slack_problems,
    webhook_problems,
)
from tests.notifiers.samples import notification


async def test_script_then_default(receivers: Receivers, http_session: aiohttp.ClientSession) -> None:
    receiver = await receivers.start([500, Reply(429, headers={"Retry-After": "3"})], default=202)
    answers = []
    for i in range(3):
        async with http_session.post(f"{receiver.url}/x?n={i}", json={"n": i}) as resp:
            answers.append((resp.status, resp.headers.get("Retry-After")))
    assert answers == [(500, None), (429, "3"), (202, None)]
    assert [r.json for r in await receiver.wait_for(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert receiver.requests[2].query == {"n": "2"}
    receiver.script = [400]
    async with http_session.post(receiver.url, data=b"not json") as resp:
        assert resp.status == 400
    assert receiver.requests[3].json is None and receiver.requests[3].text == "not json"


async def test_invalid_payload_is_answered_400(
    receivers: Receivers, http_session: aiohttp.ClientSession
) -> None:
    receiver = await receivers.start([202], validate=pagerduty_problems)
    async with http_session.post(receiver.url, json={"event_action": "explode"}) as resp:
        assert resp.status == 400
    assert "event_action: not one of" in " ".join(receiver.problems)
    assert receiver.script == [Reply(202)]  # an invalid payload does not use up the script


async def test_wait_for_says_what_it_got(receivers: Receivers) -> None:
    receiver = await receivers.start()
    with pytest.raises(AssertionError, match="expected 1 request"):
        await receiver.wait_for(1, timeout_s=0.05)


def _break(body: Any, path: list[Any], value: Any = None, *, delete: bool = False) -> Any:
    broken = copy.deepcopy(body)
    target = broken
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return broken


PD = build_event(notification(), "key")
SLACK = build_message(notification())
HOOK = build_body(notification())
AM = build_alerts(notification())


@pytest.mark.parametrize(
    ("validator", "body", "problem"),
    [
        (pagerduty_problems, _break(PD, ["payload", "summary"], delete=True), "payload: missing 'summary'"),
        (pagerduty_problems, _break(PD, ["payload", "severity"], "high"), "payload.severity"),
        (pagerduty_problems, _break(PD, ["payload", "timestamp"], "yesterday"), "payload.timestamp"),
        (pagerduty_problems, _break(PD, ["dedup_key"], "x" * 300), "dedup_key: longer than 255"),
        (pagerduty_problems, _break(PD, ["payload", "custom_details", "since"], delete=True), "'since'"),
        (pagerduty_problems, _break(PD, ["links", 0, "href"], delete=True), "links[0]: missing 'href'"),
        (slack_problems, _break(SLACK, ["text"], ""), "text: empty"),
        (slack_problems, _break(SLACK, ["blocks", 0, "text", "text"], "x" * 151), "longer than 150"),
        (slack_problems, _break(SLACK, ["blocks", 0, "type"], "banner"), "unknown block type"),
        (
            slack_problems,
            _break(SLACK, ["blocks", 2, "fields"], [SLACK["blocks"][2]["fields"][0]] * 11),
            "1 to 10",
        ),
        (webhook_problems, _break(HOOK, ["version"], 1), "version"),
        (webhook_problems, _break(HOOK, ["alert", "started_at"], "2026-11-18 11:06"), "alert.started_at"),
        (webhook_problems, _break(HOOK, ["alert", "extra"], 1), "unexpected key 'extra'"),
        (webhook_problems, _break(HOOK, ["status"], "resolved"), "alert.resolved_at"),
        (alertmanager_problems, _break(AM, [0, "labels", "bad-name"], "x"), "invalid label name"),
        (alertmanager_problems, _break(AM, [0, "startsAt"], "now"), "startsAt"),
    ],
    ids=[
        "pd-no-summary",
        "pd-severity",
        "pd-timestamp",
        "pd-dedup-key-length",
        "pd-custom-details",
        "pd-link-href",
        "slack-empty-text",
        "slack-header-length",
        "slack-block-type",
        "slack-too-many-fields",
        "webhook-version",
        "webhook-time",
        "webhook-extra-key",
        "webhook-resolved-without-time",
        "am-label-name",
        "am-time",
    ],
)
def test_validators_catch_problems(validator: Any, body: Any, problem: str) -> None:
    problems = validator(body)
    assert any(problem in p for p in problems), problems


def test_validators_accept_every_event() -> None:
    samples = [notification(e) for e in ("firing", "resolved", "acknowledged", "flapping", "test")]
    # As `monitor notify-test` makes it: nothing measured, no threshold, no runbook.
    samples.append(notification("test", value=None, threshold=None, runbook=None, metric="test"))
    for n in samples:
        assert pagerduty_problems(build_event(n, "key")) == []
        assert slack_problems(build_message(n)) == []
        assert webhook_problems(build_body(n)) == []
        assert alertmanager_problems(build_alerts(n)) == []


def test_no_resolve_payload_reads_like_a_breach() -> None:
    """A resolve carries the recovered value: `up 1 < 1` would page someone for a recovery."""
    resolved = notification("resolved")
    wording = "backend-api: up recovered (1, threshold 1) after 4m 12s"
    payloads = {
        "pagerduty": build_event(resolved, "key"),
        "slack": build_message(resolved),
        "webhook": build_body(resolved),
        "alertmanager": build_alerts(resolved),
    }
    assert payloads["pagerduty"]["payload"]["summary"] == wording
    assert wording in payloads["slack"]["text"]
    assert payloads["webhook"]["summary"] == wording
    assert payloads["alertmanager"][0]["annotations"]["summary"] == wording
    for name, payload in payloads.items():
        assert "1 < 1" not in str(payload) and "1 &lt; 1" not in str(payload), name
