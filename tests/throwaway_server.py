"""What the throwaway database servers of the tests share: a free port, a fixture body
that skips or fails where the binaries are missing, and fresh database names."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_DATABASE_NUMBERS = itertools.count()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def session_server(make: Callable[[], Any], binaries_present: bool, missing: str) -> Iterator[Any]:
    """Body of a session fixture: the started server, stopped (and deleted) at the end.

    Where the server binaries are missing this fails under CI (``CI`` set: .ci/run
    installs them) and skips elsewhere, saying what to install.
    """
    if not binaries_present:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    server = make()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def database_name(request: pytest.FixtureRequest, limit: int) -> str:
    """A name no other test uses, made from the test's own name (for reading server logs)."""
    test_name = "".join(ch if ch.isalnum() else "_" for ch in request.node.name.lower())
    return f"t{next(_DATABASE_NUMBERS)}_{test_name}"[:limit]
