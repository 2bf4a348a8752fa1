"""A throwaway real PostgreSQL cluster on loopback, for tests that need the genuine server."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import asyncpg

from tests.fakes.managed import Managed

SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "secret-pw"
HOST = "127.0.0.1"

# Durability buys nothing in a cluster deleted after the session; dropping it makes tests faster.
_SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "max_connections": "20",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "'32MB'",
    "logging_collector": "off",
}
_START_ATTEMPTS = 3  # a free port found by binding can be taken by someone else before we listen


class PostgresNotInstalled(RuntimeError):
    """The server binaries (initdb, pg_ctl) are missing: the test command should install them."""


def find_bindir() -> Path:
    """Where initdb and pg_ctl live: `pg_config --bindir`, the newest Debian install, or PATH."""
    candidates: list[Path] = []
    if pg_config := shutil.which("pg_config"):
        # On Debian, pg_config comes with libpq-dev and may name a bindir with no server in it.
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True))
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresNotInstalled(
        "PostgreSQL server binaries not found (looked at `pg_config --bindir`, "
        "/usr/lib/postgresql/*/bin and `initdb` on PATH); install the server, "
        "e.g. `apt-get install postgresql`"
    )


def _version(bindir: Path) -> tuple[int, ...]:
    """`/usr/lib/postgresql/15/bin` -> (15,); numeric so that 10 sorts above 9.6."""
    return tuple(int(part) for part in re.findall(r"\d+", bindir.parent.name))


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PostgresCluster(Managed):
    """initdb + pg_ctl in a temporary directory; superuser `postgres` authenticates by SCRAM.

    Use as a context manager (or `start()`/`stop()`). The server listens on 127.0.0.1 on a free
    port and puts its unix socket in the temporary directory, so it never meets a system cluster.
    """

    def __init__(self, password: str = SUPERUSER_PASSWORD) -> None:
        self.password = password
        self.bindir = find_bindir()
        self.port = 0
        self._tmp: Path | None = None
        self._running = False
        # initdb refuses to run as root, so under root every server command runs as `postgres`.
        self._as_root = os.geteuid() == 0

    # ---------------------------------------------------------------- public

    @property
    def tmpdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("the cluster is not started")
        return self._tmp

    @property
    def datadir(self) -> Path:
        return self.tmpdir / "data"

    @property
    def logfile(self) -> Path:
        return self.tmpdir / "server.log"

    def dsn(
        self,
        user: str = SUPERUSER,
        password: str | None = None,
        database: str = "postgres",
        port: int | None = None,
    ) -> str:
        """A `postgresql://` URL; `password=None` means the superuser's, `""` means none."""
        secret = self.password if password is None else password
        userinfo = quote(user, safe="") + (f":{quote(secret, safe='')}" if secret else "")
        return f"postgresql://{userinfo}@{HOST}:{port or self.port}/{quote(database, safe='')}"

    @contextlib.asynccontextmanager
    async def database(self, name: str) -> AsyncIterator[str]:
        """A database of its own for one test, made empty and dropped after; yields its name."""
        admin = await asyncpg.connect(self.dsn())
        try:
            await admin.execute(f"drop database if exists {name} with (force)")
            await admin.execute(f"create database {name}")
            try:
                yield name
            finally:
                await admin.execute(f"drop database if exists {name} with (force)")
        finally:
            await admin.close()

    def start(self) -> None:
        """initdb, then `pg_ctl -w start`; raises with the server log when it cannot start."""
        self._tmp = Path(tempfile.mkdtemp(prefix="monitor-pg-"))
        try:
            self._initdb()
            self._start_server()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server at once (nothing here is worth a checkpoint) and delete its files."""
        if self._tmp is None:
            return
        try:
            if self._running:
                self._run(["pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
                self._running = False
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    # ---------------------------------------------------------------- private

    def _initdb(self) -> None:
        pwfile = self.tmpdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._as_root:
            self._chown_to_postgres(self.tmpdir)
        self._run(
            [
                "initdb",
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        pwfile.unlink()
        settings = dict(_SETTINGS, unix_socket_directories=f"'{self.tmpdir}'")
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/fakes/postgres.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start_server(self) -> None:
        for attempt in range(1, _START_ATTEMPTS + 1):
            self.port = free_port()
            try:
                self._run(
                    [
                        "pg_ctl",
                        "-D", str(self.datadir),
                        "-l", str(self.logfile),
                        "-o", f"-p {self.port}",
                        "-w", "-t", "60",
                        "start",
                    ]
                )  # fmt: skip
            except RuntimeError:
                if attempt == _START_ATTEMPTS or "already in use" not in self._log_tail():
                    raise
                continue
            self._running = True
            return

    def _run(self, argv: list[str]) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_root:
            command = ["runuser", "-u", SUPERUSER, "--", *command]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")
        if proc.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed with exit code {proc.returncode}:\n"
                f"{proc.stdout}{proc.stderr}\n--- server log ---\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _chown_to_postgres(self, root: Path) -> None:
        try:
            account = pwd.getpwnam(SUPERUSER)
        except KeyError:
            raise PostgresNotInstalled(
                "running as root needs the `postgres` OS user (the postgresql package creates it)"
            ) from None
        for path in [root, *root.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
