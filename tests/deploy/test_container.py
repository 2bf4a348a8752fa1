"""The container, for real: a private dockerd builds the image from the Dockerfile and runs it.

One engine and one build for the module. The base image the Dockerfile's FROM names is made
locally with debootstrap (no registry is reachable) and cached between runs. Containers use the
host network, a read-only root filesystem and a tmpfs for /tmp, as the README tells users to.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.helpers import ROOT, LoopbackHttp, Request, closed_port, free_port, http_get, json_reply
from tests.fakes.docker import Container, DockerEngine, base_images

# Cold, the module builds the base image (debootstrap, about a minute) and the product image.
pytestmark = pytest.mark.timeout(900)

IMAGE = "monitor:deploy-test"
USER_ID = 10001  # the Dockerfile's `monitor` user
TOKEN = secrets.token_hex(16)  # the secret the mounted config reads from the environment


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    with DockerEngine() as docker:
        yield docker


@pytest.fixture(scope="module")
def image(engine: DockerEngine) -> str:
    for base in base_images(ROOT / "Dockerfile"):
        engine.ensure_base_image(base)
    engine.build(ROOT, IMAGE)
    return IMAGE


@pytest.fixture(scope="module")
def peer() -> Iterator[LoopbackHttp]:
    """The check's target (it wants the bearer token) and a PagerDuty Events API stand-in."""

    def health(request: Request) -> tuple[int, dict[str, str], bytes]:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return json_reply(401, {"status": "unauthorized"})
        return json_reply(200, {"status": "ok", "uptime": 7})

    def enqueue(request: Request) -> tuple[int, dict[str, str], bytes]:
        body = request.json()
        return json_reply(202, {"status": "success", "dedup_key": body.get("dedup_key")})

    server = LoopbackHttp({"/health": health, "/v2/enqueue": enqueue}).start()
    yield server
    server.stop()


def write_config(directory: Path, port: int, peer: LoopbackHttp, paging: bool = False) -> Path:
    """A monitor.toml for /etc/monitor/monitor.toml; with `paging`, a check that is down and a
    PagerDuty notifier pointed at the peer."""
    text = f"""
[monitor]
listen = "127.0.0.1:{port}"
default_interval = "1s"
default_timeout = "1s"
log_format = "json"

[[checks]]
name = "target-api"
type = "http"
url = "{peer.url("/health")}"
headers = {{ Authorization = "Bearer ${{HEALTH_TOKEN}}" }}
expect_json = {{ status = "ok" }}
"""
    if paging:
        text += f"""
[[checks]]
name = "gone"
type = "tcp"
host = "127.0.0.1"
port = {closed_port()}

[notifiers.oncall]
type = "pagerduty"
routing_key = "${{PAGERDUTY_ROUTING_KEY}}"
url = "{peer.url("/v2/enqueue")}"

[[routes]]
match = {{ severity = "critical" }}
notify = ["oncall"]
"""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "monitor.toml"
    config.write_text(text)
    config.chmod(0o644)  # read by uid 10001 inside the container
    return config


def start(
    engine: DockerEngine, image: str, config: Path, volume: str, fast_health: bool = False
) -> Container:
    options = [
        "--read-only",
        "--tmpfs", "/tmp",
        "--volume", f"{config}:/etc/monitor/monitor.toml:ro",
        "--volume", f"{volume}:/var/lib/monitor",
        "--env", "HEALTH_TOKEN",  # the value comes from the CLI's environment, not its arguments
        "--env", "PAGERDUTY_ROUTING_KEY",
    ]  # fmt: skip
    if fast_health:
        options += ["--health-interval", "1s"]  # the image's own probe command, run more often
    return engine.run(
        image, options=options, env={"HEALTH_TOKEN": TOKEN, "PAGERDUTY_ROUTING_KEY": "test-routing-key"}
    )


@dataclass
class Running:
    container: Container
    port: int
    healthy_after_s: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def running(
    engine: DockerEngine, image: str, peer: LoopbackHttp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    """The image as a user runs it, with its HEALTHCHECK timing untouched."""
    port = free_port()
    config = write_config(tmp_path_factory.mktemp("container"), port, peer)
    container = start(engine, image, config, volume="monitor-deploy-test-state")
    try:
        healthy_after = container.wait_healthy(timeout_s=90)
        yield Running(container, port, healthy_after)
    finally:
        container.remove()


def test_healthcheck_turns_healthy(running: Running) -> None:
    """The config moved `listen` off the image's 9100: `monitor healthcheck` reads it from there."""
    health = running.container.inspect()["State"]["Health"]
    assert health["Status"] == "healthy"
    assert health["Log"][-1]["ExitCode"] == 0
    assert health["Log"][-1]["Output"].strip() == f"healthy: http://127.0.0.1:{running.port}/healthz"
    assert running.healthy_after_s < 60


def test_metrics_are_scraped_from_the_host(running: Running) -> None:
    deadline = time.monotonic() + 20
    while True:
        status, body = http_get(f"{running.url}/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        up = samples.get(("monitor_check_up", (("check", "target-api"), ("type", "http"))))
        if up == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert up == 1
    assert any(name == "monitor_build_info" for name, _ in samples)


def test_a_mounted_config_with_a_secret_from_the_environment_drives_a_check(
    running: Running, peer: LoopbackHttp
) -> None:
    authorized = [r for r in peer.seen("/health") if r.headers.get("Authorization") == f"Bearer {TOKEN}"]
    assert authorized, "the check never sent the token from HEALTH_TOKEN"
    status, body = http_get(f"{running.url}/api/v1/checks")
    assert status == 200
    [check] = [c for c in json.loads(body)["checks"] if c["name"] == "target-api"]
    assert check["up"] is True, check
    # The secret is shown nowhere: not by the API, the metrics, nor the logs.
    assert TOKEN not in body.decode()
    assert TOKEN not in http_get(f"{running.url}/metrics")[1].decode()
    assert TOKEN not in running.container.logs()


def test_the_process_runs_as_a_non_root_user(running: Running) -> None:
    status = Path(f"/proc/{running.container.host_pid()}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(USER_ID)}, status


def test_the_root_filesystem_is_read_only_and_tmp_writable(running: Running, engine: DockerEngine) -> None:
    probe = (
        "import pathlib\n"
        "pathlib.Path('/tmp/probe').write_text('x')\n"
        "try:\n    pathlib.Path('/opt/monitor/probe').write_text('x')\n"
        "except OSError as e:\n    print(e.strerror)\n"
    )
    out = engine.docker("exec", running.container.id, "python3", "-c", probe)
    assert out.stdout.strip() == "Read-only file system"


# ---------------------------------------------------------------- state across a restart


@dataclass
class Restart:
    """Container A paged for a check that is down and was stopped; B started on A's volume."""

    first_exit: tuple[int, float]
    first_pages: list[dict[str, Any]]
    first_outcomes: dict[str, float]  # monitor_notifications_total{notifier="oncall"} by outcome
    first_logs: str
    pages: list[dict[str, Any]]
    second_started_at: float
    alerts_after: list[dict[str, Any]]
    state_files: list[str]


@pytest.fixture(scope="module")
def restarted(
    engine: DockerEngine, image: str, peer: LoopbackHttp, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Restart]:
    volume = "monitor-deploy-test-restart"
    port = free_port()
    config = write_config(tmp_path_factory.mktemp("restart"), port, peer, paging=True)

    def pages() -> list[dict[str, Any]]:
        return [r.json() for r in peer.seen("/v2/enqueue")]

    first = start(engine, image, config, volume, fast_health=True)
    second: Container | None = None
    try:
        first.wait_healthy(timeout_s=60)
        # Until the page arrives, or the notifier has reported an attempt that was not a success.
        deadline = time.monotonic() + 30
        outcomes: dict[str, float] = {}
        while time.monotonic() < deadline:
            outcomes = notification_outcomes(f"http://127.0.0.1:{port}", "oncall")
            if [p for p in pages() if p["event_action"] == "trigger"] or set(outcomes) - {"sent"}:
                break
            time.sleep(0.25)
        time.sleep(1)  # a second page, if the daemon wrongly sent one, would come now
        first_pages = pages()
        first_exit = first.stop()
        first_logs = first.logs()
        first.remove()
        second_started_at = time.time()
        second = start(engine, image, config, volume, fast_health=True)
        second.wait_healthy(timeout_s=60)
        time.sleep(8)  # eight evaluation rounds of a check that is still down
        alerts = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/alerts")[1])["alerts"]
        listing = engine.docker(
            "run", "--rm", "--network", "host", "--volume", f"{volume}:/var/lib/monitor",
            "--entrypoint", "python3", image, "-c", "import os; print('\\n'.join(sorted(os.listdir('.'))))",
        )  # fmt: skip
        yield Restart(
            first_exit,
            first_pages,
            outcomes,
            first_logs,
            pages(),
            second_started_at,
            alerts,
            listing.stdout.split(),
        )
    finally:
        for container in (first, second):
            if container is not None:
                container.remove()
        engine.docker("volume", "rm", "-f", volume, check=False)


def test_state_in_the_volume_survives_a_restart(restarted: Restart) -> None:
    assert "monitor-state.db" in restarted.state_files
    [alert] = [a for a in restarted.alerts_after if a["check"] == "gone" and a["metric"] == "up"]
    assert alert["state"] == "firing"
    # The second container carries on the first one's alert: it began before the second started.
    started = datetime.fromisoformat(alert["started_at"].replace("Z", "+00:00")).timestamp()
    assert started < restarted.second_started_at


def test_an_alert_paged_before_a_restart_is_not_paged_again(restarted: Restart) -> None:
    triggers = [p for p in restarted.first_pages if p["event_action"] == "trigger"]
    assert len(triggers) == 1, (restarted.first_pages, restarted.first_outcomes)
    assert triggers[0]["payload"]["component"] == "gone"
    again = [p for p in restarted.pages if p["event_action"] == "trigger"]
    assert again == triggers, "the restarted daemon paged again for an alert already paged"


def test_the_first_container_stopped_cleanly(restarted: Restart) -> None:
    exit_code, elapsed_s = restarted.first_exit
    assert exit_code == 0 and elapsed_s < 10


def notification_outcomes(url: str, notifier: str) -> dict[str, float]:
    status, body = http_get(f"{url}/metrics")
    if status != 200:
        return {}
    return {
        s.labels["outcome"]: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == "monitor_notifications_total" and s.labels.get("notifier") == notifier
    }


# ---------------------------------------------------------------- last: it stops the module's container


def test_docker_stop_ends_it_with_exit_code_0_within_10_seconds(running: Running) -> None:
    exit_code, elapsed_s = running.container.stop(timeout_s=10)
    assert exit_code == 0, running.container.logs()[-2000:]
    assert elapsed_s < 10
