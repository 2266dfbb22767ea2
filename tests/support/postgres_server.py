"""A real PostgreSQL server for the tests: Debian's PostgreSQL 15 in a temporary folder.

One per test session (the ``postgres_server`` fixture in ``tests.support.plugin``), on a free
loopback port, its socket in its own folder (under the system's temporary folder, which the
``postgres`` user can reach: pytest keeps its own folders private to root). ``initdb`` refuses to run as root, so as root every server command runs
as the ``postgres`` user (``runuser``) and the folder belongs to it. ``stop(mode="immediate")`` is a
crash (no checkpoint, clients cut), ``start()`` brings it back on the same port: the outage tests.
Each test gets its own database (``new_database``: a copy of an empty template, fast).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from cak.comfy_process import free_port

PG_BIN = Path(os.environ.get("CAK_PG_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL_HINT = "no PostgreSQL server: python3 install.py --with-postgres (Debian's postgresql package)"


def available() -> bool:
    return (PG_BIN / "pg_ctl").is_file() and (PG_BIN / "initdb").is_file()


class PostgresTestServer:
    """``initdb`` + ``pg_ctl start`` in ``folder``; ``url(db)`` for clients (trust auth, loopback)."""

    def __init__(self, folder: Path, durable: bool = False) -> None:
        """``durable``: fsync on (a benchmark's server); tests run without it, a crash is simulated."""
        self.folder = Path(folder)
        self.durable = durable
        self.data = self.folder / "data"
        self.port = free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        return subprocess.run([*prefix, *command], check=check, text=True, capture_output=True,
                              timeout=120)

    def init(self) -> None:
        if not available():
            raise RuntimeError(INSTALL_HINT)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.folder, "postgres", "postgres")
            self.folder.chmod(0o700)
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--no-sync")
        self.start()
        self.sql("CREATE DATABASE cak_template")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                   f"-c fsync={'on' if self.durable else 'off'} -c max_connections=300 -c shared_buffers=32MB")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                  "-l", str(self.folder / "log"), "-o", options, "start")

    def ensure_running(self) -> None:
        """Start it again if a test stopped it and failed before starting it."""
        status = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status", check=False)
        if status.returncode != 0:
            self.start()

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: a crash, every client cut at once (the outage tests)."""
        if self.data.is_dir():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-m", mode, "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run(str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                         "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", statement).stdout

    def new_database(self) -> str:
        """A fresh empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.sql(f"CREATE DATABASE {name} TEMPLATE cak_template")
        return self.url(name)


@contextlib.contextmanager
def scratch_postgres() -> Iterator[PostgresTestServer]:
    """A server of its own (the test session's, or a bench run's outside pytest), in a folder the
    ``postgres`` user can reach; stopped and removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="cak-postgres-"))
    folder.chmod(0o711)  # the server's own folder inside belongs to the postgres user
    server = PostgresTestServer(folder / "server")
    try:
        server.init()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)
