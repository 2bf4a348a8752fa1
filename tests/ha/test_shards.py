"""Sharding: a check's shard is Prometheus' hashmod of its name, and a replica runs only its own.

The golden table `data/hashmod.json` was written by Prometheus itself (2.42, `hashmod`
relabeling of a `check` label, read back from /api/v1/targets): `python -m tests.ha.test_shards`
writes it again; `test_golden_table_is_prometheus_hashmod` checks it against the binary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from monitor.config import parse_config
from monitor.sharding import members, shard_of
from tests.fakes.prometheus import PrometheusServer
from tests.ha.harness import HaLab

GOLDEN = Path(__file__).parent / "data" / "hashmod.json"
MODULI = (2, 3, 7)
NAMES = [
    "backend-api", "collab-tcp", "collab-ws", "database", "frontend", "supabase-memory",
    "supabase-disk", "nightly-backup", "fly-machines", "fly-edge-5xx", "gateway", "public-dns",
    "storage-s3", "auth", "search", "billing-webhook", "queue-consumer", "a", "b.c", "0",
    "check.with.dots", "under_score", "api-v2.eu-west-1", "x" * 200,
]  # fmt: skip


def golden() -> dict[int, dict[str, int]]:
    table = json.loads(GOLDEN.read_text())["shards"]
    return {int(n): shards for n, shards in table.items()}


def prometheus_hashmod(names: list[str], moduli: tuple[int, ...]) -> dict[int, dict[str, int]]:
    """What Prometheus' `hashmod` gives each name, one scrape job per modulus."""
    jobs = [
        {
            "job_name": f"hashmod-{n}",
            "static_configs": [
                {"targets": [f"127.0.0.1:{20000 + i}"], "labels": {"check": name}}
                for i, name in enumerate(names)
            ],
            "relabel_configs": [
                {"source_labels": ["check"], "modulus": n, "target_label": "shard", "action": "hashmod"}
            ],
        }
        for n in moduli
    ]
    config = {"global": {"scrape_interval": "1h", "scrape_timeout": "1s"}, "scrape_configs": jobs}
    with PrometheusServer(config) as prometheus:
        deadline = time.monotonic() + 30
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:  # targets appear after the first discovery sync
            targets = prometheus.api("targets", state="active")["activeTargets"]
            if len(targets) == len(names) * len(moduli):
                break
            time.sleep(0.2)
    table: dict[int, dict[str, int]] = {n: {} for n in moduli}
    for target in targets:
        n = int(target["scrapePool"].removeprefix("hashmod-"))
        table[n][target["labels"]["check"]] = int(target["labels"]["shard"])
    return table


def test_shard_of_matches_the_golden_table() -> None:
    table = golden()
    assert sorted(table) == list(MODULI)
    for n, shards in table.items():
        assert set(shards) == set(NAMES)
        assert {name: shard_of(name, n) for name in NAMES} == shards, f"modulus {n}"
    assert len(set(table[7].values())) > 3  # the table spreads: not every name on one shard


def test_golden_table_is_prometheus_hashmod() -> None:
    assert prometheus_hashmod(NAMES, MODULI) == golden()


def config_with(names: list[str], shards: int, shard: int) -> str:
    checks = "".join(
        f'\n[[checks]]\nname = "{name}"\ntype = "tcp"\nhost = "127.0.0.1"\nport = 9\n' for name in names
    )
    cluster = f"[cluster]\nshards = {shards}\nshard = {shard}\n"
    return f'[monitor]\nstate = "postgresql://m@db.example.com/m"\n{cluster}{checks}'


def test_members_partition_the_checks_by_the_table() -> None:
    table = golden()
    for n in MODULI:
        parts = [members(parse_config(config_with(NAMES, n, i), {})) for i in range(n)]
        assert [{name for name in NAMES if table[n][name] == i} for i in range(n)] == parts
    assert members(parse_config(config_with(NAMES, 1, 0), {})) == set(NAMES)


async def test_two_shards_each_run_only_their_checks(ha_lab: HaLab) -> None:
    """One machine, one replica per core: `MONITOR_SHARD=0/2` and `1/2`, `mode = "single"`."""
    checks = NAMES[:6]
    table = golden()[2]
    assert set(table[c] for c in checks) == {0, 1}  # both shards have work
    replicas = await ha_lab.start(2, shards=2, shard_env=True, mode="single", checks=checks)
    for replica in replicas:
        listed = {c["name"] for c in (await replica.get_json("/api/v1/checks"))["checks"]}
        assert listed == {c for c in checks if table[c] == replica.shard}, replica
    # Every check has run (interval 1s) on exactly the replica of its shard.
    await ha_lab.scraper.wait(lambda _: all(ha_lab.target.runners(c) for c in checks), 15, "every check run")
    assert {c: ha_lab.target.runners(c) for c in checks} == {c: {f"r{table[c]}"} for c in checks}
    await ha_lab.stop_all()
    assert ha_lab.exit_codes == {"r0": 0, "r1": 0}


if __name__ == "__main__":
    table = prometheus_hashmod(NAMES, MODULI)
    source = "prometheus hashmod relabeling, read back from /api/v1/targets (tests/ha/test_shards.py)"
    text = json.dumps({"source": source, "shards": table}, indent=1, sort_keys=True)
    GOLDEN.write_text(text + "\n")
