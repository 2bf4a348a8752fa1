"""Which checks a replica runs: a check's shard is Prometheus' `hashmod` of its name."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from alerts.model import STORM_KIND
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


def ownership(config: Config) -> Callable[[dict[str, Any]], bool] | None:
    """With shards: whether a stored alert document or outbox payload is this shard's to act on
    (its check is one of `members`, or a check no longer configured whose name hashes to this
    shard; a storm is its shard's own). None: one shard owns everything."""
    cluster = config.cluster
    if cluster.shards == 1:
        return None
    mine, shard = members(config), cluster.shard
    configured = {check.name for check in config.checks}

    def owns(doc: dict[str, Any]) -> bool:
        if doc.get("kind") == STORM_KIND:  # a storm's document
            return bool(doc.get("shard") == shard)
        if doc.get("check_type") == "storm":  # a storm's notification: its id names its shard
            return str(doc.get("alert_id", "")).startswith(f"storm-{shard}-")
        check = doc.get("check")
        if check in configured:
            return check in mine
        # A removed check's leftovers (its resolve, a page not yet delivered) go to the shard its
        # name hashes to, as they would in one shard: else no shard would ever send them.
        return isinstance(check, str) and shard_of(check, cluster.shards) == shard

    return owns
