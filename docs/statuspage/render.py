"""Draw the README's status page picture from a real daemon: 30 checks in 3 teams against loopback
targets (two failing, one of them silenced, one slow enough for a warning row), its page taken by
headless Chromium.

    .venv/bin/python docs/statuspage/render.py                 # writes docs/status-page.png
    .venv/bin/python docs/statuspage/render.py --dark out.png  # the dark scheme

Needs chromium and chromium-driver (as the browser tests do). The run history of a day is made up
here, the same every time: the daemon has only run for a few seconds when the picture is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import socket
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import ClientSession, web

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from anywhere without installing

from prometheus_client import CollectorRegistry  # noqa: E402

from monitor.config import parse_config  # noqa: E402
from monitor.daemon import Daemon  # noqa: E402

TOKEN = "render-token"
SLOW_MS = 140  # /slow answers this late: fraud-scorer's latency_ms row warns above 100 ms

# (name, kind, team): kind is the loopback target ("ok", "slow", "fail" over HTTP; "tcp",
# "refused" over TCP; "heartbeat").
CHECKS = [
    ("checkout-api", "ok", "payments"),
    ("payments-api", "ok", "payments"),
    ("refunds-api", "fail", "payments"),
    ("fraud-scorer", "slow", "payments"),
    ("ledger-db", "tcp", "payments"),
    ("card-vault", "tcp", "payments"),
    ("invoices-api", "ok", "payments"),
    ("payouts-worker", "heartbeat", "payments"),
    ("webhooks-out", "ok", "payments"),
    ("currency-rates", "ok", "payments"),
    ("search-api", "ok", "search"),
    ("indexer", "refused", "search"),
    ("query-cache", "tcp", "search"),
    ("suggest-api", "ok", "search"),
    ("ranking-model", "ok", "search"),
    ("crawler", "heartbeat", "search"),
    ("es-node-1", "tcp", "search"),
    ("es-node-2", "tcp", "search"),
    ("es-node-3", "tcp", "search"),
    ("synonyms-api", "ok", "search"),
    ("gateway", "ok", "platform"),
    ("auth-api", "ok", "platform"),
    ("dns-resolver", "tcp", "platform"),
    ("object-store", "ok", "platform"),
    ("mail-relay", "tcp", "platform"),
    ("queue-broker", "tcp", "platform"),
    ("metrics-db", "tcp", "platform"),
    ("secrets-api", "ok", "platform"),
    ("cdn-origin", "ok", "platform"),
    ("nightly-backup", "heartbeat", "platform"),
]
FAILING = {name for name, kind, _ in CHECKS if kind in ("fail", "refused")}


class PictureDaemon(Daemon):
    """The daemon, with a day of run history made up per check (seeded by its name)."""

    def uptime_pct(self, name: str) -> dict[str, float | None]:
        rng = random.Random(name)
        if name in FAILING:
            return {"24h": 96.1 + rng.random(), "7d": 99.2 + rng.random() / 2, "30d": 99.7 + rng.random() / 5}
        spread = {"24h": 0.05, "7d": 0.2, "30d": 0.4}
        return {span: 100.0 - rng.random() * scale for span, scale in spread.items()}

    def latency_hours(self, name: str) -> list[float | None]:
        rng = random.Random(name)
        kind = next(k for n, k, _ in CHECKS if n == name)
        typical = {"tcp": 1.5, "refused": 1.2, "heartbeat": 0.4, "slow": SLOW_MS}
        base = typical.get(kind, 18 + rng.random() * 40)
        phase = rng.random() * 24
        hours: list[float | None] = [
            base * (1 + 0.3 * math.sin((h + phase) / 3.5) + rng.random() * 0.25) for h in range(24)
        ]
        if name in FAILING:  # it slowed down before it failed; no successful runs since
            hours[-4:] = [base * 2.5, base * 4, None, None]
        return hours


def config_text(http: int, tcp: int, refused: int) -> str:
    now = datetime.now(UTC)
    parts = [
        textwrap.dedent(
            f"""\
            [monitor]
            listen = "127.0.0.1:0"
            state = "memory"
            api_token = "{TOKEN}"

            [status_page]
            title = "Acme production"
            group_by = "team"

            [[maintenance]]
            name = "ledger-db failover drill"
            checks = ["ledger-*", "card-vault"]
            start = "{(now + timedelta(hours=2)).isoformat(timespec="seconds")}"
            end = "{(now + timedelta(hours=3)).isoformat(timespec="seconds")}"

            [[maintenance]]
            name = "nightly index rebuild"
            checks = ["es-node-*"]
            cron = "30 2 * * *"
            duration = "45m"
            """
        )
    ]
    for name, kind, team in CHECKS:
        target = {
            "ok": f'type = "http"\nurl = "http://127.0.0.1:{http}/ok"',
            "fail": f'type = "http"\nurl = "http://127.0.0.1:{http}/fail"',
            "slow": f'type = "http"\nurl = "http://127.0.0.1:{http}/slow"\n'
            "thresholds = { latency_ms = { warning = 100, critical = 1000 } }",
            "tcp": f'type = "tcp"\nhost = "127.0.0.1"\nport = {tcp}',
            "refused": f'type = "tcp"\nhost = "127.0.0.1"\nport = {refused}',
            "heartbeat": f'type = "heartbeat"\nperiod = "1d"\ntoken = "{TOKEN}"',
        }[kind]
        parts.append(
            f'[[checks]]\nname = "{name}"\n{target}\ninterval = "1s"\ntimeout = "0.5s"\n'
            f'labels = {{ team = "{team}" }}\n'
        )
    return "\n".join(parts)


async def targets() -> tuple[web.AppRunner, asyncio.Server, int, int]:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_MS / 1000)
        return web.json_response({"status": "ok"})

    async def fail(_: web.Request) -> web.Response:
        return web.json_response({"status": "down"}, status=503)

    app = web.Application()
    app.router.add_get("/ok", ok)
    app.router.add_get("/slow", slow)
    app.router.add_get("/fail", fail)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    http = runner.addresses[0][1]

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    tcp = await asyncio.start_server(accept, "127.0.0.1", 0)
    return runner, tcp, http, tcp.sockets[0].getsockname()[1]


async def settle(daemon: Daemon, base: str) -> None:
    """Heartbeats pinged, the indexer silenced, then wait until both failing checks fire and the
    slow one warns."""
    async with ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        for name, kind, _ in CHECKS:
            if kind == "heartbeat":
                async with session.post(f"{base}/api/v1/heartbeats/{name}") as resp:
                    assert resp.status == 200, await resp.text()
        end = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
        silence = {"checks": ["indexer"], "end": end, "comment": "reindex, see #ops"}
        async with session.post(f"{base}/api/v1/silences", json=silence) as resp:
            assert resp.status == 201, await resp.text()
        for _ in range(200):
            async with session.get(f"{base}/api/v1/alerts") as resp:
                alerts = (await resp.json())["alerts"]
            fired = {a["check"] for a in alerts if a["state"] == "firing"}
            if fired >= FAILING | {"fraud-scorer"}:
                return
            await asyncio.sleep(0.1)
        raise SystemExit(f"the failing checks never fired: {sorted(fired)}")


def screenshot(url: str, out: Path, dark: bool) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(flag)
    options.add_argument("--window-size=1360,900")
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        if dark:
            scheme = {"name": "prefers-color-scheme", "value": "dark"}
            driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": [scheme]})
        driver.get(url)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1360, height + 120)  # the window's frame is counted too
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


async def main(out: Path, dark: bool) -> None:
    runner, tcp, http, tcp_port = await targets()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        config = parse_config(config_text(http, tcp_port, closed.getsockname()[1]), {})
        daemon = PictureDaemon(config, registry=CollectorRegistry())
        await daemon.start()
        try:
            base = f"http://127.0.0.1:{daemon.bound_port}"
            await settle(daemon, base)
            await asyncio.to_thread(screenshot, base + "/", out, dark)
        finally:
            await daemon.stop()
    tcp.close()
    await runner.cleanup()
    print(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=HERE.parent / "status-page.png")
    parser.add_argument("--dark", action="store_true", help="the dark colour scheme")
    args = parser.parse_args()
    asyncio.run(main(args.out, args.dark))
