"""Which checks a replica runs: a check's shard is Prometheus' `hashmod` of its name."""

from __future__ import annotations

import hashlib

from monitor.config import Config


def shard_of(name: str, shards: int) -> int:
    """The shard of check `name` among `shards`: the low 8 bytes of the name's MD5, big-endian,
    modulo `shards`, exactly as Prometheus' `hashmod` relabeling, so a Prometheus can be sharded
    the same way."""
    return int.from_bytes(hashlib.md5(name.encode()).digest()[8:], "big") % shards


def members(config: Config) -> set[str]:
    """The names of the checks this replica runs (`[cluster] shard` of `shards`)."""
    cluster = config.cluster
    if cluster.shards == 1:
        return {check.name for check in config.checks}
    return {check.name for check in config.checks if shard_of(check.name, cluster.shards) == cluster.shard}
