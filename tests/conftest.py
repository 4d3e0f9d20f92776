"""Fixtures shared by several test folders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# --import-mode=importlib keeps tests/ off sys.path; the shared fixture modules live here.
sys.path.insert(0, str(Path(__file__).parent))

from mysql_server import mysql_server, mysql_url  # noqa: E402,F401  (fixtures)
from postgres_cluster import postgres_cluster, postgres_url  # noqa: E402,F401  (fixtures)

# fixture names of the database servers a storage test runs against, by URL scheme
DATABASE_SERVERS = {"postgresql": ("postgres_cluster", "postgres_url"), "mysql": ("mysql_server", "mysql_url")}


@pytest.fixture(params=sorted(DATABASE_SERVERS))
def database_server(request):
    """Each real database server in turn (PostgreSQL 15, MariaDB): ``.scheme``, ``.port``, ``.url(db)``."""
    return request.getfixturevalue(DATABASE_SERVERS[request.param][0])


@pytest.fixture
def database_url(database_server, request):
    """A fresh, empty database on each real database server in turn."""
    return request.getfixturevalue(DATABASE_SERVERS[database_server.scheme][1])
