"""One connection per endpoint, carrying the layers (probes._stream), through the engine against real
loopback servers that count what they see: TCP accepts and TLS handshakes. Also the certificate facts
of a verified handshake, read without cryptography, against cryptography's own reading."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

import probes.tcp
from agent import engine
from agent.model import Check
from lab import pki
from probe_loopback import UNIT, server_context
from probes import _net, _stream, tls
from probes._trace import Trace
from probes.reasons import Reason, Status
from probes.specs import HttpSpec, Spec, TcpSpec, TlsSpec, WebSocketSpec

pytest_plugins = ["probe_peers"]

NAME = "svc.test"
UPGRADE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Accept: %s\r\n\r\n")


@dataclass
class Counted:
    """What a counting server saw: TCP accepts, completed TLS handshakes, requests read."""

    accepts: int = 0
    handshakes: int = 0
    requests: list[bytes] = field(default_factory=list)


Answer = Callable[[int, bytes, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def ok(_: int, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nServer: counted\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    await writer.drain()


@pytest.fixture
async def counted(ca: trustme.CA) -> Callable[..., Awaitable[tuple[int, Counted]]]:
    """A TLS server on 127.0.0.1 that counts accepts and handshakes (TLS started by hand, after the
    accept), then hands each request head to `answer(connection_number, head, reader, writer)`."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []

    async def start(answer: Answer = ok) -> tuple[int, Counted]:
        seen = Counted()
        context = server_context(ca.issue_cert(NAME))

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            seen.accepts += 1
            number = seen.accepts
            try:
                await writer.start_tls(context)
                seen.handshakes += 1
                head = await reader.readuntil(b"\r\n\r\n")
                seen.requests.append(head)
                await answer(number, head, reader, writer)
            except (OSError, EOFError, asyncio.IncompleteReadError, ssl.SSLError):
                pass  # the client hung up: part of some tests
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1]), seen

    yield start
    for server in servers:
        server.close()
    for writer in writers:
        writer.close()
    for server in servers:
        await server.wait_closed()


def check(spec: Spec, needs: str | None = None) -> Check:
    port = spec.port if isinstance(spec, (TcpSpec, TlsSpec)) else int(spec.url.rsplit(":", 1)[1].strip("/"))
    return Check(id=f"{spec.layer.value}:{NAME}:{port}", spec=spec, host="127.0.0.1", port=port, protocol="tcp",
                 requirements=("test",), needs=needs)


def chain(port: int, cafile: str, *above: str) -> list[Check]:
    """tcp -> tls -> each of `above` ("http", "websocket") on 127.0.0.1:port, named NAME."""
    tcp = check(TcpSpec(host=NAME, port=port))
    layer = check(TlsSpec(host=NAME, port=port, cafile=cafile), needs=tcp.id)
    tops = {"http": HttpSpec(url=f"https://{NAME}:{port}/", host=NAME, cafile=cafile),
            "websocket": WebSocketSpec(url=f"wss://{NAME}:{port}/", host=NAME, cafile=cafile)}
    return [tcp, layer, *(check(tops[name], needs=layer.id) for name in above)]


Counting = Callable[..., Awaitable[tuple[int, Counted]]]


async def test_an_https_endpoint_is_one_connect_and_one_handshake(counted: Counting, cafile: str) -> None:
    """Before, the tcp check, the tls check and the http request each connected (3 accepts) and the
    server saw 2 handshakes. Each result keeps its own phases and says whose connection it used."""
    port, seen = await counted()
    tcp, layer, top = await engine.run(chain(port, cafile, "http"), timeout=40 * UNIT)
    assert [r.status for r in (tcp, layer, top)] == [Status.PASS] * 3
    assert (seen.accepts, seen.handshakes, len(seen.requests)) == (1, 1, 1)
    assert layer.evidence["connection"] == "handed" and layer.evidence["connection_from"] == tcp.check.id
    assert top.evidence["connection"] == "handed" and top.evidence["connection_from"] == layer.check.id
    assert [p.name for p in layer.phases] == ["handshake"] and [p.name for p in top.phases] == ["request"]
    assert top.evidence["status"] == 200 and top.evidence["server"] == "counted"
    assert f"Host: {NAME}:{port}\r\n".encode() in seen.requests[0]


async def test_the_second_consumer_of_a_tls_check_connects_itself(
        counted: Callable[..., Awaitable[tuple[int, Counted]]], cafile: str) -> None:
    """tls:host:443 serves an http and a websocket check: one takes the connection, the other opens
    its own (TCP and TLS inside its connect phase), and both pass."""

    async def both(_: int, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if b"upgrade: websocket" not in head.lower():
            await ok(_, head, reader, writer)
            return
        from websockets.utils import accept_key

        key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        writer.write(UPGRADE % accept_key(key.decode()).encode())
        frame = await reader.readexactly(2)  # the ping: masked, short
        payload = await reader.readexactly(4 + (frame[1] & 0x7F))
        data = bytes(b ^ payload[i % 4] for i, b in enumerate(payload[4:]))
        writer.write(bytes([0x8A, len(data)]) + data)  # its pong
        await writer.drain()
        await reader.read(4096)  # the close frame

    port, seen = await counted(both)
    results = await engine.run(chain(port, cafile, "http", "websocket"), timeout=40 * UNIT)
    assert [r.status for r in results] == [Status.PASS] * 4
    tops = {r.check.layer.value: r.evidence["connection"] for r in results[2:]}
    assert sorted(tops.values()) == ["fresh", "handed"]
    assert (seen.accepts, seen.handshakes) == (2, 2)
    fresh = next(r for r in results[2:] if r.evidence["connection"] == "fresh")
    assert fresh.phases[0].name == "connect"


async def test_a_handed_connection_the_server_closed_is_retried_afresh(
        counted: Callable[..., Awaitable[tuple[int, Counted]]], cafile: str) -> None:
    """A server that closes its first connection without answering (an idle timeout on a kept
    connection): the http check tries once more on a connection of its own and passes."""

    async def first_closes(number: int, head: bytes, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        if number > 1:
            await ok(number, head, reader, writer)

    port, seen = await counted(first_closes)
    _, _, top = await engine.run(chain(port, cafile, "http"), timeout=40 * UNIT)
    assert top.status is Status.PASS and top.evidence["connection"] == "fresh"
    assert top.evidence["connection_retry"] == "closed by the peer without an answer"
    assert top.evidence["connection_from"] == f"tls:{NAME}:{port}"
    assert seen.accepts == 2


async def test_only_what_a_consumer_will_take_is_parked(cafile: str) -> None:
    """The engine registers a consumer for each check above a connection (its `needs`): a tcp check
    with nothing above it, or whose tls check is skipped by policy, parks nothing; a tls check whose
    http check will run parks for it."""
    tcp, layer, top = chain(443, cafile, "http")
    skipped = Check(id=layer.id, spec=layer.spec, host=layer.host, port=layer.port, protocol="tcp",
                    requirements=("test",), needs=tcp.id, skip=Reason.SKIP_POLICY, skip_detail="blocked")
    for checks, parks in (([tcp], ()), ([tcp, skipped], ()), ([tcp, layer, top], (tcp, layer))):
        async with _net.shared() as scope:
            scope.park_limit = 8
            engine._expect_handovers(scope, checks)
            for below in (tcp, layer):
                key = _stream.offered(below.spec)
                assert key is not None
                assert scope.park(key, "127.0.0.1", _Closed()) is (below in parks)


class _Closed:
    closed = False

    def close(self) -> None:
        self.closed = True


async def test_a_parked_connection_closes_when_its_consumer_ends_without_it() -> None:
    async with _net.shared() as scope:
        scope.park_limit = 1
        scope.expect("key", "tcp:x", "tls:x")
        first, second = _Closed(), _Closed()
        assert scope.park("key", "127.0.0.1", first)
        assert not scope.park("other", "127.0.0.1", second)  # no consumer, and the place is full
        scope.finished("tls:x")
        assert first.closed
        scope.expect("key", "tcp:x", "tls:y")
        assert scope.park("key", "127.0.0.1", second)
    assert second.closed  # the run ended


# -- certificate facts without cryptography -----------------------------------------------------

def lab_contexts(directory: Path) -> tuple[str, list[tuple[str, ssl.SSLContext]]]:
    """Server contexts with the lab's own certificates (lab.pki: a root and an issuing CA, leaves for
    a name and an address), and the bundle that trusts them."""
    root = pki.create_ca(directory, "root", pki.LAB_ROOT)
    issuing = pki.create_ca(directory, "issuing", pki.LAB_CA, signer=root)
    contexts = []
    for index, (issuer, name) in enumerate([(root, NAME), (issuing, NAME), (root, "127.0.0.1")]):
        pem = directory / f"leaf{index}.pem"
        pem.write_bytes(pki.Issuer(issuer).issue(name))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(pem)
        contexts.append((name, context))
    return str(root.cert), contexts


async def test_a_verified_certificate_is_described_as_cryptography_describes_it(
        serve: Callable[..., Awaitable[int]], tmp_path: Path) -> None:
    """describe_verified (OpenSSL's parse, hashlib, the key id from the DER) gives describe_cert's
    facts, key for key, for the lab's certificates and for names RFC 4514 must escape."""
    bundle, contexts = lab_contexts(tmp_path)
    odd = trustme.CA(organization_name='Contoso, "Corp" +<1>; #2 ')
    odd.cert_pem.write_to_path(str(tmp_path / "odd.pem"))
    contexts.append((NAME, server_context(odd.issue_cert(NAME, "10.1.2.3", "::1"))))
    bundles = [bundle] * 3 + [str(tmp_path / "odd.pem")]

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)

    for (name, context), cafile in zip(contexts, bundles, strict=True):
        port = await serve(silent, tls=context)
        stream = await _stream.connect(["127.0.0.1"], port)
        try:
            verified = await _stream.handshake(stream.sock, _net.tls_context(cafile), name, Trace())
            assert verified.tls is not None
            der = verified.tls.getpeercert(binary_form=True)
            assert der is not None
            assert tls.describe_verified(verified.tls) == tls.describe_cert(der)
        finally:
            stream.close()


async def test_a_parked_connection_the_peer_closed_is_not_used(serve: Callable[..., Awaitable[int]], ca: trustme.CA,
                                                               cafile: str) -> None:
    """A server that closes the first connection before the client spoke (an idle timeout while it
    was parked): the tls check sees it closed (FIN already in) and connects afresh, noting why."""
    first_closed = asyncio.Event()
    context = server_context(ca.issue_cert(NAME))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not first_closed.is_set():
            writer.get_extra_info("socket").shutdown(socket.SHUT_WR)  # the FIN, sent now
            first_closed.set()
            await reader.read(4096)
            return
        await writer.start_tls(context)
        await reader.read(4096)

    port = await serve(handler)
    tcp, layer, _ = chain(port, cafile, "http")
    trace = Trace()
    async with _net.shared() as scope:
        scope.park_limit = 1
        engine._expect_handovers(scope, [tcp, layer])
        assert isinstance(tcp.spec, TcpSpec) and isinstance(layer.spec, TlsSpec)
        await probes.tcp.run(tcp.spec, ("127.0.0.1",), Trace())  # parks its connection for the tls check
        await first_closed.wait()
        await tls.run(layer.spec, ("127.0.0.1",), trace)
    assert trace.facts["connection"] == "fresh" and trace.facts["connection_retry"] == "closed by the peer before use"
    assert trace.facts["connection_from"] == tcp.id and [p.name for p in trace.phases] == ["connect", "handshake"]
