"""Benchmark harness of the monitor daemon (issue 5): `bench/run`, see README "Performance"."""
