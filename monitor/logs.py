"""Logging: one JSON object a line on stdout (or plain text), with check/alert/notifier fields."""

from __future__ import annotations

import atexit
import json
import logging
import queue
import sys
import time
from logging.handlers import QueueHandler, QueueListener
from typing import TextIO

FIELDS = ("check", "alert", "silence", "notifier", "attempt", "reason", "path", "errors", "checks")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in FIELDS:
            if key in record.__dict__:
                out[key] = record.__dict__[key]
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={record.__dict__[k]}" for k in FIELDS if k in record.__dict__)
        line = super().format(record)
        return f"{line} {extra}" if extra else line


class _Written(logging.Formatter):
    """The writer thread's formatter: the line was formatted where it was logged."""

    def format(self, record: logging.LogRecord) -> str:
        return record.getMessage()


_listener: QueueListener | None = None


def setup_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Lines are formatted where they are logged and written to stdout by a thread of their own:
    a slow reader of stdout (a full pipe to the container runtime) must not stall the event loop,
    and a mass outage logs tens of thousands of lines at once."""
    global _listener
    _flush()
    writer = logging.StreamHandler(stream or sys.stdout)
    writer.setFormatter(_Written())
    lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = QueueHandler(lines)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    _listener = QueueListener(lines, writer)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


@atexit.register
def _flush() -> None:
    """Writes whatever is queued and stops the writer (at exit, or before a new setup)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
