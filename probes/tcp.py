"""TCP connect to every address of a name at once, each on its own socket, keeping each errno:
create_connection would try them in turn and, before Python 3.12, lose the errno when all fail."""

from __future__ import annotations

import asyncio
import socket
import time

from probes import _stream
from probes._net import connect, errno_name, first_error, require, since_ms
from probes._trace import Fact, Trace
from probes._tunnel import tunnel
from probes.reasons import classify, local_limit
from probes.specs import TcpSpec as Spec


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Pass if any address accepts; `partial` when some do not. All failing raises the first
    address's own error (classified centrally from its errno), or a local limit any address met."""
    if spec.proxy is not None:
        await _through(spec, trace)
        return
    attempts: list[Fact] = []  # shared with the trace, so a deadline still finds the finished ones
    trace.note(addresses_ok=[], attempts=attempts)
    targets = require(addresses)
    connected: dict[str, socket.socket] = {}

    async def attempt(address: str) -> OSError | None:
        start = time.monotonic()
        try:
            sock = await connect(address, spec.port)
        except OSError as exc:
            attempts.append(_attempt(address, classify(exc).value, errno_name(exc), start))
            if local_limit(exc):  # read by the engine should the others time out: no verdict then
                trace.note(local_limit=f"{address}: {errno_name(exc) or exc}")
            return exc
        connected[address] = sock
        attempts.append(_attempt(address, "connected", None, start))
        trace.passed(address)
        return None

    try:
        with trace.phase("connect"):
            errors = await asyncio.gather(*(attempt(a) for a in targets))
            failures = [e for e in errors if e is not None]
            if len(failures) == len(targets):
                raise first_error(failures)
    finally:  # the connection the next layer uses is left for it (probes._stream); the others close
        _stream.leave_first(spec, targets, connected)
    if failures:
        trace.note(partial=True)


async def _through(spec: Spec, trace: Trace) -> None:
    """The tunnel the node's clients would open: CONNECT host:port through the proxy, which
    resolves the name (a stock squid refuses ports outside its SSL_ports)."""
    assert spec.proxy is not None
    trace.note(addresses_ok=[], via_proxy=True, proxy=spec.proxy.shown)
    with trace.phase("connect"):
        sock = await tunnel(spec.proxy, spec.host, spec.port, trace)
    sock.close()


def _attempt(address: str, outcome: str, errno: str | None, start: float) -> dict[str, Fact]:
    return {"address": address, "outcome": outcome, "errno": errno, "elapsed_ms": since_ms(start)}
