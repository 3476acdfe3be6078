"""The taxonomy as the probes produce it: classify() on the exceptions that propagate from them
(the real ones are raised in the per-probe tests; here the table itself), and the registry."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import os
import socket

import aiohttp
import pytest
from websockets.exceptions import InvalidMessage

import probes
from probes.reasons import LOCAL_RESOURCE_ERRNOS, UDP_ERRNO_CODES, Reason, Status, classify, local_limit

pytest_plugins = ["probe_peers"]


def chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(("exc", "reason"), [
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Reason.DNS_NXDOMAIN),
    (socket.gaierror(socket.EAI_AGAIN, "Temporary failure"), Reason.DNS_TIMEOUT),
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Reason.TCP_REFUSED),
    (OSError(errno.EHOSTUNREACH, "no route"), Reason.TCP_HOST_UNREACHABLE),
    (OSError(errno.ENETUNREACH, "unreachable"), Reason.TCP_NET_UNREACHABLE),
    (ConnectionResetError(), Reason.TCP_CLOSED),  # asyncio's EOF during a handshake
    (aiohttp.ClientOSError(errno.ECONNRESET, "reset"), Reason.TCP_RESET),
    (chained(InvalidMessage("did not receive a valid HTTP response"), EOFError("closed")), Reason.TCP_CLOSED),
    (RuntimeError("a bug"), Reason.PROBE_INTERNAL),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_classify(exc: BaseException, reason: Reason) -> None:
    assert classify(exc) is reason


_LOCAL_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.EADDRNOTAVAIL, errno.EADDRINUSE)


@pytest.mark.parametrize("code", _LOCAL_ERRNOS, ids=errno.errorcode.get)
def test_the_node_s_own_limits_are_inconclusive(code: int) -> None:
    """Out of descriptors, buffers, memory or source ports, the node says nothing of the network: as the
    OSError itself, inside a library's wrapper, or under an exception whose cause it is."""
    for exc in (OSError(code, os.strerror(code)), aiohttp.ClientOSError(code, os.strerror(code)),
                chained(InvalidMessage("did not receive a valid HTTP response"), OSError(code, os.strerror(code)))):
        assert classify(exc) is Reason.LOCAL_RESOURCE_LIMIT and local_limit(exc)
    assert code in LOCAL_RESOURCE_ERRNOS and code not in UDP_ERRNO_CODES  # the UDP probe falls through to classify
    assert Reason.LOCAL_RESOURCE_LIMIT.status is Status.INCONCLUSIVE


def test_the_local_limits_are_these() -> None:
    assert frozenset(_LOCAL_ERRNOS) == LOCAL_RESOURCE_ERRNOS
    assert classify(socket.gaierror(socket.EAI_MEMORY, "Memory allocation failure")) is Reason.LOCAL_RESOURCE_LIMIT


@pytest.mark.parametrize(("code", "reason"), [
    (errno.EPERM, Reason.LOCAL_ERROR),  # a local netfilter rule rejected the packet: a finding about this node
    (errno.ENETDOWN, Reason.LOCAL_ERROR),
    (errno.ECONNREFUSED, Reason.TCP_REFUSED),
], ids=lambda v: errno.errorcode.get(v, str(v)) if isinstance(v, int) else str(v))
def test_other_errors_keep_their_verdicts(code: int, reason: Reason) -> None:
    assert classify(OSError(code, os.strerror(code))) is reason and reason.status is Status.FAIL


def test_udp_errno_table() -> None:
    assert UDP_ERRNO_CODES[errno.ECONNREFUSED] is Reason.UDP_CLOSED
    assert {UDP_ERRNO_CODES[e] for e in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENOPROTOOPT,
                                         errno.EACCES)} == {Reason.UDP_PROHIBITED}


def test_codes_are_unique_and_layered() -> None:
    values = [r.value for r in Reason]
    assert len(values) == len(set(values))
    assert all(v == v.lower() and "." in v for v in values)


def test_registry() -> None:
    assert set(probes.PROBES) == {"dns", "tcp", "udp", "tls", "http", "websocket", "smb", "local"}
    for spec_type, run in probes.PROBES.values():
        params = spec_type.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and hasattr(spec_type, "__slots__")
        assert dataclasses.fields(spec_type)[0].name in ("host", "url", "check")
        assert inspect.iscoroutinefunction(run)
        assert list(inspect.signature(run).parameters) == ["spec", "addresses", "trace"]
