"""`[cluster]` and `MONITOR_SHARD`: what a replica is told about its pair and its shard."""

from __future__ import annotations

import pytest

from monitor.config import ConfigError, parse_config

PG = 'state = "postgresql://monitor:pw@db.example.com/monitor"'


def config_text(cluster: str = "", state: str = PG) -> str:
    return f"""
[monitor]
{state}

[cluster]
{cluster}

[[checks]]
name = "web"
type = "http"
url = "http://127.0.0.1:8080/health"
"""


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, env or {})
    return info.value.errors


def test_defaults_are_one_single_replica() -> None:
    cluster = parse_config(config_text(state=""), {}).cluster
    assert (cluster.mode, cluster.failover, cluster.shards, cluster.shard) == ("single", 15.0, 1, 0)


def test_file_values_and_failover_in_seconds() -> None:
    cluster = parse_config(config_text('mode = "ha"\nfailover = "1m"\nshards = 3\nshard = 2'), {}).cluster
    assert (cluster.mode, cluster.failover, cluster.shards, cluster.shard) == ("ha", 60.0, 3, 2)


def test_monitor_shard_wins_over_the_file() -> None:
    cluster = parse_config(config_text("shards = 2\nshard = 0"), {"MONITOR_SHARD": "2/3"}).cluster
    assert (cluster.shards, cluster.shard) == (3, 2)


def test_monitor_shard_without_a_cluster_table() -> None:
    text = config_text().replace("[cluster]\n", "")
    cluster = parse_config(text, {"MONITOR_SHARD": "1/2"}).cluster
    assert (cluster.mode, cluster.shards, cluster.shard) == ("single", 2, 1)


@pytest.mark.parametrize("value", ["2", "2/2", "3/2", "a/b", "-1/2", "1/0", "", "1/2/3", "0.5/2"])
def test_bad_monitor_shard_is_named(value: str) -> None:
    assert errors_of(config_text(), {"MONITOR_SHARD": value}) == [
        f"MONITOR_SHARD: expected i/N with 0 <= i < N (e.g. 0/2), got {value!r}"
    ]


@pytest.mark.parametrize(
    ("cluster", "error"),
    [
        ("shards = 2\nshard = 2", "cluster: shard 2 must be below shards (2)"),
        ("shards = 0", "cluster.shards: Input should be greater than or equal to 1"),
        ('mode = "pair"', "cluster.mode: Input should be 'single' or 'ha'"),
        ('failover = "2s"', "cluster.failover: 2s is too short: at least 3s"),
        ('failover = "soon"', "cluster.failover: "),
    ],
    ids=["shard-out-of-range", "no-shards", "unknown-mode", "failover-too-short", "failover-not-a-duration"],
)
def test_bad_cluster_values_name_their_key(cluster: str, error: str) -> None:
    [got] = errors_of(config_text(cluster))
    assert got.startswith(error), got


@pytest.mark.parametrize(
    ("cluster", "state", "env", "what"),
    [
        ('mode = "ha"', "", {}, 'mode = "ha"'),
        ('mode = "ha"', 'state = "memory"', {}, 'mode = "ha"'),
        ("shards = 2", 'state = "sqlite:///tmp/state.db"', {}, "shards = 2"),
        ("", "", {"MONITOR_SHARD": "0/2"}, "shards = 2"),
    ],
    ids=["ha-default-sqlite", "ha-memory", "shards-sqlite", "env-shards-sqlite"],
)
def test_replicas_need_a_postgresql_state(cluster: str, state: str, env: dict[str, str], what: str) -> None:
    assert errors_of(config_text(cluster, state), env) == [
        f'monitor.state: [cluster] {what} needs a shared state store: state = "postgresql://..."'
    ]


def test_postgres_scheme_alias_is_shared_too() -> None:
    text = config_text('mode = "ha"', 'state = "postgres://monitor@db.example.com/monitor"')
    assert parse_config(text, {}).cluster.mode == "ha"
