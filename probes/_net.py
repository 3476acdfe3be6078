"""Small helpers shared by the probes: address ordering, socket addresses, per-address connects,
TLS contexts, what the checks of one run share, and the proxy status tables. One place, so
tcp/tls/http/websocket agree."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Mapping
from contextvars import ContextVar
from typing import Protocol, TypeVar, cast

from probes._trace import ProbeError
from probes.reasons import Reason, local_limit


def family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def ordered(addresses: Iterable[str]) -> list[str]:
    """Deduplicated, IPv4 first (stable otherwise): Azure endpoints are IPv4 and an IPv6 attempt
    on an IPv4-only VM fails locally, so IPv4 is the address that speaks for the service."""
    unique = list(dict.fromkeys(addresses))
    return sorted(unique, key=lambda a: family(a) == socket.AF_INET6)


def sockaddr(address: str, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    if family(address) == socket.AF_INET6:
        host, _, scope = address.partition("%")
        scope_id = socket.if_nametoindex(scope) if scope and not scope.isdigit() else int(scope or 0)
        return (host, port, 0, scope_id)
    return (address, port)


def split_hostport(entry: str, default_port: int) -> tuple[str, int]:
    """"ip", "ip:port", "[v6]" or "[v6]:port" (a bare IPv6 literal has no port)."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, int(port)
    return entry, default_port


PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918: VNet and private endpoints
    "100.64.0.0/10",  # shared address space, also usable inside a VNet
    "fc00::/7",  # IPv6 unique local
))


def is_private(address: str) -> bool:
    """Private in the sense that matters for private endpoints: inside a VNet's address space."""
    ip = ipaddress.ip_address(address.partition("%")[0])
    return any(ip in net for net in PRIVATE_NETWORKS if net.version == ip.version)


def errno_name(exc: BaseException) -> str | None:
    code = getattr(exc, "errno", None)
    return errno.errorcode.get(code) if isinstance(code, int) else None


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def since_ms(start: float) -> float:
    return ms(time.monotonic() - start)


_TCPI_LAST_DATA_RECV, _TCP_INFO_HEAD = 52, 56  # <linux/tcp.h> struct tcp_info: tcpi_last_data_recv (ms ago)


def received_at(sock: socket.socket) -> float:
    """When the kernel received the connection's last data, on the monotonic clock: now less
    tcp_info's tcpi_last_data_recv. A busy event loop reads an answer late; the kernel's time of
    its arrival is the path's and the peer's, not the loop's (now, where the socket has no tcp_info)."""
    now = time.monotonic()
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_HEAD)
    except OSError:
        return now
    if len(info) < _TCP_INFO_HEAD:
        return now
    ago_ms: int = struct.unpack_from("I", info, _TCPI_LAST_DATA_RECV)[0]
    return now - ago_ms / 1000


def require(addresses: tuple[str, ...]) -> list[str]:
    """The engine feeds each layer the addresses the layer below passed; none means nothing to do."""
    if not addresses:
        raise ProbeError(Reason.SKIP_DEPENDENCY, "no address to probe: the layer below passed none")
    return ordered(addresses)


async def connect(address: str, port: int, sock: socket.socket | None = None) -> socket.socket:
    """One TCP connect on its own non-blocking socket, so the errno of this address is kept (`sock`:
    one the caller made, to watch it). The socket is closed on any failure, including cancellation
    at the engine's deadline."""
    sock = socket.socket(family(address), socket.SOCK_STREAM) if sock is None else sock
    try:
        sock.setblocking(False)
        # As HTTP clients do (curl, urllib3, aiohttp): a request written right after the TLS Finished would
        # otherwise wait a round trip for that segment's ACK (Nagle), doubling first_byte_ms on a far path.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, sockaddr(address, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def connect_first(addresses: list[str], port: int) -> tuple[str, socket.socket]:
    """Connect to the first address that accepts, in order; all failing raises the first error, or the
    first of the node's own limits (an address never tried leaves the outcome open)."""
    errors: list[OSError] = []
    for address in addresses:
        try:
            return address, await connect(address, port)
        except OSError as exc:
            errors.append(exc)
    raise first_error(errors)


def first_error(errors: list[OSError]) -> OSError:
    """The error that speaks for a set of addresses that all failed: a local limit when any address met
    one (it was never really tried, so no verdict holds for the set), else the first address's own."""
    return next((e for e in errors if local_limit(e)), errors[0])


def local_shortage() -> OSError | None:
    """The node's own limit right now, if it has met one: the error of a socket this process cannot open
    at this moment. For failures that do not say why (getaddrinfo's EAI_NONAME, a missing issuer) and
    may be that limit in disguise; asked at once, in the thread that failed."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    except OSError as exc:
        return exc if local_limit(exc) else None
    return None


T = TypeVar("T")


class Closable(Protocol):
    def close(self) -> None: ...


class Shared:
    """What the checks of one run share instead of building per check: TLS contexts (loading a
    system-size store costs ~20 ms of CPU each time) and the RTT estimator (probes/_timing.py), made
    on first use (a making that raises, EMFILE, is not kept, so the next check tries again; only
    objects no check mutates, or made to be fed by concurrent checks as the estimator is: they serve
    concurrent checks), and the parking place where a check leaves its connection for the check above it
    (probes._stream). A connection is parked only for a consumer the engine said will come
    (`expect`), at most `park_limit` at once (descriptors: the engine counts them), and closed when
    its last expected consumer finished without taking it, or when the run ends."""

    def __init__(self) -> None:
        self._items: dict[Hashable, object] = {}
        self.park_limit = 0  # set by the engine; 0: nothing is parked
        self.trace_limit = 0  # paths traced at once (probes._hops), set by the engine from the descriptor limit
        self._parked: dict[Hashable, tuple[str, Closable]] = {}  # key -> (address, connection)
        self._makers: dict[Hashable, str] = {}  # key -> the check whose connection it is
        self._waiting: dict[Hashable, int] = {}  # key -> consumers still to come
        self._consumers: dict[str, Hashable] = {}  # consumer check -> the key it takes

    def expect(self, key: Hashable, maker: str, consumer: str) -> None:
        """The engine, before the run: check `consumer` will take the connection check `maker` leaves
        under `key`."""
        self._makers[key] = maker
        self._waiting[key] = self._waiting.get(key, 0) + 1
        self._consumers[consumer] = key

    def park(self, key: Hashable, address: str, connection: Closable) -> bool:
        """Keep `connection` (to `address`) for the consumer that will come; False when none will or
        the place is full: the caller closes it."""
        if not self._waiting.get(key) or key in self._parked or len(self._parked) >= self.park_limit:
            return False
        self._parked[key] = (address, connection)
        return True

    def take(self, key: Hashable, address: str) -> tuple[Closable, str] | None:
        """The connection parked under `key`, with the check that made it, when it goes to `address`
        (one to another address is closed); None when none is parked."""
        parked = self._parked.pop(key, None)
        if parked is None:
            return None
        if parked[0] != address:
            parked[1].close()
            return None
        return parked[1], self._makers[key]

    def finished(self, consumer: str) -> None:
        """The engine, as a consumer check ends (taken, skipped or cancelled): a connection no other
        expected consumer will take is closed now."""
        key = self._consumers.pop(consumer, None)
        if key is None:
            return
        self._waiting[key] -= 1
        if not self._waiting[key] and (parked := self._parked.pop(key, None)) is not None:
            parked[1].close()

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        if key not in self._items:
            self._items[key] = make()
        return cast(T, self._items[key])

    async def aclose(self) -> None:
        """The run ended: every connection still parked is closed."""
        for _, connection in self._parked.values():
            connection.close()
        self._parked.clear()


_SHARED: ContextVar[Shared | None] = ContextVar("probes_shared", default=None)


@contextlib.asynccontextmanager
async def shared() -> AsyncIterator[Shared]:
    """One run's shared objects, seen by every probe awaited or started as a task inside (a
    context variable: the probe signature stays `run(spec, addresses, trace)`). Outside, each
    probe call makes its own, as a lone check would."""
    scope = Shared()
    token = _SHARED.set(scope)
    try:
        yield scope
    finally:
        _SHARED.reset(token)
        await scope.aclose()


def run_shared() -> Shared | None:
    """The current run's shared objects; None outside a run."""
    return _SHARED.get()


def tls_context(cafile: str | None, verify: bool = True) -> ssl.SSLContext:
    """The client context of a trust configuration: one per run (see Shared), else a new one.
    Shared safely: no probe changes a context after it is made, and Python never resumes a TLS
    session unless asked, so every handshake verifies the chain it gets."""
    scope = _SHARED.get()
    if scope is None:
        return _load_context(cafile, verify)
    return scope.get(("tls", cafile, verify), lambda: _load_context(cafile, verify))


def _load_context(cafile: str | None, verify: bool) -> ssl.SSLContext:
    """The node's trust store (honours SSL_CERT_FILE), or a given CA bundle; unverified only to
    capture what a failing peer presents (no store to load then).

    OpenSSL loads the default CA file silently: under a descriptor limit it leaves the store empty, and
    every handshake would then fail as tls.untrusted. An empty store where that file exists is loaded
    again explicitly, so the node's own error (EMFILE) is raised instead of a false verdict."""
    if verify:
        context = ssl.create_default_context(cafile=cafile)
        default = ssl.get_default_verify_paths().cafile  # None when the file does not exist
        if cafile is None and default and not context.cert_store_stats()["x509"]:
            with contextlib.suppress(ssl.SSLError):  # a bundle without certificates: verification says so
                context.load_verify_locations(cafile=default)
        return context
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# What a proxy says went wrong in an answer it made itself, for the detail: squid's error pages
# (X-Squid-Error) and RFC 9209's Proxy-Status error types.
_PROXY_ERRORS = {
    "ERR_ACCESS_DENIED": "its access rules (squid: http_access) deny this destination",
    "http_request_denied": "its access rules deny this destination",
    "destination_ip_prohibited": "its access rules deny this destination",
    "ERR_CONNECT_FAIL": "it could not connect to the service",
    "connection_refused": "it could not connect to the service",
    "connection_timeout": "it could not connect to the service",
    "destination_unavailable": "it could not connect to the service",
    "ERR_DNS_FAIL": "it could not resolve the service's name",
    "dns_error": "it could not resolve the service's name",
    "dns_timeout": "it could not resolve the service's name",
    "ERR_SECURE_CONNECT_FAIL": "it could not open TLS to the service: an inspecting proxy that does not trust the "
                               "service's certificate chain, or TLS blocked beyond the proxy",
    "tls_certificate_error": "it could not open TLS to the service: an inspecting proxy that does not trust the "
                             "service's certificate chain",
    "tls_protocol_error": "it could not open TLS to the service",
    "ERR_READ_TIMEOUT": "the service did not answer it in time",
    "connection_read_timeout": "the service did not answer it in time",
}
_PROXY_DENIALS = frozenset({"ERR_ACCESS_DENIED", "http_request_denied", "destination_ip_prohibited"})


def proxy_error(headers: Mapping[str, str]) -> str | None:
    """The error a proxy names in an answer it made itself (squid's X-Squid-Error, an RFC 9209
    Proxy-Status member's `error`); None for an answer the service made and the proxy relayed.
    `headers`: by lower-case name (or case-insensitive)."""
    squid = headers.get("x-squid-error", "").split()
    if squid:
        return squid[0]
    for member in headers.get("proxy-status", "").split(","):
        for parameter in member.split(";")[1:]:
            key, _, value = parameter.strip().partition("=")
            if key == "error" and value.strip('"'):
                return value.strip('"')
    return None


def proxy_answer(status: int, error: str) -> ProbeError:
    """An answer the proxy made itself is no answer of the service: denied, or not reached."""
    reason = Reason.PROXY_DENIED if error in _PROXY_DENIALS else Reason.PROXY_UPSTREAM_FAILED
    meaning = _PROXY_ERRORS.get(error, "it did not reach the service")
    return ProbeError(reason, f"the proxy answered {status} itself ({error}): {meaning}")


def proxy_reason(status: int) -> Reason:
    """What a proxy's non-200 answer to CONNECT means."""
    if status == 407:
        return Reason.PROXY_AUTH_REQUIRED
    if status in (502, 503, 504):
        return Reason.PROXY_UPSTREAM_FAILED
    return Reason.PROXY_DENIED
