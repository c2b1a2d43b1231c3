"""A real PostgreSQL server for the tests: Debian's binaries (``/usr/lib/postgresql/*/bin``;
scripts/test.sh installs ``postgresql`` when they are missing), a cluster made in a
temporary directory and run as an unprivileged user when the tests run as root (the
server refuses root), on a free port of 127.0.0.1 with its unix socket in that directory.

``postgres_server`` is a session-scoped fixture (import it into a test module); each
test takes a database of its own with ``fresh_url()``. ``stop()``/``start()`` take the
server away and bring it back on the same port, with its data."""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from harness import free_port

USER = "nobody"  # the server's OS user when the tests run as root
DB_USER = "slng"


def postgres_bindir() -> Path | None:
    """The newest Debian PostgreSQL's bin directory (initdb, postgres), or one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name)
                   if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class PostgresServer:
    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            pytest.fail("PostgreSQL is not installed: the shared-store tests need a real one "
                        "(Debian: apt-get install -y postgresql; scripts/test.sh does it)",
                        pytrace=False)
        self.bindir = bindir
        self.directory = Path(tempfile.mkdtemp(prefix="slng-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._names = itertools.count()
        # As root: the server's processes are the unprivileged user's, started directly
        # (setuid in the child), so signals reach the postmaster itself.
        self._as_user: dict[str, object] = {}
        if os.geteuid() == 0:
            entry = pwd.getpwnam(USER)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
            self._as_user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [],
                             "env": {**os.environ, "HOME": str(self.directory)}}
        os.chmod(self.directory, 0o700)
        subprocess.run(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", DB_USER, "--auth=trust",
             "-E", "UTF8", "--no-sync", "--no-instructions"],
            check=True, capture_output=True, cwd=self.directory,
            **self._as_user)  # type: ignore[call-overload]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{DB_USER}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        log = (self.directory / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-k", str(self.directory), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
             "-c", "max_connections=200"],
            stdout=log, stderr=log, cwd=self.directory,
            **self._as_user)  # type: ignore[call-overload]
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("postgres did not start: " + (
                        self.directory / "postgres.log").read_text()[-2000:]) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown: clients are disconnected, committed data is kept."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def fresh_url(self) -> str:
        """A new empty database's URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    yield server
    server.remove()
