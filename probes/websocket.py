"""WebSocket upgrade and one ping/pong, as Jupyter and the compute instance terminal need: HTTPS
can work while a proxy or firewall strips the Upgrade headers, refuses the upgrade, or closes
the connection right after it.

websockets' sans-I/O client (ClientProtocol) speaks over our own stream (probes._stream): directly,
the tls check's verified connection when it was handed over, else our own (the address pinned, SNI
and Host the name); through a proxy, its CONNECT tunnel. Owning the I/O, nothing outlives the
check's window: after the pong the close frame is sent and the connection closed, with no wait for
the peer's close (the engine's window is the only clock), and websockets can never pick a proxy
from the environment."""

from __future__ import annotations

from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake, InvalidMessage, InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from probes import _net, _stream
from probes._trace import ProbeError, Trace
from probes.reasons import Reason
from probes.specs import WebSocketSpec as Spec

MAX_MESSAGE = 65536  # the most of a frame accepted: a ping's answer is a few bytes
_PING = b"aml-netcheck"


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Pass on 101 with a valid handshake and an answered ping. Through a proxy the proxy
    resolves the target, so `addresses` may then be empty. A handed connection that ends before
    any answer is tried once more afresh."""
    trace.note(addresses_ok=[], via_proxy=spec.proxy is not None,
               proxy=spec.proxy.shown if spec.proxy else None)
    parts = urlsplit(spec.url)
    secure = parts.scheme == "wss"
    targets = [] if spec.proxy else _net.require(addresses)
    stream = _stream.take(spec, targets[0], trace) if targets else None
    address = await _stream.exchange_on(
        stream, lambda: _stream.open_to(spec.host, parts.port or (443 if secure else 80), secure, spec.cafile,
                                        targets, spec.proxy, trace),
        "upgrade", lambda connection: _upgrade(spec, connection, trace), trace)
    if address:
        trace.passed(address)


async def _upgrade(spec: Spec, stream: _stream.Stream, trace: Trace) -> None:
    session = _Session(ClientProtocol(parse_uri(spec.url), max_size=MAX_MESSAGE), stream)
    session.protocol.send_request(session.protocol.connect())
    response = await session.next()
    if session.protocol.handshake_exc is not None:
        _refused(spec, session.protocol.handshake_exc, stream, trace)
    assert isinstance(response, Response)
    trace.note(status=response.status_code, server=response.headers.get("Server"))
    session.protocol.send_ping(_PING)
    while True:
        event = await session.next()
        if isinstance(event, Frame) and event.opcode is Opcode.PONG and event.data == _PING:
            break
        if event is None or (isinstance(event, Frame) and event.opcode is Opcode.CLOSE):
            close = session.protocol.close_rcvd
            trace.note(close_code=close.code if close else None)
            raise ProbeError(Reason.WS_CLOSED_EARLY,
                             f"closed right after the upgrade (close code {close.code if close else None})")
    session.protocol.send_close(1000)
    await session.flush()


class _Session:
    """The protocol's events as they come from the peer's bytes, one at a time."""

    def __init__(self, protocol: ClientProtocol, stream: _stream.Stream) -> None:
        self.protocol = protocol
        self.stream = stream
        self._events: list[Response | Frame] = []
        self._eof = False

    async def next(self) -> Response | Frame | None:
        """The next event (the handshake's response, then frames), after sending what the protocol
        has to say (our request and frames, its answers to the peer's pings and close); None once the
        peer closed the connection or the handshake failed."""
        while True:
            await self.flush()
            self._events += [e for e in self.protocol.events_received() if isinstance(e, (Response, Frame))]
            if self._events:
                return self._events.pop(0)
            if self._eof or self.protocol.handshake_exc is not None:
                return None
            data = await self.stream.recv()
            if data:
                self.protocol.receive_data(data)
            else:
                self._eof = True
                self.protocol.receive_eof()

    async def flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:  # b"" asks for a half-close: the connection is closed whole when the check ends
                await self.stream.send(data)


def _refused(spec: Spec, exc: Exception, stream: _stream.Stream, trace: Trace) -> None:
    """The verdict of a failed handshake: refused (a status), mangled, or closed without an answer."""
    if isinstance(exc, InvalidStatus):
        trace.note(status=exc.response.status_code)
        error = _net.proxy_error(exc.response.headers) if spec.proxy else None
        if error is not None:  # inside an inspecting proxy's TLS: its own error page, not the upgrade's answer
            trace.note(proxy_error=error)
            raise _net.proxy_answer(exc.response.status_code, error) from exc
        raise ProbeError(Reason.WS_UPGRADE_REFUSED,
                         f"HTTP {exc.response.status_code} {exc.response.reason_phrase} to the upgrade") from exc
    if isinstance(exc, InvalidMessage):
        if isinstance(exc.__cause__, EOFError) and not stream.received:
            raise ProbeError(Reason.TCP_CLOSED, "the server closed the connection without answering the upgrade") \
                from exc
        raise ProbeError(Reason.WS_UPGRADE_INVALID, f"not a valid HTTP response to the upgrade: {exc}") from exc
    if isinstance(exc, InvalidHandshake):
        raise ProbeError(Reason.WS_UPGRADE_INVALID, f"upgrade answered, but mangled: {exc}") from exc
    raise exc
