"""A private PostgreSQL cluster on 127.0.0.1, for the shared-archive tests and benchmarks.

Debian's ``postgresql`` package gives the server programs (``initdb``,
``pg_ctl``) but the cluster is our own: a data directory and a socket
directory in a temporary folder, a free port on 127.0.0.1, password
authentication for TCP clients, stopped at the end by its pid. PostgreSQL
refuses to run as root, so as root the cluster belongs to the ``postgres``
system user (made by the package) and its programs run under ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PASSWORD = os.environ.get("PIPELINE_TEST_PG_PASSWORD") or "pipeline-test-" + secrets.token_hex(4)
SUPERUSER = "pipeline_admin"


def server_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Tests need no durability: a crash of the test machine loses a throwaway cluster
TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
}
# What a server for a team would run with: durable commits, and a cache that holds the
# search indexes of a large archive (PostgreSQL's default is 128 MB)
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "2GB",
}


class Postgres:
    """A throwaway PostgreSQL cluster; ``url(db)`` is a SQLAlchemy URL for a database in it."""

    def __init__(
        self, bin_dir: Path, root: Path | None = None, settings: dict[str, str] | None = None
    ) -> None:
        """``settings``: server settings over :data:`TEST_SETTINGS` (a benchmark's)."""
        # right under /tmp: as root the server runs as `postgres`, which must reach it
        self.root = root or Path(tempfile.mkdtemp(prefix="pipeline-pg-"))
        self.bin = bin_dir
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        self.settings = {**TEST_SETTINGS, **(settings or {})}

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> str:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and out.returncode:
            raise RuntimeError(f"{args[0]} failed: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def init(self) -> None:
        self.sockets.mkdir(exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()

    def start(self) -> None:
        """Start (or start again) the server on its port; wait until it takes connections."""
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {name}={value}" for name, value in self.settings.items()
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o", options,
            "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server by its pid (``mode`` as pg_ctl's: smart, fast, immediate)."""
        pid_file = self.data / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().split()[0])
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
            for _ in range(400):
                os.kill(pid, 0)
                time.sleep(0.05)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run(
            "psql", "-h", str(self.sockets), "-p", str(self.port), "-U", SUPERUSER,
            "-d", database, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql,
        )  # fmt: skip

    def create_database(self, name: str) -> str:
        """A fresh database owned by the superuser; its URL."""
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def url(self, database: str, password: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}:{password or PASSWORD}@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
