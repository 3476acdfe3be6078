"""Early verdicts for silent peers, in the spirit of nmap's timing (RFC 6298's estimator): what the
run's own connects say about how fast each route answers, and how long a probe may wait on that
basis before it calls a silent peer silent.

A sample is one TCP connect's round trip: the kernel's own measurement of the handshake (tcp_info),
or for a RST (and a connect without one) the time from the SYN to the answer as the event loop saw
it, whose lag only makes the estimate more patient. Samples are kept per route: the kernel's
outgoing interface and gateway for the address (the main routing table, read once per run) and
whether the address is private (inside the VNet) or public, since on an Azure node one default
route carries both a private endpoint a millisecond away and a service across the internet.

A route's bound B = max(FLOOR, SRTT + 4 RTTVAR, SLOWEST_FACTOR x its slowest sample), once it has
MIN_SAMPLES samples and only while B <= CEILING; otherwise there is no bound and the engine's
timeout is the only wait. The estimator lives in the run's shared objects (`probes._net.Shared`),
so concurrent checks feed one; a lone probe call outside a run has none and makes no early verdict.
The engine still owns the window: every wait here ends at the engine's cancellation at the latest."""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from probes._net import is_private, run_shared
from probes._trace import Fact

# A far path must never be judged by its near neighbours: the verdict comes after two bounds (the
# first connect kept running through both), so a SYN-ACK has at least 2 x FLOOR = 400 ms to arrive,
# above the longest terrestrial round trips (about 300 ms antipodal); nmap's own floor is 100 ms.
FLOOR = 0.2
SLOWEST_FACTOR = 3.0  # a route that has answered in x may hold a destination a few times farther
CEILING = 1.0  # slower routes (B above nmap's initial RTT timeout) wait for the engine's timeout
MIN_SAMPLES = 3
ALPHA, BETA = 1 / 8, 1 / 4  # RFC 6298's gains
ROUTE_TABLES = (Path("/proc/net/route"), Path("/proc/net/ipv6_route"))
_RTF_UP, _RTF_GATEWAY, _RTF_REJECT = 0x1, 0x2, 0x200


class EarlyTimeout(TimeoutError):
    """A probe's own timeout verdict, reached before the engine's window ended because the run's
    estimator says the peer would have answered by now: the engine reads it as its own timeout (same
    reason, same phase, same treatment of passed addresses), with this detail."""


@dataclass(frozen=True, slots=True)
class Rtt:
    """One route's smoothed round-trip time (RFC 6298), in seconds."""

    srtt: float = 0.0
    rttvar: float = 0.0
    samples: int = 0
    slowest: float = 0.0

    def add(self, rtt: float) -> Rtt:
        if not self.samples:
            return Rtt(rtt, rtt / 2, 1, rtt)
        return Rtt((1 - ALPHA) * self.srtt + ALPHA * rtt, (1 - BETA) * self.rttvar + BETA * abs(self.srtt - rtt),
                   self.samples + 1, max(self.slowest, rtt))

    @property
    def bound(self) -> float | None:
        """How long a connect on this route may stay unanswered before it counts as silent; None:
        too few samples, or a route too slow for an early verdict to be worth its risk."""
        if self.samples < MIN_SAMPLES:
            return None
        bound = max(FLOOR, self.srtt + 4 * self.rttvar, SLOWEST_FACTOR * self.slowest)
        return bound if bound <= CEILING else None

    def fact(self, route: str) -> dict[str, Fact]:
        bound = self.bound
        return {"route": route, "srtt_ms": _ms(self.srtt), "rttvar_ms": _ms(self.rttvar), "samples": self.samples,
                "slowest_ms": _ms(self.slowest), "bound_ms": None if bound is None else _ms(bound)}


@dataclass(frozen=True, slots=True)
class Route:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    interface: str
    gateway: str | None  # None: on-link
    metric: int


def parse_routes(ipv4: str, ipv6: str) -> tuple[Route, ...]:
    """The usable routes of /proc/net/route (hex in host byte order) and /proc/net/ipv6_route."""
    routes: list[Route] = []
    for line in ipv4.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8 or not int(fields[3], 16) & _RTF_UP or int(fields[3], 16) & _RTF_REJECT:
            continue
        destination, gateway, mask = (ipaddress.IPv4Address(int(f, 16).to_bytes(4, sys.byteorder))
                                      for f in (fields[1], fields[2], fields[7]))
        network = ipaddress.IPv4Network(f"{destination}/{mask}", strict=False)
        routes.append(Route(network, fields[0], str(gateway) if int(fields[3], 16) & _RTF_GATEWAY else None,
                            int(fields[6])))
    for line in ipv6.splitlines():
        fields = line.split()
        if len(fields) < 10 or not int(fields[8], 16) & _RTF_UP or int(fields[8], 16) & _RTF_REJECT:
            continue
        network6 = ipaddress.IPv6Network(f"{ipaddress.IPv6Address(bytes.fromhex(fields[0]))}/{int(fields[1], 16)}",
                                         strict=False)
        hop = ipaddress.IPv6Address(bytes.fromhex(fields[4]))
        routes.append(Route(network6, fields[9], str(hop) if int(fields[8], 16) & _RTF_GATEWAY else None,
                            int(fields[5], 16)))
    return tuple(routes)


def read_routes() -> tuple[Route, ...]:
    """The node's routing table; unreadable (no /proc, the descriptor limit) is an empty one."""
    texts = []
    for path in ROUTE_TABLES:
        try:
            texts.append(path.read_text())
        except OSError:
            texts.append("")
    return parse_routes(*texts)


def route_of(address: str, routes: Collection[Route]) -> str:
    """The route key of an address: the longest matching prefix (then the lowest metric) of the main
    table, and the address's scope. Loopback is the kernel's local table, never in the main one."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    if ip.is_loopback:
        return "lo, loopback"
    scope = "private" if is_private(str(ip)) else "public"
    matching = [r for r in routes if r.network.version == ip.version and ip in r.network]
    if not matching:
        return f"no route, {scope}"
    best = max(matching, key=lambda r: (r.network.prefixlen, -r.metric))
    return f"{best.interface} {'via ' + best.gateway if best.gateway else 'on-link'}, {scope}"


class Estimator:
    """The run's RTT estimate per route, fed by the connects of every check, read by the probes that
    decide how long to wait. The event loop is single-threaded, so concurrent checks share it safely."""

    def __init__(self, routes: Collection[Route]) -> None:
        self._routes = tuple(routes)
        self._by_address: dict[str, str] = {}
        self._rtt: dict[str, Rtt] = {}
        self._changed: asyncio.Future[None] | None = None

    def route(self, address: str) -> str:
        if address not in self._by_address:
            self._by_address[address] = route_of(address, self._routes)
        return self._by_address[address]

    def rtt(self, address: str) -> Rtt:
        return self._rtt.get(self.route(address), Rtt())

    def bound(self, address: str) -> float | None:
        return self.rtt(address).bound

    def fact(self, address: str) -> dict[str, Fact]:
        return self.rtt(address).fact(self.route(address))

    def add(self, address: str, seconds: float) -> None:
        route = self.route(address)
        self._rtt[route] = self._rtt.get(route, Rtt()).add(seconds)
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    def changed(self) -> asyncio.Future[None]:
        """Done at the next sample: a waiting probe reads its bound again."""
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)  # a VNet's round trips are tens of microseconds


def estimator() -> Estimator | None:
    """The current run's estimator, made (and the routing table read) on first use; None outside a run."""
    scope = run_shared()
    return None if scope is None else scope.get("rtt-estimator", lambda: Estimator(read_routes()))


async def wait_any(futures: Collection[asyncio.Future[Any]], since: float, limit: Callable[[], float | None],
                   rtt: Estimator | None) -> bool:
    """Wait until one of `futures` is done (True) or `limit()` seconds have passed since `since` on the
    monotonic clock (False). `limit` is read again at every sample the estimator learns; None: no limit
    yet, so only a future or the engine's cancellation ends the wait."""
    while not any(f.done() for f in futures):
        left = limit()
        timeout = None if left is None else since + left - time.monotonic()
        if timeout is not None and timeout <= 0:
            return False
        waits: set[asyncio.Future[Any]] = {*futures, rtt.changed()} if rtt is not None else {*futures}
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    return True
