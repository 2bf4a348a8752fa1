"""Libraries that only some configs need are imported only by a daemon whose config uses them.

The type registry (monitor.plugins) imports a check or notifier type's module, with the libraries
it imports at its top, when a config names the type. Each case runs in a fresh interpreter, since
this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

# What a config without a postgres check or store, an email notifier, a websocket check or a cron
# window must not load; cryptography is loaded by the first certificate an https check reads.
OPTIONAL = ("asyncpg", "aiosmtplib", "croniter", "websockets", "aiosqlite", "cryptography")

# Imports the daemon, validates the config, then builds the daemon from it (checks, notifiers,
# alerting, the store object) and stops it unstarted (opening the store is I/O and left out).
# Prints the top-level packages, and the check and notifier modules, loaded after each step.
_PROBE = textwrap.dedent(
    """
    import asyncio, json, sys

    from prometheus_client import CollectorRegistry

    from monitor.config import load_config
    from monitor.daemon import Daemon

    def loaded():
        types = {n for n in sys.modules if n.startswith(("checks.", "alerts.notifiers."))}
        return sorted({name.partition(".")[0] for name in sys.modules} | types)

    steps = {"import": loaded()}
    config = load_config(sys.argv[1])
    steps["config"] = loaded()

    async def build():
        await Daemon(config, registry=CollectorRegistry()).stop()

    asyncio.run(build())
    steps["built"] = loaded()
    print(json.dumps(steps))
    """
)


def probe(tmp_path: Path, toml: str) -> dict[str, set[str]]:
    config = tmp_path / "monitor.toml"
    config.write_text(textwrap.dedent(toml))
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {step: set(modules) for step, modules in json.loads(result.stdout).items()}


SMALL = """
    [monitor]
    state = "memory"

    [[checks]]
    name = "web"
    type = "http"
    url = "https://127.0.0.1:8443/health"

    [[checks]]
    name = "db-port"
    type = "tcp"
    host = "127.0.0.1"
    port = 5432

    [notifiers.team]
    type = "slack"
    webhook_url = "https://hooks.slack.com/services/T000/B000/XXXX"

    [[routes]]
    notify = ["team"]

    [[maintenance]]                 # a one-off window needs no cron parser
    name = "migration"
    start = 2030-01-01T02:00:00
    end = 2030-01-01T03:00:00
"""

FULL = """
    [monitor]
    state = "postgresql://monitor@127.0.0.1:1/monitor"

    [[checks]]
    name = "database"
    type = "postgres"
    dsn = "postgresql://monitor@127.0.0.1:1/app"

    [[checks]]
    name = "collab-ws"
    type = "websocket"
    url = "ws://127.0.0.1:1/"

    [notifiers.mail]
    type = "email"
    host = "127.0.0.1"
    from = "monitor@example.com"
    to = ["oncall@example.com"]

    [[routes]]
    notify = ["mail"]

    [[maintenance]]
    name = "nightly"
    cron = "0 2 * * *"
    duration = "30m"
"""


def test_small_config_loads_no_optional_library(tmp_path: Path) -> None:
    steps = probe(tmp_path, SMALL)
    for step, modules in steps.items():
        assert modules & set(OPTIONAL) == set(), step
    assert {"aiohttp", "pydantic"} <= steps["built"]  # the probe did run the daemon's code


def test_only_the_types_a_config_names_are_imported(tmp_path: Path) -> None:
    steps = probe(tmp_path, SMALL)
    types = {n for n in steps["built"] if n.startswith(("checks.", "alerts.notifiers."))}
    # checks.base and alerts.notifiers.base: the interfaces; the rest: the types SMALL names and
    # the modules they are made of (the http client, TLS contexts).
    assert types == {
        "checks.base",
        "checks.http",
        "checks.httpclient",
        "checks.httpexchange",
        "checks.tcp",
        "checks.netopts",
        "alerts.notifiers.base",
        "alerts.notifiers.slack",
    }


def test_each_library_is_loaded_by_the_config_that_uses_it(tmp_path: Path) -> None:
    steps = probe(tmp_path, FULL)
    assert steps["import"] & set(OPTIONAL) == set()
    # Validating a table loads its type's module, and with it the type's library, so the first
    # run does not pay for the import; validating a cron expression needs croniter.
    assert steps["config"] & set(OPTIONAL) == {"asyncpg", "websockets", "aiosmtplib", "croniter"}
    # The PostgreSQL store imports asyncpg when it opens; the postgres check has loaded it already.
    assert steps["built"] & set(OPTIONAL) == {"asyncpg", "websockets", "aiosmtplib", "croniter"}
    assert "aiosqlite" not in steps["built"]  # the state is in PostgreSQL
