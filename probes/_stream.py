"""One connection carrying the layers: a connected socket, with TLS over memory BIOs once it carries
it, that a check hands to the check above it (tcp -> tls -> http or websocket, tcp -> smb, tcp ->
plain http). So an HTTPS endpoint costs one TCP connect and one TLS handshake, as a client's own
request does, and each layer's result still has its own phases.

A check parks the connection of the address the next layer uses (the first of `ordered(passed)`) in
the run's parking place (probes._net.Shared), only when the engine registered a consumer for it
(`handover`); the consumer takes it, or connects itself when none is parked (the second consumer of a
tls check, a full parking place, a lone probe call outside a run). A handed connection is keyed by
what identifies it (the layer that made it, host name, port and trust configuration: `offered`,
`wanted`) and taken only for the address it goes to.

The TLS handshake runs over memory BIOs on our own socket rather than asyncio's SSL transport: the
bytes a non-TLS peer sent are then at hand, and asyncio's own handshake timer stays out of the way
(the engine owns time)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Hashable
from urllib.parse import urlsplit

from probes._net import connect_first, local_shortage, ms, received_at, run_shared, tls_context
from probes._trace import ProbeError, Trace
from probes._tunnel import tunnel
from probes.reasons import PROTOCOL_MISMATCH_REASONS, Reason
from probes.specs import HttpSpec, Proxy, SmbSpec, Spec, TcpSpec, TlsSpec, WebSocketSpec

_TLS_RECORD_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec, alert, handshake, application_data
_ISSUER_NOT_FOUND = frozenset({2, 20})  # the verify codes of an issuer looked up in the store and not found
CHUNK = 65536  # the most one read takes from the socket; every reader bounds its own total


class Stream:
    """A connected non-blocking socket to `address`, and its TLS when it carries TLS. `handed_by` is
    the check whose connection this is when it was handed over (None: this check connected)."""

    def __init__(self, sock: socket.socket, address: str, tls: ssl.SSLObject | None = None,
                 incoming: ssl.MemoryBIO | None = None, outgoing: ssl.MemoryBIO | None = None) -> None:
        self.sock = sock
        self.address = address
        self.tls = tls
        self._incoming = incoming or ssl.MemoryBIO()
        self._outgoing = outgoing or ssl.MemoryBIO()
        self.handed_by: str | None = None
        self.received = 0  # bytes of the peer's answer so far (after the TLS handshake)

    async def send(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        if self.tls is None:
            await loop.sock_sendall(self.sock, data)
            return
        self.tls.write(data)
        await loop.sock_sendall(self.sock, self._outgoing.read())

    async def recv(self) -> bytes:
        """The next bytes the peer sent (at most CHUNK); b"" once it closed (EOF, or TLS close_notify)."""
        loop = asyncio.get_running_loop()
        if self.tls is None:
            data = await loop.sock_recv(self.sock, CHUNK)
            self.received += len(data)
            return data
        while True:
            try:
                data = self.tls.read(CHUNK)
                self.received += len(data)
                return data
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            if pending := self._outgoing.read():  # a key update's answer
                await loop.sock_sendall(self.sock, pending)
            chunk = await loop.sock_recv(self.sock, CHUNK)
            if chunk:
                self._incoming.write(chunk)
            else:
                self._incoming.write_eof()

    def closed_by_peer(self) -> bool:
        """The peer closed or reset this connection while it was parked (nothing we sent is lost):
        a look at the socket without taking anything from it."""
        try:
            return not self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


async def handshake(sock: socket.socket, context: ssl.SSLContext, host: str, trace: Trace,
                    address: str = "") -> Stream:
    """Client handshake on a connected non-blocking socket. A reset or close is TLS_RESET; bytes
    that are not a TLS record (an HTTP error page from a proxy or firewall) are
    TLS_PROTOCOL_MISMATCH, noted as `peer_first_bytes`; other ssl errors propagate. An issuer not
    found while this process cannot open a descriptor is that limit (OpenSSL reads a CA directory's
    files during verification), raised as the OSError, not as an untrusted chain."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    first = b""
    sent: float | None = None  # when the ClientHello left
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in _ISSUER_NOT_FOUND and (shortage := local_shortage()) is not None:
                raise shortage from exc
            raise
        except ssl.SSLError as exc:
            if (first and first[0] not in _TLS_RECORD_TYPES) or exc.reason in PROTOCOL_MISMATCH_REASONS:
                trace.note(peer_first_bytes=first[:64].decode("latin-1"))
                raise ProbeError(Reason.TLS_PROTOCOL_MISMATCH,
                                 f"the peer does not speak TLS; it sent {first[:32]!r}") from exc
            raise
        try:
            if data := outgoing.read():
                sent = time.monotonic() if sent is None else sent
                await loop.sock_sendall(sock, data)
            if done:
                return Stream(sock, address, tls, incoming, outgoing)
            chunk = await loop.sock_recv(sock, CHUNK)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ProbeError(Reason.TLS_RESET,
                             "reset by the peer during the TLS handshake") from exc
        if not chunk:
            raise ProbeError(Reason.TLS_RESET,
                             "the peer closed the connection during the TLS handshake")
        if not first and sent is not None:  # the server's first flight: one round trip and its key exchange
            trace.note(server_hello_ms=ms(max(received_at(sock) - sent, 0.0)))
        first = first or chunk
        incoming.write(chunk)


async def connect(addresses: list[str], port: int) -> Stream:
    """A fresh connection: the first address that accepts, in order (probes._net.connect_first)."""
    address, sock = await connect_first(addresses, port)
    return Stream(sock, address)


async def open_to(host: str, port: int, secure: bool, cafile: str | None, addresses: list[str],
                  proxy: Proxy | None, trace: Trace) -> Stream:
    """A check's own connection to host:port: to the first of `addresses` that accepts, or through a
    CONNECT tunnel of `proxy` (which resolves host); TLS on top when `secure`, with SNI and the name
    check on `host` whatever address was used."""
    if proxy is None:
        stream = await connect(addresses, port)
    else:
        stream = Stream(await tunnel(proxy, host, port, trace), "")
    if not secure:
        return stream
    try:
        return await handshake(stream.sock, tls_context(cafile), host, trace, stream.address)
    except BaseException:
        stream.close()
        raise


# -- hand-over ------------------------------------------------------------------------------------

def offered(spec: Spec) -> Hashable | None:
    """What identifies the connection a check of `spec` leaves for the layer above; None: it leaves none
    (a tunnel through a proxy is the proxy's)."""
    if isinstance(spec, TcpSpec) and spec.proxy is None:
        return ("tcp", spec.host, spec.port)
    if isinstance(spec, TlsSpec):
        return ("tls", spec.host, spec.port, spec.cafile)
    return None


def wanted(spec: Spec) -> Hashable | None:
    """The connection a check of `spec` can carry its own layer on (see `offered`); None: it opens its own."""
    if isinstance(spec, (TlsSpec, SmbSpec)):
        return ("tcp", spec.host, spec.port)
    if isinstance(spec, (HttpSpec, WebSocketSpec)) and spec.proxy is None:
        parts = urlsplit(spec.url)
        secure = parts.scheme in ("https", "wss")
        port = parts.port or (443 if secure else 80)
        return ("tls", spec.host, port, spec.cafile) if secure else ("tcp", spec.host, port)
    return None


def handover(below: Spec, above: Spec) -> Hashable | None:
    """The key under which the check of `below` leaves its connection for the check of `above` (the
    check that needs it), or None when `above` cannot carry its layer on it. For the engine, which
    registers each expected consumer before the run (Shared.expect), so nothing else is ever parked."""
    key = offered(below)
    return key if key is not None and key == wanted(above) else None


def take(spec: Spec, address: str, trace: Trace) -> Stream | None:
    """The connection parked for this check's layer at `address`, if any: this check's now. One the
    peer closed while it was parked is closed and noted (`connection_retry`): the caller connects
    afresh, as an HTTP client does when a kept-alive connection went away."""
    key = wanted(spec)
    scope = run_shared()
    if key is None or scope is None:
        return None
    taken = scope.take(key, address)
    if taken is None:
        return None
    stream, by = taken
    assert isinstance(stream, Stream)
    if stream.closed_by_peer():
        stream.close()
        trace.note(connection_retry="closed by the peer before use", connection_from=by)
        return None
    stream.handed_by = by
    return stream


def retry(stream: Stream, error: BaseException, trace: Trace) -> bool:
    """Whether an exchange that failed on `stream` is tried once more on a fresh connection: a handed
    connection that ended (EOF, reset) before the peer sent one byte of its answer, which on a kept
    connection says nothing of the path. Noted; the caller closes it and connects."""
    ended = isinstance(error, (ConnectionResetError, BrokenPipeError, EOFError)) or (
        isinstance(error, ProbeError) and error.reason is Reason.TCP_CLOSED)
    if stream.handed_by is None or stream.received or not ended:
        return False
    trace.note(connection_retry="closed by the peer without an answer", connection_from=stream.handed_by)
    return True


def leave(spec: Spec, stream: Stream) -> bool:
    """Park this check's connection for the layer above, when one will come for it; False (the caller
    closes it) otherwise."""
    key = offered(spec)
    scope = run_shared()
    return key is not None and scope is not None and scope.park(key, stream.address, stream)


async def exchange_on(stream: Stream | None, connect: Callable[[], Awaitable[Stream]], phase: str,
                      exchange: Callable[[Stream], Awaitable[None]], trace: Trace) -> str:
    """Run a layer's `exchange` inside `phase` on the handed `stream`, else on the one `connect` opens
    (in phase "connect"); a handed stream that ended before any answer (`retry`) is given up for one
    fresh connection. Every stream is closed after. Returns the address the exchange spoke to."""
    handed = stream is not None
    while True:
        if stream is None:
            with trace.phase("connect"):
                stream = await connect()
        note(trace, stream.handed_by)
        try:
            with trace.phase(phase):
                try:
                    await exchange(stream)
                    return stream.address
                except (ProbeError, OSError, EOFError) as exc:
                    if not handed or not retry(stream, exc, trace):
                        raise
        finally:
            stream.close()
        stream, handed = None, False


def note(trace: Trace, handed_by: str | None) -> None:
    """Whose connection this layer ran on: `connection` "handed" (and `connection_from`, the check
    that made it) or "fresh" (after a `connection_retry`, `connection_from` names the one given up)."""
    if handed_by is None:
        trace.note(connection="fresh")
    else:
        trace.note(connection="handed", connection_from=handed_by)


def leave_first(spec: Spec, targets: list[str], connected: dict[str, socket.socket]) -> None:
    """For a check that connected to several addresses: park the connection of the first address in
    `targets` order (the one the next layer takes, `ordered(passed)[0]`), close every other."""
    first = next((a for a in targets if a in connected), None)
    for address, sock in connected.items():
        if address != first or not leave(spec, Stream(sock, address)):
            sock.close()
