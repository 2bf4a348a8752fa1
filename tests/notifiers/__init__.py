"""Notifier tests: payloads, status -> outcome tables, real loopback receivers."""
