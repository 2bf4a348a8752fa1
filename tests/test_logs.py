"""Logging: JSON lines with the context fields, written off the event loop's thread."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator

import pytest

from monitor import logs


class _Stdout(io.StringIO):
    """Records which thread wrote each piece."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[str] = set()

    def write(self, text: str) -> int:
        self.writers.add(threading.current_thread().name)
        return super().write(text)


@pytest.fixture
def stdout() -> Iterator[_Stdout]:
    out = _Stdout()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield out
    logs._flush()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_the_context_fields_and_are_written_by_another_thread(stdout: _Stdout) -> None:
    logs.setup_logging("json", "info", stdout)
    log = logging.getLogger("monitor.test")
    log.warning("check down", extra={"check": "backend-api", "reason": "status 503"})
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.exception("check raised", extra={"check": "db"})
    log.debug("not at info level")
    logs._flush()  # as at exit: what is queued is written

    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [(x["level"], x["msg"], x["check"]) for x in lines] == [
        ("warning", "check down", "backend-api"),
        ("error", "check raised", "db"),
    ]
    assert lines[0]["reason"] == "status 503" and lines[0]["logger"] == "monitor.test"
    assert "ZeroDivisionError: division by zero" in lines[1]["exc"]
    assert stdout.writers and threading.current_thread().name not in stdout.writers


def test_text_format_and_a_second_setup_replaces_the_first(stdout: _Stdout) -> None:
    logs.setup_logging("json", "info", stdout)
    logs.setup_logging("text", "warning", stdout)
    logging.getLogger("alerts").info("hidden")
    logging.getLogger("alerts").warning("alert firing", extra={"alert": "f24a9de1"})
    logs._flush()
    (line,) = stdout.getvalue().splitlines()
    assert line.endswith("WARNING alerts: alert firing alert=f24a9de1")
