"""Where a flow dies: copies of the failing flow (same protocol, destination and port) sent with
every hop limit from 1 up to MAX_HOPS at once, on ordinary sockets. A router whose hop limit runs
out answers ICMP time exceeded, and Linux queues that answer on the socket's error queue with the
router's address (IP_RECVERR): no raw socket, no CAP_NET_RAW, and the packets are the flow's own,
so a filter that drops the flow sees the copies exactly as it sees the flow (a port-based rule
drops a TTL-limited SYN to 445 as it drops any SYN to 445, but only where the packet reaches it).

What comes back is raw: per hop limit, who answered and how (`Hop`). `summarize` reads it: the last
hop that answered before the first silence, and whether the flow died at the first hop (nothing
answered at all: Azure's fabric, an NSG or the platform, which never answer time exceeded) or
beyond it (a virtual appliance, a gateway, on-premises: they answered for the lower hop limits).
No timers: the caller's window ends the tracing; answers already in are kept (`hops` is filled as
they arrive), and a hop limit with no answer by then is silent."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from probes._compat import StrEnum
from probes._datagram import exchange, queue_errors, read_errqueue
from probes._net import errno_name, family, ms, run_shared, sockaddr
from probes._trace import Fact, Trace

MAX_HOPS = 12  # an Azure path is 1-3 visible hops; a forced tunnel to on-premises adds a handful
# Paths traced at once in a run: each holds MAX_HOPS sockets beyond its check's own, and flows to one
# service die in one place, so a few traces explain them (the engine keeps their descriptors in reserve)
TRACES_AT_ONCE = 2
TRACE_DESCRIPTORS = TRACES_AT_ONCE * MAX_HOPS
_TIME_EXCEEDED = {socket.AF_INET: 11, socket.AF_INET6: 3}  # ICMP and ICMPv6 types
_PORT_UNREACHABLE = {socket.AF_INET: (3, 3), socket.AF_INET6: (1, 4)}
_ORIGIN_ICMP = {socket.AF_INET: 2, socket.AF_INET6: 3}  # SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6


class Answer(StrEnum):
    """How a hop limit ended. Stable codes: they are the report's evidence."""

    TIME_EXCEEDED = "time-exceeded"  # a router on the way: the packet got this far
    UNREACHABLE = "unreachable"  # ICMP destination unreachable (a reject, no route) from `address`
    REACHED = "reached"  # the destination (or something answering as it) accepted
    REFUSED = "refused"  # a TCP reset, or a UDP port unreachable, from the destination's address
    SILENT = "silent"  # nothing came back within the window


@dataclass(frozen=True, slots=True)
class Hop:
    ttl: int
    answer: Answer
    address: str | None = None  # who answered (the ICMP sender; the destination for reached/refused)
    rtt_ms: float | None = None


class Dies(StrEnum):
    """Where the flow died, as far as the node can see."""

    REACHED = "reached"  # the copies reached the destination: the flow is not dropped on the way
    FIRST_HOP = "first-hop"  # nothing answered at any hop limit: the NIC's NSG, the fabric, the platform
    BEYOND_FIRST_HOP = "beyond-first-hop"  # hops answered, then silence: an appliance, a gateway, on-premises
    REJECTED = "rejected"  # something on the way answered unreachable


@dataclass(frozen=True, slots=True)
class PathSummary:
    dies: Dies
    last_answered: Hop | None  # the highest hop limit answered before the first silence
    first_silent: int | None  # the lowest hop limit nothing answered
    hops: tuple[Hop, ...]  # every hop limit up to the destination (or MAX_HOPS), ascending

    def facts(self) -> dict[str, Fact]:
        return {
            "dies": self.dies.value,
            "last_answered": None if self.last_answered is None else {
                "ttl": self.last_answered.ttl, "address": self.last_answered.address},
            "first_silent": self.first_silent,
            "hops": [{"ttl": h.ttl, "answer": h.answer.value, "address": h.address, "rtt_ms": h.rtt_ms}
                     for h in self.hops],
        }

    def line(self, destination: str) -> str:
        """The compact path for a text report: `node → 10.0.0.4 → 10.1.0.1 → * → 10.2.0.9:445 (dies past hop 2)`."""
        shown = ["node"]
        for hop in self.hops:
            if hop.answer in (Answer.REACHED, Answer.REFUSED):
                break
            shown.append(hop.address or "?" if hop.answer is not Answer.SILENT else "*")
            if hop.answer is Answer.SILENT:
                break
        where = {Dies.REACHED: "reached", Dies.FIRST_HOP: "no hop answered",
                 Dies.BEYOND_FIRST_HOP: f"dies past hop {self.last_answered.ttl if self.last_answered else 0}",
                 Dies.REJECTED: "rejected on the way"}[self.dies]
        return " → ".join([*shown, destination]) + f" ({where})"


def summarize(hops: Sequence[Hop], limit: int = MAX_HOPS) -> PathSummary:
    """Read the answers per hop limit (any order, each limit at most once; a limit absent is silent).
    The path ends at the lowest limit that reached the destination; above it every copy reaches it
    too and says nothing more."""
    by_ttl = {hop.ttl: hop for hop in hops}
    path: list[Hop] = []
    for ttl in range(1, limit + 1):
        hop = by_ttl.get(ttl, Hop(ttl, Answer.SILENT))
        path.append(hop)
        if hop.answer in (Answer.REACHED, Answer.REFUSED):
            break
    first_silent = next((h.ttl for h in path if h.answer is Answer.SILENT), None)
    before = [h for h in path if first_silent is None or h.ttl < first_silent]
    last = before[-1] if before else None
    if any(h.answer in (Answer.REACHED, Answer.REFUSED) for h in before):
        dies = Dies.REACHED
    elif any(h.answer is Answer.UNREACHABLE for h in before):
        dies = Dies.REJECTED
    elif last is None:
        dies = Dies.FIRST_HOP
    else:
        dies = Dies.BEYOND_FIRST_HOP
    return PathSummary(dies, last, first_silent, tuple(path))


async def localise(trace: Trace, address: str, port: int, protocol: str, payload: bytes = b"") -> None:
    """Trace a failing flow's path into the check's evidence (`path`), each hop as it answers, so
    the engine's window can end it at any moment and the answers so far are the report's. For a
    probe to start beside the attempt it has given up waiting on; cancel it when the probe ends."""
    scope = run_shared()
    if scope is not None and scope.trace_limit < 1:
        return  # the descriptor limit leaves no room for traces (the engine's budget)
    slots = scope.get("trace-slots", lambda: asyncio.Semaphore(scope.trace_limit)) if scope is not None else None
    if slots is not None and slots.locked():
        return  # as many traces as the run keeps descriptors for: this flow goes untraced
    async with slots if slots is not None else contextlib.nullcontext():
        answered: list[Fact] = []
        path: dict[str, Fact] = {"address": address, "port": port, "protocol": protocol, "limit": MAX_HOPS,
                                 "hops": answered}
        trace.note(path=path)
        try:
            await _trace(address, port, protocol, payload, answered)
        except OSError as exc:  # a copy this node could not send (EMFILE): its silence would say nothing
            path["local_error"] = errno_name(exc) or str(exc)


async def _trace(address: str, port: int, protocol: str, payload: bytes, answered: list[Fact]) -> None:
    def keep(hop: Hop) -> None:
        answered.append({"ttl": hop.ttl, "answer": hop.answer.value, "address": hop.address, "rtt_ms": hop.rtt_ms})

    if protocol == "udp":
        await trace_udp(address, port, payload, keep)
    else:
        await trace_tcp(address, port, keep)


def from_facts(path: Fact) -> tuple[PathSummary, str] | None:
    """The summary and destination ("address:port") of a `path` fact that localise recorded; None
    without one, or when a copy could not be sent from this node (then the silent hop limits are
    the node's own failure, not the path's)."""
    if not isinstance(path, dict) or path.get("local_error"):
        return None
    recorded, limit = path.get("hops"), path.get("limit")
    hops = [_hop(entry) for entry in recorded if isinstance(entry, dict)] if isinstance(recorded, list) else []
    return (summarize([h for h in hops if h is not None], limit if isinstance(limit, int) else MAX_HOPS),
            f"{path.get('address')}:{path.get('port')}")


def _hop(entry: dict[str, Fact]) -> Hop | None:
    ttl, answer, address, rtt = entry.get("ttl"), entry.get("answer"), entry.get("address"), entry.get("rtt_ms")
    if not isinstance(ttl, int) or answer not in set(Answer):
        return None
    return Hop(ttl, Answer(str(answer)), address if isinstance(address, str) else None,
               float(rtt) if isinstance(rtt, (int, float)) else None)


OnHop = Callable[[Hop], None]


async def trace_tcp(address: str, port: int, on_hop: OnHop, limit: int = MAX_HOPS) -> None:
    """A SYN to address:port with every hop limit 1..limit at once; `on_hop` gets each answer as
    it comes. Returns when every limit has answered; the caller's window ends the rest."""
    await _together(_tcp_copy(address, port, ttl, on_hop) for ttl in range(1, limit + 1))


async def _tcp_copy(address: str, port: int, ttl: int, on_hop: OnHop) -> None:
    fam = family(address)
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        queue_errors(sock, ttl)
        start = time.monotonic()
        try:
            await asyncio.get_running_loop().sock_connect(sock, sockaddr(address, port))
        except ConnectionRefusedError:
            on_hop(Hop(ttl, Answer.REFUSED, address, ms(time.monotonic() - start)))
        except OSError:
            on_hop(_from_icmp(read_errqueue(sock), fam, ttl, start, address))
        else:
            on_hop(Hop(ttl, Answer.REACHED, address, ms(time.monotonic() - start)))
    finally:
        sock.close()


async def trace_udp(address: str, port: int, payload: bytes, on_hop: OnHop, limit: int = MAX_HOPS) -> None:
    """The datagram to address:port with every hop limit at once, as trace_tcp. Only for a flow
    whose destination answers (a DNS query): a silent service (UDP 5831) leaves the hops past the
    last router silent whether or not it got the datagram."""
    await _together(_udp_copy(address, port, payload, ttl, on_hop) for ttl in range(1, limit + 1))


async def _together(copies: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Every copy at once; one that fails (a socket this node cannot open) ends the others too, so
    none is left waiting on its socket after the trace."""
    tasks = [asyncio.ensure_future(copy) for copy in copies]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _udp_copy(address: str, port: int, payload: bytes, ttl: int, on_hop: OnHop) -> None:
    start = time.monotonic()
    answered = await exchange(address, port, payload, attempts=1, interval=math.inf, hop_limit=ttl)
    if answered.reply is not None:
        on_hop(Hop(ttl, Answer.REACHED, address, ms(time.monotonic() - start)))
    elif answered.icmp is not None:
        on_hop(_from_icmp(answered.icmp, family(address), ttl, start, address))


def _from_icmp(icmp: Mapping[str, Fact] | None, fam: socket.AddressFamily, ttl: int, start: float,
               destination: str) -> Hop:
    """The error queue says who answered and how; an error without an ICMP answer (a local one)
    tells nothing about the path, and is taken as silence. A port unreachable from the destination
    itself is the destination's own answer."""
    rtt = ms(time.monotonic() - start)
    if icmp is None or icmp.get("origin") != _ORIGIN_ICMP[fam]:
        return Hop(ttl, Answer.SILENT)
    offender = icmp.get("offender")
    sender = offender if isinstance(offender, str) else None
    if icmp.get("type") == _TIME_EXCEEDED[fam]:
        return Hop(ttl, Answer.TIME_EXCEEDED, sender, rtt)
    if (icmp.get("type"), icmp.get("code")) == _PORT_UNREACHABLE[fam] and sender == destination:
        return Hop(ttl, Answer.REFUSED, sender, rtt)
    return Hop(ttl, Answer.UNREACHABLE, sender, rtt)
