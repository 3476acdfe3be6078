"""Suite-wide safety: no test process may talk to anything but loopback.

An audit hook (installed once, armed per test) rejects socket connects and sends to a non-loopback
address and name lookups of anything but loopback names, and the autouse fixture fails the test
that tried. Whole-node scenarios run the agent in the lab's namespaces as a child process, which
this hook does not see and does not need to: those namespaces have no route out."""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

import pytest

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
_violations: list[str] = []
_armed = False


def _is_loopback_host(host: object) -> bool:
    if host is None or host == "":
        return True  # bind-style wildcard lookups (getaddrinfo(None, port)) send nothing
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if not isinstance(host, str):
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _address_allowed(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX paths and abstract sockets stay on the host
        return True
    if isinstance(address, tuple) and address:
        return _is_loopback_host(address[0])
    return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _armed:
        return
    if event == "socket.connect":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _address_allowed(address):
            _violations.append(f"connect to {address!r}")
            raise PermissionError(f"test guard: connect to non-loopback address {address!r}")
    elif event == "socket.sendto":
        sock, address = args
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address is not None \
                and not _address_allowed(address):
            _violations.append(f"sendto {address!r}")
            raise PermissionError(f"test guard: send to non-loopback address {address!r}")
    elif event == "socket.getaddrinfo":
        host = args[0]
        if not _is_loopback_host(host):
            _violations.append(f"name lookup of {host!r}")
            raise PermissionError(f"test guard: name lookup of {host!r} would query the resolver")
    elif event in ("socket.gethostbyname", "socket.gethostbyaddr"):
        host = args[0]
        if not _is_loopback_host(host):
            _violations.append(f"{event} {host!r}")
            raise PermissionError(f"test guard: {event} of {host!r}")


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def network_guard() -> Any:
    """Fail any test whose process reached for a non-loopback address, even if it caught the error."""
    global _armed
    _violations.clear()
    _armed = True
    try:
        yield
    finally:
        _armed = False
    if _violations:
        pytest.fail("non-loopback network access from the test process: " + "; ".join(_violations))
