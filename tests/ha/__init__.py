"""HA pair and shards: `monitor run` replicas over real PostgreSQL, with faults injected."""
