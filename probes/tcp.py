"""TCP connect to every address of a name at once, each on its own socket, keeping each errno:
create_connection would try them in turn and, before Python 3.12, lose the errno when all fail.

Inside a run, a connect still unanswered after its route's bound (probes/_timing.py) gets a fresh
retry beside it (a new socket, a new SYN, the first kept running); both unanswered after another
bound is that address's early `tcp.timeout` (evidence `early_verdict`). Each completed connect, and
each refused one (a RST is an answer), is a sample for the run's estimator."""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable

from probes import _stream
from probes._hops import localise
from probes._net import connect, errno_name, family, first_error, ms, require, since_ms
from probes._timing import EarlyTimeout, Estimator, estimator, wait_any
from probes._trace import Fact, Trace
from probes._tunnel import tunnel
from probes.reasons import classify, local_limit
from probes.specs import TcpSpec as Spec

_TCPI_RTT, _TCP_INFO_SIZE = 68, 104  # <linux/tcp.h> struct tcp_info: tcpi_rtt's offset, the size read


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Pass if any address accepts; `partial` when some do not. All failing raises the first
    address's own error (classified centrally from its errno), or a local limit any address met."""
    if spec.proxy is not None:
        await _through(spec, trace)
        return
    attempts: list[Fact] = []  # shared with the trace, so a deadline still finds the finished ones
    trace.note(addresses_ok=[], attempts=attempts)
    targets = require(addresses)
    rtt = estimator()
    connected: dict[str, socket.socket] = {}

    async def attempt(address: str) -> OSError | None:
        start = time.monotonic()
        tries: list[float] = []
        tracer = _PathTracer(trace, address, spec)
        try:
            sock = await _connect(address, spec.port, rtt, tries, tracer.start)
        except _Unanswered as exc:
            attempts.append({**_attempt(address, classify(exc).value, None, start), "tries": len(tries),
                             "early_verdict": True})
            return exc
        except OSError as exc:
            attempts.append({**_attempt(address, classify(exc).value, errno_name(exc), start), **_tries(tries)})
            if local_limit(exc):  # read by the engine should the others time out: no verdict then
                trace.note(local_limit=f"{address}: {errno_name(exc) or exc}")
            return exc
        finally:
            await tracer.stop()
        if _traced(trace) == address:  # answered after all: its path says nothing of a failure
            trace.facts.pop("path")
        connected[address] = sock
        handshake = _handshake_rtt(sock)  # the kernel's, free of the loop's lag: what latency thresholds read
        attempts.append({**_attempt(address, "connected", None, start), **_tries(tries),
                         "rtt_ms": None if handshake is None else ms(handshake)})
        trace.passed(address)
        return None

    try:
        with trace.phase("connect"):
            errors = await asyncio.gather(*(attempt(a) for a in targets))
            silent = [e for e in errors if isinstance(e, _Unanswered)]
            if silent:  # what the engine's timeout would have found, found early
                raise _early(trace, silent)
            failures = [e for e in errors if e is not None]
            if len(failures) == len(targets):
                raise first_error(failures)
    finally:  # the connection the next layer uses is left for it (probes._stream); the others close
        _stream.leave_first(spec, targets, connected)
    if failures:
        trace.note(partial=True)


class _Unanswered(OSError):
    """Both connects to one address unanswered past their route's bound."""

    def __init__(self, address: str, waited: float, estimate: dict[str, Fact]) -> None:
        super().__init__(errno.ETIMEDOUT, "no answer to two connects")
        self.address, self.waited, self.estimate = address, waited, estimate


class _PathTracer:
    """Where an unanswered connect dies (probes._hops), traced beside it from its retry (its route's
    bound passed) or, where no bound holds, from `localise_after`; one path per check, the first
    silent address's. A connect answered in time costs one timer, no task. Stopped when the connect
    ends; what answered by then stays in the evidence."""

    def __init__(self, trace: Trace, address: str, spec: Spec) -> None:
        self._trace, self._address, self._port = trace, address, spec.port
        self._task: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(spec.localise_after, self.start)

    def start(self) -> None:
        self._timer.cancel()
        if self._task is None and "path" not in self._trace.facts:
            self._task = asyncio.ensure_future(localise(self._trace, self._address, self._port, "tcp"))

    async def stop(self) -> None:
        self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _traced(trace: Trace) -> Fact:
    path = trace.facts.get("path")
    return path.get("address") if isinstance(path, dict) else None


async def _connect(address: str, port: int, rtt: Estimator | None, tries: list[float],
                   on_retry: Callable[[], None]) -> socket.socket:
    """One address's connect: a socket that the peer accepted, or its error. With the run's estimator,
    unanswered after the route's bound it gets one retry (`on_retry` is called then); both unanswered
    after the bound raise _Unanswered. `tries` gets each SYN's time, for the evidence."""
    if rtt is None:
        return await connect(address, port)
    pending: dict[asyncio.Task[socket.socket], socket.socket] = {}
    patient = False  # a retry that never left the node: only the engine's timeout decides then

    async def one(sock: socket.socket) -> socket.socket:
        sent = time.monotonic()
        tries.append(sent)  # connect() sends the SYN in this same step
        try:
            await connect(address, port, sock)
        except ConnectionRefusedError:
            rtt.add(address, time.monotonic() - sent)  # a RST answers too; the loop's lag only adds patience
            raise
        rtt.add(address, _handshake_rtt(sock) or time.monotonic() - sent)
        return sock

    async def start() -> None:
        sock = socket.socket(family(address), socket.SOCK_STREAM)  # the node's limit raises here
        pending[asyncio.ensure_future(one(sock))] = sock
        await asyncio.sleep(0)  # the task's first step, its SYN, runs before this resumes (FIFO)

    def bound() -> float | None:
        return None if patient else rtt.bound(address)

    try:
        await start()
        while True:
            if not await wait_any(pending, tries[-1], bound, rtt) and not _answered(pending.values()):
                if len(tries) > 1:
                    raise _Unanswered(address, time.monotonic() - tries[0], rtt.fact(address))
                on_retry()
                try:
                    await start()
                except OSError as exc:
                    if not local_limit(exc):
                        raise
                    patient = True
                continue
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                pending.pop(task)
                error = task.exception()
                if error is None:
                    return task.result()
                if pending and isinstance(error, OSError) and local_limit(error):
                    patient = True  # this one never left the node: the other decides, at the engine's timeout
                    continue
                raise error  # the peer's answer (or the only connect's own error) speaks for the address
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for sock in pending.values():  # cancelled, or connected beside the one returned
            sock.close()


def _handshake_rtt(sock: socket.socket) -> float | None:
    """The kernel's own round trip of the handshake (tcp_info's tcpi_rtt, in microseconds), free of
    the event loop's lag; None where it has none (a retransmitted SYN without timestamps)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    (rtt_us,) = struct.unpack_from("I", info, _TCPI_RTT)
    return rtt_us / 1e6 if rtt_us else None


def _answered(connects: Iterable[socket.socket]) -> bool:
    """Whether the kernel already holds an answer for one of the connects (writable: connected or
    failed) that the event loop has not handed over yet: a busy loop must never make a verdict."""
    poll = select.poll()
    for sock in connects:
        poll.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
    return bool(poll.poll(0))


def _early(trace: Trace, silent: list[_Unanswered]) -> EarlyTimeout:
    """The verdict the engine's timeout would give, now, with the estimate it rests on."""
    waited = max(e.waited for e in silent)
    estimate = silent[0].estimate
    trace.note(early_verdict=True, waited_ms=ms(waited), rtt_estimate=estimate)
    shown = ", ".join(e.address for e in silent)
    return EarlyTimeout(f"no answer within {waited:.2g}s during connect (two SYNs to {shown}; early verdict: "
                        f"{estimate['samples']} connects on this route answered in {estimate['srtt_ms']} ms on "
                        f"average, {estimate['slowest_ms']} ms at most)")


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


def _tries(tries: list[float]) -> dict[str, Fact]:
    """`tries` in an attempt's evidence only when a retry was sent."""
    return {"tries": len(tries)} if len(tries) > 1 else {}
