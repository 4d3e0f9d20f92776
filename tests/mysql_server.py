"""A throwaway MariaDB server (MySQL protocol) for tests that need a real MySQL storage.

Same contract as ``postgres_cluster``: a data folder made by ``mariadb-install-db`` in a
temporary folder, a server on a free loopback port, stopped and deleted when the test
session ends. The server refuses to run as root unless told to, so as root (CI) it is
started with ``--user=root``; the data folder is private to the test anyway.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from throwaway_server import database_name, free_port, session_server

MARIADB_SERVER = Path(os.environ.get("LORA_SEARCH_MARIADB_SERVER", "/usr/sbin/mariadbd"))
MARIADB_INSTALL_DB = Path(os.environ.get("LORA_SEARCH_MARIADB_INSTALL_DB", "/usr/bin/mariadb-install-db"))
MISSING_BINARIES = (
    f"MariaDB server binaries not found ({MARIADB_SERVER}, {MARIADB_INSTALL_DB}): install Debian's 'mariadb-server' "
    "package, as .ci/run does, or set LORA_SEARCH_MARIADB_SERVER and LORA_SEARCH_MARIADB_INSTALL_DB"
)
START_TIMEOUT_SECONDS = 60


class MariaDBServer:
    """mariadb-install-db + mariadbd in a temporary folder; ``url(db)`` gives mysql:// URLs."""

    scheme = "mysql"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="lora-search-mariadb-"))
        self.data_dir = self.root / "data"
        self.socket = self.root / "server.sock"
        self.port = free_port()
        self.user = "lora"
        self.password = "lora-search-test"
        self._os_user = "root" if os.geteuid() == 0 else getpass.getuser()
        self._process: subprocess.Popen | None = None

    def start(self) -> None:
        install = subprocess.run(
            [str(MARIADB_INSTALL_DB), "--no-defaults", f"--datadir={self.data_dir}", f"--user={self._os_user}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, text=True, timeout=120,
        )
        if install.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed ({install.returncode}): {install.stderr.strip()[-1000:]}")
        self._process = subprocess.Popen(
            [str(MARIADB_SERVER), "--no-defaults", f"--datadir={self.data_dir}", f"--user={self._os_user}",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
             f"--pid-file={self.root / 'server.pid'}", f"--log-error={self.root / 'server.log'}",
             # a test database: durability traded for speed, as with fsync=off on PostgreSQL
             "--innodb-flush-log-at-trx-commit=0", "--skip-log-bin"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_until_ready()
        with self._admin_connection() as connection, connection.cursor() as cursor:
            # TCP with a password, so wrong credentials can be tested
            cursor.execute(f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}'")
            cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{self.user}'@'127.0.0.1'")

    def _wait_until_ready(self) -> None:
        import pymysql

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"mariadbd exited {self._process.returncode}: {self._log_tail()}")
            try:
                self._admin_connection().close()
                return
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not accept connections in {START_TIMEOUT_SECONDS} s: {self._log_tail()}")
                time.sleep(0.2)

    def _log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-1000:] if log.exists() else "no server log"

    def _admin_connection(self):
        import pymysql

        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def stop(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                self._process.kill()  # like pg_ctl -m immediate: nothing here needs a clean shutdown
                self._process.wait(timeout=30)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"mysql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        with self._admin_connection() as connection, connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{name}`")
        return self.url(name)


@pytest.fixture(scope="session")
def mysql_server():
    """A running MariaDB server for the whole test session."""
    present = MARIADB_SERVER.exists() and MARIADB_INSTALL_DB.exists()
    yield from session_server(MariaDBServer, present, MISSING_BINARIES)


@pytest.fixture
def mysql_url(mysql_server, request):
    """The URL of a fresh, empty database on the session's server, one per test."""
    return mysql_server.create_database(database_name(request, 64))
