"""The `monitor` command: run, validate, once, notify-test, schema, healthcheck. The only place
that prints or exits."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

try:
    import uvloop
except ImportError:  # not built for this platform (Windows)
    uvloop = None

from monitor import __version__

if TYPE_CHECKING:
    from monitor.config import Config

# The rest of the package is imported by the commands that use it: `monitor healthcheck` runs
# every few seconds in a container, and needs none of it (no pydantic models, no aiohttp).

log = logging.getLogger("monitor.cli")

EXIT_CONFIG_INVALID = 2
EXIT_UNKNOWN = 3


T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Runs `main` on uvloop where it is installed (Linux, macOS), else on asyncio's own loop.

    Why uvloop: the loop's own share of a check run is the largest (README: Performance).
    """
    if uvloop is None:
        return asyncio.run(main)
    return uvloop.run(main)


def _default_config() -> str:
    return os.environ.get("MONITOR_CONFIG") or "monitor.toml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monitor", description=__doc__)
    parser.add_argument("--version", action="version", version=f"monitor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "-c",
            "--config",
            default=None,
            help="config file (default: $MONITOR_CONFIG, then ./monitor.toml)",
        )
        return p

    run = with_config(sub.add_parser("run", help="run the daemon until SIGTERM/SIGINT; SIGHUP reloads"))
    run.add_argument("--watch", action="store_true", help="also reload when the config file changes")
    with_config(sub.add_parser("validate", help="validate the config, print every error with its key path"))
    once = with_config(
        sub.add_parser("once", help="run every check once; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN")
    )
    once.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    once.add_argument("--check", action="append", metavar="NAME", help="run only this check (repeatable)")
    test = with_config(sub.add_parser("notify-test", help="send a test notification through one notifier"))
    test.add_argument("notifier", metavar="NOTIFIER", help="the notifier's name in [notifiers.NAME]")
    sub.add_parser("schema", help="print the JSON Schema of the config file")
    with_config(sub.add_parser("healthcheck", help="GET /healthz on monitor.listen; exit 0 healthy, 1 not"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = getattr(args, "config", None) or _default_config()
    if args.command == "schema":
        from monitor.config import config_schema

        print(json.dumps(config_schema(), indent=2))
        return 0
    if args.command == "validate":
        return _validate(path)
    if args.command == "once":
        return _once(path, args.json, args.check)
    if args.command == "notify-test":
        return _notify_test(path, args.notifier)
    if args.command == "healthcheck":
        return _healthcheck(path)
    return _run(path, args.watch)


def _notify_test(path: str, name: str) -> int:
    from monitor.config import ConfigError, load_config
    from monitor.logs import setup_logging
    from monitor.once import notify_test

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration:")
        for line in exc.errors:
            print(f"  {line}")
        return 1
    if name not in config.notifiers:
        known = ", ".join(sorted(config.notifiers)) or "none configured"
        print(f'unknown notifier "{name}" (known: {known})')
        return 1
    setup_logging("text", "error")
    delivery = run_async(notify_test(config, name))
    if delivery.outcome == "sent":
        print(f"{name}: test notification delivered")
        return 0
    print(f"{name}: test notification failed: {getattr(delivery, 'reason', delivery.outcome)}")
    return 1


def _healthcheck(path: str) -> int:
    """For the image's HEALTHCHECK: 0 when the daemon of this config answers /healthz, else 1."""
    from monitor.healthcheck import ListenError, listen_address, probe, url_of

    try:
        host, port = listen_address(path)
    except ListenError as exc:
        print(f"unhealthy: {exc}")
        return 1
    reason = probe(host, port)
    if reason is None:
        print(f"healthy: {url_of(host, port)}")
        return 0
    print(f"unhealthy: {reason}")
    return 1


def _validate(path: str) -> int:
    from monitor.config import ConfigError, load_config

    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line)
        return EXIT_CONFIG_INVALID
    print(
        f"{path}: valid ({len(config.checks)} checks, {len(config.notifiers)} notifiers, "
        f"{len(config.routes)} routes)"
    )
    return 0


def _once(path: str, as_json: bool, names: list[str] | None) -> int:
    from monitor.config import ConfigError, load_config
    from monitor.logs import setup_logging
    from monitor.once import exit_code, nagios_output, nagios_unknown, run_once

    errors: list[str] = []
    what = "invalid configuration"
    config: Config | None = None
    try:
        config = load_config(path)
    except ConfigError as exc:
        errors = exc.errors
    if config is not None and names:
        known = {c.name for c in config.checks}
        errors, what = [f'--check: unknown check "{n}"' for n in names if n not in known], ""
    if errors or config is None:
        unknown = {"status": "unknown", "errors": errors}
        print(json.dumps(unknown) if as_json else nagios_unknown(errors, what))
        return EXIT_UNKNOWN
    setup_logging("text", "error")  # a check's internal error is reported in its row, not as logs
    result = run_async(run_once(config, names))
    if as_json:
        print(json.dumps(result))
    else:  # a Nagios plugin's output: the status line, then the table as "long output"
        print(nagios_output(result, config.rows_for))
        print(_table(result))
    return exit_code(result["status"])


def _table(result: dict[str, Any]) -> str:
    from monitor.once import nagios_text

    rows = [("CHECK", "TYPE", "STATUS", "UP", "MS", "STATES", "REASON")]
    for c in result["checks"]:
        states = " ".join(f"{m}={s}" for m, s in c["states"].items() if s != "ok") or "-"
        ms = "-" if c["duration_ms"] is None else f"{c['duration_ms']:.1f}"
        rows.append(
            (
                c["name"],
                c["type"],
                c["status"].upper(),
                str(int(bool(c["up"]))),
                ms,
                states,
                nagios_text(c["reason"] or "-"),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1] for r in rows
    )


def _run(path: str, watch: bool = False) -> int:
    from monitor.config import ConfigError, load_config
    from monitor.logs import setup_logging

    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration, not starting:", file=sys.stderr)
        for line in exc.errors:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG_INVALID
    setup_logging(config.monitor.log_format, config.monitor.log_level)
    return run_async(_serve(config, path, watch))


async def _serve(config: Config, path: str, watch: bool) -> int:
    # Imported here, not at the top: `monitor healthcheck` runs every few seconds and needs neither.
    from monitor.daemon import serve
    from monitor.store import StoreError

    stop, reload = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload.set)
    try:
        await serve(config, path, stop, reload, watch)
    except StoreError as exc:  # raised only at start: the store is not usable as configured
        print(f"state: {exc}", file=sys.stderr)
        return EXIT_CONFIG_INVALID
    except OSError as exc:  # e.g. the listen port is taken
        log.error("cannot start", extra={"reason": str(exc)})
        return 1
    return 0
