"""monitor: runs a runbook's health checks and threshold table by itself."""

__version__ = "0.1.0"
