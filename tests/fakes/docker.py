"""A private Docker engine for tests: dockerd in a temp dir, a debootstrap base image, real builds."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.managed import Managed

# Kept between runs on one machine: debootstrap costs about a minute, an import a few seconds.
CACHE_DIR = Path(os.environ.get("MONITOR_TEST_CACHE", "/var/cache/monitor-tests"))
SUITE = "bookworm"
# What the product's Dockerfile needs from its base: `python3` on PATH with venv, and TLS roots.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Where the local base image keeps this machine's CA bundle, for pip inside `docker build`.
BASE_CA_PATH = "/etc/ssl/certs/monitor-tests-host-ca.crt"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 30.0
# Variables that would point our docker CLI at another engine or another user's settings.
_CLIENT_ENV_DROP = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONFIG")


class DockerNotInstalled(RuntimeError):
    """dockerd, its CLI or debootstrap is missing: scripts/test installs them (docker.io, debootstrap)."""


class DockerError(RuntimeError):
    """A docker command failed; the message carries its output."""


def find_binary(name: str, extra_dirs: Sequence[str] = ("/usr/sbin", "/usr/bin", "/sbin")) -> str:
    """`name` on PATH or in the sbin directories a non-login PATH may lack."""
    if found := shutil.which(name):
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise DockerNotInstalled(f"`{name}` not found on PATH nor in {', '.join(extra_dirs)}")


def docker_cli(dockerd: str) -> str:
    """The CLI packaged with this dockerd: another one on PATH may speak a newer API than it."""
    for candidate in (Path(dockerd).parent.parent / "bin" / "docker", Path("/usr/bin/docker")):
        if candidate.is_file():
            return str(candidate)
    return find_binary("docker")


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile's FROM lines name, without references to its own earlier stages."""
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if not match:
            continue
        image, alias = match.group(1), match.group(2)
        if image.lower() not in stages and image not in images:
            images.append(image)
        if alias:
            stages.add(alias.lower())
    return images


def debian_mirror(sources: Sequence[Path] = ()) -> str:
    """The Debian mirror apt uses on this machine (one-line or deb822 sources), for debootstrap."""
    paths = list(sources) or [
        Path("/etc/apt/sources.list"),
        *sorted(Path("/etc/apt/sources.list.d").glob("*")),
    ]
    for path in paths:
        with contextlib.suppress(OSError):
            text = path.read_text()
            for uri in re.findall(r"^\s*URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", text, re.M
            ):
                if "security" not in uri and uri.startswith(("http://", "https://")):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def host_ca_bundle() -> Path:
    """The CA bundle this machine's pip trusts (it may carry a proxy's CA the base image lacks)."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        if (value := os.environ.get(name)) and Path(value).is_file():
            return Path(value)
    return Path("/etc/ssl/certs/ca-certificates.crt")


def _pip_index_settings() -> dict[str, str]:
    """The host's PyPI index, if it uses another than pypi.org (file:// indexes do not travel)."""
    settings: dict[str, str] = {}
    for key, env in (("index-url", "PIP_INDEX_URL"), ("extra-index-url", "PIP_EXTRA_INDEX_URL")):
        value = " ".join(u for u in os.environ.get(env, "").split() if not u.startswith("file:"))
        if value:
            settings[key] = value
    return settings


@dataclass(frozen=True, slots=True)
class Container:
    """One `docker run -d` container of an engine."""

    engine: DockerEngine
    id: str

    def inspect(self) -> dict[str, Any]:
        return json.loads(self.engine.docker("inspect", self.id).stdout)[0]

    def health(self) -> str:
        return self.inspect()["State"].get("Health", {}).get("Status", "none")

    def wait_healthy(self, timeout_s: float = 60.0) -> float:
        """Seconds until Docker reports it healthy; raises with the logs when it does not."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            state = self.inspect()["State"]
            if state.get("Health", {}).get("Status") == "healthy":
                return time.monotonic() - started
            if not state["Running"]:
                raise DockerError(f"container exited with {state['ExitCode']}:\n{self.logs()}")
            time.sleep(0.5)
        raise DockerError(f"not healthy after {timeout_s:.0f}s: {self.inspect()['State']}\n{self.logs()}")

    def logs(self) -> str:
        out = self.engine.docker("logs", self.id, check=False)
        return out.stdout + out.stderr

    def host_pid(self) -> int:
        return int(self.inspect()["State"]["Pid"])

    def stop(self, timeout_s: int = 10) -> tuple[int, float]:
        """`docker stop`: the exit code and how long the stop took."""
        started = time.monotonic()
        self.engine.docker("stop", "-t", str(timeout_s), self.id, timeout=timeout_s + 30)
        elapsed = time.monotonic() - started
        return int(self.inspect()["State"]["ExitCode"]), elapsed

    def remove(self) -> None:
        self.engine.docker("rm", "-f", "-v", self.id, check=False)


class DockerEngine(Managed):
    """dockerd with its data root, exec root and socket in a temporary directory.

    No bridge and no iptables: containers use the host network only, and the engine leaves no
    trace on the machine. `stop()` removes every container, stops dockerd by its PID (it stops
    the containerd it started) and deletes the directory.
    """

    def __init__(self) -> None:
        self.dockerd = find_binary("dockerd")
        self.cli = docker_cli(self.dockerd)
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tmpdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("dockerd is not started")
        return self._tmp

    @property
    def socket(self) -> Path:
        return self.tmpdir / "docker.sock"

    @property
    def logfile(self) -> Path:
        return self.tmpdir / "dockerd.log"

    def start(self) -> None:
        # A short path: a unix socket's path is limited to 107 bytes.
        self._tmp = Path(tempfile.mkdtemp(prefix="monitor-dockerd-", dir="/tmp"))
        try:
            (self.tmpdir / "daemon.json").write_text("{}\n")  # never the machine's /etc/docker/daemon.json
            (self.tmpdir / "cli").mkdir()
            with self.logfile.open("wb") as log:
                self._proc = subprocess.Popen(
                    [
                        self.dockerd,
                        "--config-file", str(self.tmpdir / "daemon.json"),
                        "--data-root", str(self.tmpdir / "data"),
                        "--exec-root", str(self.tmpdir / "exec"),
                        "--pidfile", str(self.tmpdir / "dockerd.pid"),
                        "--host", f"unix://{self.socket}",
                        "--bridge=none",
                        "--iptables=false",
                        "--ip-masq=false",
                        "--log-level=warn",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C of pytest must not reach dockerd before cleanup
                )  # fmt: skip
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise DockerError(f"dockerd exited with {self._proc.returncode}:\n{self._log_tail()}")
            if self.socket.exists() and self.docker("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise DockerError(f"dockerd not answering after {_START_TIMEOUT_S:.0f}s:\n{self._log_tail()}")

    def stop(self) -> None:
        """Reverse order of start: containers, then dockerd by its PID, then the directory."""
        if self._proc is not None:
            try:
                if self._proc.poll() is None:
                    # Best effort: a wedged engine must still be stopped below.
                    with contextlib.suppress(subprocess.SubprocessError, OSError):
                        ids = self.docker("ps", "-aq", check=False, timeout=30).stdout.split()
                        if ids:
                            self.docker("rm", "-f", "-v", *ids, check=False, timeout=60)
                    self._proc.send_signal(signal.SIGTERM)
                    try:
                        self._proc.wait(_STOP_TIMEOUT_S)
                    except subprocess.TimeoutExpired:
                        # Its own process group: the containerd it started goes with it.
                        os.killpg(self._proc.pid, signal.SIGKILL)
                        self._proc.wait(10)
            finally:
                self._proc = None
        if self._tmp is not None:
            _unmount_below(self._tmp)
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ------------------------------------------------------------ commands

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _CLIENT_ENV_DROP}
        env["DOCKER_CONFIG"] = str(self.tmpdir / "cli")  # no credential helpers or contexts of the user
        env["DOCKER_BUILDKIT"] = "0"  # the classic builder: `--network host` needs no entitlement
        return env

    def docker(
        self, *args: str, check: bool = True, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the CLI against this engine; `env` adds variables (`docker run -e NAME` reads them
        from here, so a secret never appears in a command line)."""
        proc = subprocess.run(
            [self.cli, "--host", f"unix://{self.socket}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env(), **(env or {})},
            stdin=subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise DockerError(
                f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def image_exists(self, name: str) -> bool:
        return self.docker("image", "inspect", name, check=False, timeout=30).returncode == 0

    def build(self, context: Path, tag: str, dockerfile: Path | None = None, timeout_s: float = 600) -> None:
        """`docker build --network host`: pip in the build reaches PyPI through the host's network."""
        args = ["build", "--network", "host", "--tag", tag]
        if dockerfile is not None:
            args += ["--file", str(dockerfile)]
        self.docker(*args, str(context), timeout=timeout_s)

    def run(
        self, image: str, *command: str, options: Sequence[str] = (), env: dict[str, str] | None = None
    ) -> Container:
        """`docker run -d --network host OPTIONS IMAGE COMMAND...`."""
        out = self.docker(
            "run", "--detach", "--network", "host", *options, image, *command, timeout=60, env=env
        )
        return Container(self, out.stdout.strip())

    def ensure_base_image(self, name: str, cache_dir: Path = CACHE_DIR) -> None:
        """Import the local Debian base under `name` unless the engine has that image already."""
        if self.image_exists(name):
            return
        tarball = base_image_tarball(cache_dir)
        self.docker(
            "import",
            "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change", "ENV LANG=C.UTF-8",  # as the official python images set it
            "--change", 'CMD ["python3"]',
            str(tarball),
            name,
            timeout=300,
        )  # fmt: skip

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no dockerd log)"


def _unmount_below(root: Path) -> None:
    """Overlay and shm mounts a killed dockerd left behind would make rmtree fail."""
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    prefix = str(root) + "/"
    for mountpoint in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, check=False, timeout=30)


# ---------------------------------------------------------------- the base image


def _base_image_settings() -> tuple[bytes, str]:
    ca = host_ca_bundle().read_bytes()
    pip_conf = "[global]\ncert = " + BASE_CA_PATH + "\n"
    pip_conf += "".join(f"{k} = {v}\n" for k, v in _pip_index_settings().items())
    return ca, pip_conf


def base_image_tarball(cache_dir: Path = CACHE_DIR) -> Path:
    """A `debootstrap --variant=minbase` Debian with python3, as a tar for `docker import`.

    Only this local test image carries the machine's CA bundle and pip settings: the product's
    Dockerfile stays what a user builds anywhere. The name holds a digest of everything that went
    in, so a changed CA bundle makes a new tarball; a lock keeps parallel runs from racing.
    """
    ca, pip_conf = _base_image_settings()
    mirror = debian_mirror()
    digest = hashlib.sha256("\n".join([SUITE, *BASE_PACKAGES, mirror, pip_conf]).encode() + ca).hexdigest()[
        :12
    ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"debian-{SUITE}-minbase-python3-{digest}.tar"
    with _locked(cache_dir / ".lock"):
        if tarball.is_file():
            return tarball
        for stale in cache_dir.glob(f"debian-{SUITE}-minbase-python3-*.tar*"):
            stale.unlink(missing_ok=True)
        _debootstrap_tarball(tarball, mirror, ca, pip_conf)
    return tarball


def _debootstrap_tarball(tarball: Path, mirror: str, ca: bytes, pip_conf: str) -> None:
    debootstrap = find_binary("debootstrap")
    with tempfile.TemporaryDirectory(prefix="monitor-rootfs-", dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(
            [
                debootstrap,
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                SUITE,
                str(rootfs),
                mirror,
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            log = rootfs / "debootstrap" / "debootstrap.log"
            detail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise DockerError(
                f"debootstrap failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr}\n{detail}"
            )
        (rootfs / BASE_CA_PATH.lstrip("/")).write_bytes(ca)
        (rootfs / "etc" / "pip.conf").write_text(pip_conf)
        # Package caches and lists are dead weight in an image nobody runs apt in.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for path in (rootfs / junk).glob("*"):
                if path.is_file():
                    path.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
            capture_output=True,
            timeout=300,
        )
        partial.rename(tarball)  # atomic: a killed run never leaves a half tarball under the real name


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
