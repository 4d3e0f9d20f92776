"""A throwaway PostgreSQL 15 cluster for tests that need a real database server.

The cluster lives in a temporary folder, listens on a free loopback port and is
stopped and deleted when the test session ends. PostgreSQL refuses to run as root,
so when the tests run as root (as in CI) the server commands run as the ``postgres``
user, which the Debian package creates.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from throwaway_server import database_name, free_port, session_server

POSTGRES_BIN = Path(os.environ.get("LORA_SEARCH_PG_BIN", "/usr/lib/postgresql/15/bin"))
MISSING_BINARIES = (
    f"PostgreSQL 15 server binaries not found in {POSTGRES_BIN} (initdb, pg_ctl): "
    "install Debian's 'postgresql' package, as .ci/run does, or set LORA_SEARCH_PG_BIN"
)


class PostgresCluster:
    """initdb + pg_ctl in a temporary folder; ``url(db)`` gives SQLAlchemy URLs."""

    scheme = "postgresql"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lora-search-pg-"))
        self.data_dir = self.root / "data"
        self.port = free_port()
        self.user = "postgres"
        self.password = "lora-search-test"
        self._as_postgres_user = os.geteuid() == 0

    def _run(self, *command: str) -> None:
        line = " ".join(shlex.quote(part) for part in command)
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", line] if self._as_postgres_user else ["sh", "-c", line]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")

    def start(self) -> None:
        if self._as_postgres_user:
            shutil.chown(self.root, user="postgres")
        self._run(str(POSTGRES_BIN / "initdb"), "-D", str(self.data_dir), "-U", self.user, "--no-sync",
                  # local socket: trust (to set up); TCP: a password, so wrong credentials can be tested
                  "--auth-local=trust", "--auth-host=scram-sha-256")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                  "-l", str(self.root / "server.log"), "-w", "start")
        with self._admin_connection() as connection:
            connection.execute(f"ALTER USER {self.user} PASSWORD '{self.password}'")

    def _admin_connection(self):
        import psycopg

        return psycopg.connect(host=str(self.root), port=self.port, user=self.user, dbname="postgres", autocommit=True)

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        with self._admin_connection() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A running PostgreSQL 15 cluster for the whole test session."""
    present = (POSTGRES_BIN / "initdb").exists() and (POSTGRES_BIN / "pg_ctl").exists()
    yield from session_server(PostgresCluster, present, MISSING_BINARIES)


@pytest.fixture
def postgres_url(postgres_cluster, request):
    """The URL of a fresh, empty database in the session's cluster, one per test."""
    return postgres_cluster.create_database(database_name(request, 63))
