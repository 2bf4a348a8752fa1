"""The storm stages alone: storm_begins, storm_over, plan_storm, and suppress learning uplink/storm."""

from __future__ import annotations

import pytest

from alerts.config import RouteConfig, StormConfig
from alerts.model import Route, Suppression
from alerts.stages import plan_storm, storm_begins, storm_over, suppress
from tests.alerts.test_stages import T0, FakeWorld, make_alert

GUARD = StormConfig(checks=10, window=60.0)


@pytest.mark.parametrize(
    ("starts", "expected"),
    [
        ([T0] * 10, False),
        ([T0] * 11, True),
        ([T0 - 61] * 5 + [T0] * 10, False),  # the older five are out of the window
        ([T0 - 59] * 5 + [T0] * 6, True),
    ],
    ids=["ten-is-not-more-than-ten", "eleven", "window-edge-out", "window-edge-in"],
)
def test_storm_begins_when_more_than_checks_up_alerts_began_within_window(
    starts: list[float], expected: bool
) -> None:
    assert storm_begins(starts, T0, GUARD) is expected


def test_storm_guard_off_never_begins_and_ends_a_storm() -> None:
    assert storm_begins([T0] * 1000, T0, None) is False
    assert storm_over(1000, None) is True


def test_storm_over_when_fewer_than_checks_still_down() -> None:
    assert storm_over(10, GUARD) is False
    assert storm_over(9, GUARD) is True


def _route(notify: list[str], repeat: float | None = None) -> Route:
    return Route.of(RouteConfig.model_validate({"notify": notify, "repeat": repeat}))


def test_plan_storm_first_then_repeats_per_route_repeat() -> None:
    routes = [_route(["oncall", "chat"], repeat=1800.0), _route(["chat", "mail"])]
    assert plan_storm(routes, {}, T0) == (["oncall", "chat", "mail"], [])
    told = dict.fromkeys(["oncall", "chat", "mail"], T0)
    assert plan_storm(routes, told, T0 + 1799) == ([], [])
    # chat's shortest repeat is its first route's; mail's route has none: told once.
    assert plan_storm(routes, told, T0 + 1800) == ([], ["oncall", "chat"])


@pytest.mark.parametrize(
    ("world", "sticky", "notified", "expected"),
    [
        (FakeWorld(storm=True), None, None, Suppression.STORM),
        (FakeWorld(storm=True), None, "critical", None),  # notified before the storm began
        (FakeWorld(blinded={"backend-api"}), None, None, Suppression.UPLINK),
        (FakeWorld(blinded={"backend-api"}, storm=True), Suppression.STORM, None, Suppression.UPLINK),
        (FakeWorld(blinded={"backend-api"}), Suppression.DOWN, None, Suppression.DOWN),
        (FakeWorld(), Suppression.STORM, None, Suppression.STORM),  # sticky after the storm
        (
            FakeWorld(storm=True, maintenance={"backend-api": (T0, T0 + 60)}),
            None,
            None,
            Suppression.MAINTENANCE,
        ),
    ],
    ids=[
        "storm",
        "notified-before",
        "uplink",
        "uplink-over-storm",
        "down-kept",
        "storm-sticky",
        "maintenance-first",
    ],
)
def test_suppress_learns_uplink_and_storm(
    world: FakeWorld, sticky: Suppression | None, notified: str | None, expected: Suppression | None
) -> None:
    alert = make_alert()
    alert.sticky, alert.notified_severity = sticky, notified
    assert suppress(alert, T0, world) is expected
