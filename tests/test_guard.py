"""The network guard itself: it must stop a real non-loopback connect and allow loopback."""

from __future__ import annotations

import socket
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture
def conftest(request: pytest.FixtureRequest) -> ModuleType:
    """The suite's own conftest, by its file among pytest's plugins: `import conftest` finds whichever
    conftest.py pytest imported last under that name (tests/packaging has one too)."""
    own = str(Path(__file__).with_name("conftest.py"))
    return next(p for p in request.config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == own)


def test_guard_blocks_non_loopback_connect(conftest: ModuleType) -> None:
    # 192.0.2.1 (TEST-NET-1) is never routed; the guard refuses before any packet is built.
    with socket.socket() as sock, pytest.raises(PermissionError, match="test guard"):
        sock.connect(("192.0.2.1", 9))
    assert conftest._violations == ["connect to ('192.0.2.1', 9)"]
    conftest._violations.clear()  # the violation was the point of this test


def test_guard_blocks_name_lookups(conftest: ModuleType) -> None:
    with pytest.raises(PermissionError, match="test guard"):
        socket.getaddrinfo("example.invalid", 443)
    conftest._violations.clear()


def test_guard_allows_loopback() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname()):
            pass
