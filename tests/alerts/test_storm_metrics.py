"""monitor_storm_active and monitor_alerts_suppressed{reason}, computed when scraped."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from alerts.model import Storm, Suppression
from monitor.config import parse_config
from monitor.daemon import Daemon
from monitor.evaluation import CheckEvaluator
from tests.alerts.harness import down
from tests.alerts.test_storm import NAMES, NIGHT, POLICY, _checks


async def test_storm_gauges_follow_the_pipeline() -> None:
    config = parse_config('[monitor]\nstate = "memory"\n' + POLICY + _checks(), {})
    registry = CollectorRegistry()
    daemon = Daemon(config, registry=registry)
    try:
        assert registry.get_sample_value("monitor_storm_active") == 0
        assert registry.get_sample_value("monitor_alerts_suppressed", {"reason": "storm"}) == 0
        now = NIGHT.timestamp()
        for name in NAMES:  # one failed run each: pending, and already a storm
            evaluator = CheckEvaluator(name, config.rows_for(name))
            result = down()
            evaluator.observe(result, now)
            await daemon.alerts.observe(name, evaluator.evaluations(), result.reason, now)
        assert isinstance(daemon.alerts.storm, Storm)
        assert registry.get_sample_value("monitor_storm_active") == 1
        assert registry.get_sample_value("monitor_alerts_suppressed", {"reason": "storm"}) == len(NAMES)
        assert registry.get_sample_value("monitor_alerts_suppressed", {"reason": "uplink"}) == 0
        assert {str(s) for s in Suppression} <= set(daemon.alerts.suppressed_counts())
    finally:
        await daemon._close()  # never started: what __init__ opened (its HTTP session)
