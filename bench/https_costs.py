"""Where an HTTPS check's CPU goes, and the http check's client against aiohttp's, on one core.

`python -m bench.https_costs` starts nginx with the `https` kind's TLS server (bench/tls.py) on
the helper cores and, in this process (pinned to the first core, uvloop), times N requests of
each kind, `--concurrency` at a time, by process CPU time:

- `check`: the http check's whole run (`run_check`: deadline, request, JSON expectation,
  certificate expiry), as the daemon runs it, without scheduling, evaluation or metrics;
- `own_client` / `aiohttp`: one HTTPS GET and its body through checks.httpclient, and through
  an aiohttp session with a fresh connection per request (force_close), the same verified context;
- `handshake_by_ip`: TCP connect + full verified TLS handshake + close, no name to resolve;
- `dns`: the loop's getaddrinfo of the URL's name (what every run does first);
- `cert_expiry`: reading notAfter of the peer certificate with cryptography (tls_days_left);
- `http_check`: the same check over plain HTTP, for what TLS adds;
- `streams_full` / `streams_resumed`: one GET over asyncio streams with a full handshake, and the
  same offering the previous connection's TLS session: what session resumption would save (the
  checks do not resume: this is a measurement only).

Every other request is a full handshake: no session is offered. Results: bench/results/https-costs.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import procfs
from bench.services import BENCH_DIR, start_nginx_https
from bench.tls import HOSTNAME, client_context, make_certificates


class _ResumingContext(ssl.SSLContext):
    """Offers the session of the connection before (a bench-only measurement of resumption)."""

    last: ssl.SSLSession | None = None

    def wrap_bio(
        self,
        incoming: Any,
        outgoing: Any,
        server_side: bool = False,
        server_hostname: Any = None,
        session: Any = None,
    ) -> ssl.SSLObject:  # type: ignore[override]
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session=self.last)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _timed(n: int, concurrency: int, one: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    """CPU µs and wall µs per call of `one`, `concurrency` calls in flight; a warm-up first."""
    for _ in range(min(50, n)):
        await one()
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    cpu0, t0 = _cpu_s(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = _cpu_s() - cpu0, time.perf_counter() - t0
    return {"cpu_us": round(cpu / n * 1e6, 1), "wall_us": round(wall / n * 1e6, 1), "n": n}


async def measure(
    https_url: str, http_url: str, ca_file: Path, n: int, concurrency: int, repeat: int
) -> dict[str, Any]:
    import aiohttp

    from checks.base import CheckDeps
    from checks.http import HttpCheck, HttpCheckConfig, _tls_days_left
    from checks.httpclient import PreparedRequest
    from monitor.runner import run_check
    from monitor.tls import TlsOptions

    loop = asyncio.get_running_loop()
    context = client_context(ca_file)
    connector = aiohttp.TCPConnector(force_close=True, limit=0, ssl=context)
    session = aiohttp.ClientSession(connector=connector, trust_env=False)
    deps = CheckDeps(http=session)

    def check(url: str) -> HttpCheck:
        config = {"name": "c", "type": "http", "url": url, "timeout": "5s"}
        if url.startswith("https:"):
            config["tls_ca"] = str(ca_file)
        config |= {"expect_status": [200], "expect_json": {"status": "ok"}}
        return HttpCheck(HttpCheckConfig.model_validate(config), deps)

    https_check, http_check = check(https_url), check(http_url)

    async def run_https_check() -> None:
        result = await run_check(https_check)
        assert result.up, result.reason

    async def run_http_check() -> None:
        result = await run_check(http_check)
        assert result.up, result.reason

    request = PreparedRequest(
        "GET", https_url, {}, tls=TlsOptions(ca=str(ca_file)), keep_body=True, max_body=1_000_000
    )

    async def own_client() -> None:
        response = await request.send()
        try:
            body = await response.read()
        finally:
            response.close()
        assert response.status == 200 and json.loads(body)["status"] == "ok"

    async def with_aiohttp() -> None:
        async with session.get(https_url) as response:
            body = await response.read()
        assert response.status == 200 and json.loads(body)["status"] == "ok"

    port = int(https_url.split(":")[2].split("/")[0])

    async def handshake_by_ip() -> None:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=context, server_hostname=HOSTNAME
        )
        transport.abort()

    async def dns() -> None:
        await loop.getaddrinfo(HOSTNAME, port, type=1)

    cert_der: list[bytes] = []

    async def grab_cert() -> None:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, "127.0.0.1", port, ssl=context, server_hostname=HOSTNAME
        )
        cert_der.append(transport.get_extra_info("ssl_object").getpeercert(binary_form=True))
        transport.abort()

    await grab_cert()

    async def cert_expiry() -> None:
        assert _tls_days_left(cert_der[0]) is not None

    resuming = _ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    resuming.load_verify_locations(cafile=str(ca_file))
    get = f"GET /health HTTP/1.1\r\nHost: {HOSTNAME}\r\nConnection: close\r\n\r\n".encode()

    async def over_streams(ssl_context: ssl.SSLContext, resume: bool) -> None:
        reader, writer = await asyncio.open_connection(HOSTNAME, port, ssl=ssl_context)
        writer.write(get)
        body = await reader.read()
        ssl_object = writer.get_extra_info("ssl_object")
        if resume:
            assert resuming.last is None or ssl_object.session_reused
            resuming.last = ssl_object.session
        writer.transport.abort()
        assert body.startswith(b"HTTP/1.1 200")

    async def streams_full() -> None:
        await over_streams(context, False)

    async def streams_resumed() -> None:
        await over_streams(resuming, True)

    kinds = (
        ("check", run_https_check, concurrency),
        ("own_client", own_client, concurrency),
        ("aiohttp", with_aiohttp, concurrency),
        ("handshake_by_ip", handshake_by_ip, concurrency),
        ("dns", dns, concurrency),
        ("cert_expiry", cert_expiry, 1),
        ("http_check", run_http_check, concurrency),
        ("streams_full", streams_full, concurrency),
        ("streams_resumed", streams_resumed, concurrency),
    )
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in kinds}
    try:
        # Rounds of every kind in turn: a neighbour's burst on the shared machine hits all kinds alike.
        for round_ in range(repeat):
            for name, one, conc in kinds:
                rounds[name].append(await _timed(n, conc, one))
                cpu = rounds[name][-1]["cpu_us"]
                print(
                    f"round {round_ + 1}: {name:<16} {cpu:8.1f} µs CPU per call", file=sys.stderr, flush=True
                )
    finally:
        await session.close()
    # The median round of each kind.
    return {name: sorted(got, key=lambda r: r["cpu_us"])[len(got) // 2] for name, got in rounds.items()}


def breakdown(costs: dict[str, Any]) -> dict[str, float]:
    """An HTTPS check's CPU by part: what the parts cost alone, and the rest (request, response,
    close over TLS, the check's own code)."""
    check = costs["check"]["cpu_us"]
    parts = {
        "tcp_connect_tls_handshake": costs["handshake_by_ip"]["cpu_us"],
        "dns": costs["dns"]["cpu_us"],
        "certificate_expiry": costs["cert_expiry"]["cpu_us"],
    }
    parts["request_response_close_and_check_code"] = round(check - sum(parts.values()), 1)
    return {name: round(value, 1) for name, value in parts.items()}


async def main_async(args: argparse.Namespace) -> int:
    from bench.harness import Cpus

    workdir = (args.workdir or BENCH_DIR / "work" / f"https-costs-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    cpus = Cpus.detect()
    certs = make_certificates(workdir)
    nginx, http_port, https_port, _ = await start_nginx_https(workdir, cpus.helpers, certs)
    if cpus.measured:
        os.sched_setaffinity(0, cpus.measured)
    try:
        costs = await measure(
            f"https://{HOSTNAME}:{https_port}/health",
            f"http://{HOSTNAME}:{http_port}/health",
            certs.ca_file,
            args.requests,
            args.concurrency,
            args.repeat,
        )
    finally:
        await nginx.stop()
    result = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average": os.getloadavg(),
        "requests": args.requests,
        "concurrency": args.concurrency,
        "rounds": args.repeat,
        "loop": "uvloop",
        "rss_mb": round(procfs.rss_mb(os.getpid())[0], 1),
        "costs": costs,
        "breakdown_us": breakdown(costs),
        "own_client_vs_aiohttp": round(costs["own_client"]["cpu_us"] / costs["aiohttp"]["cpu_us"], 3),
        "resumed_vs_full": round(costs["streams_resumed"]["cpu_us"] / costs["streams_full"]["cpu_us"], 3),
    }
    out = args.out or BENCH_DIR / "results" / "https-costs.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["breakdown_us"], indent=2))
    print(f"own client / aiohttp: {result['own_client_vs_aiohttp']}; written: {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.https_costs", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests of each kind (2000)")
    parser.add_argument("--concurrency", type=int, default=20, help="in flight at once (20)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each kind's median is kept (3)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    import uvloop

    return uvloop.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
