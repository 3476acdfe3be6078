"""Real loopback peers for the probe tests: every fault is a server that misbehaves in one way.
All bind 127.0.0.1 on port 0 and are torn down with every connection they accepted, so no test
leaks a socket (filterwarnings=error turns a ResourceWarning into a failure).

A plugin module that each test file loads with `pytest_plugins = ["probe_peers"]`, not a
conftest.py: a second conftest module would replace `conftest` in sys.modules and break
tests/test_guard.py, which imports the root conftest by that name."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol

import dns.message
import dns.rcode
import pytest
import trustme
from aiohttp import web

from probes._trace import Trace

# Every wait in these tests is a multiple of this unit; raise it on a slow machine.
UNIT = 0.05 * float(os.environ.get("PROBE_TEST_TIME_SCALE", "1"))

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DnsHandler = Callable[[dns.message.Message, bool], "dns.message.Message | None"]


class Serve(Protocol):
    async def __call__(self, handler: StreamHandler, *, host: str = ...,
                       tls: ssl.SSLContext | None = ...) -> int: ...


@pytest.fixture
def unit() -> float:
    return UNIT


@pytest.fixture
def trace() -> Trace:
    return Trace()


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start raw stream servers; every connection's writer is closed and every handler task
    cancelled at teardown, whatever the handler was doing."""
    servers: list[asyncio.Server] = []
    writers: list[asyncio.StreamWriter] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: StreamHandler, *, host: str = "127.0.0.1",
                    tls: ssl.SSLContext | None = None) -> int:
        async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)  # type: ignore[arg-type]
            try:
                await handler(reader, writer)
            except (OSError, EOFError, asyncio.IncompleteReadError):
                pass  # the probe hung up: part of most faults
            finally:
                writer.close()

        server = await asyncio.start_server(tracked, host, 0, ssl=tls)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
    for writer in writers:
        writer.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for server in servers:
        await server.wait_closed()


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read, never answer: a middlebox that stalls after the SYN/ACK."""
    while await reader.read(4096):
        pass


async def reset_after_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the first bytes (a ClientHello, a request), then send an RST, as SNI filters do."""
    await reader.read(4096)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def plaintext(reply: bytes) -> StreamHandler:
    """Answer anything with fixed bytes, e.g. an HTTP error page where TLS was expected."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(reply)
        await writer.drain()
    return handler


@pytest.fixture
def refused_port() -> int:
    """A loopback port nobody listens on: bound, then closed (the kernel answers SYNs with RST)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def closed_udp_port() -> int:
    """A loopback UDP port nobody listens on: the kernel answers with ICMP port unreachable."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A listener whose accept queue is full: Linux drops further SYNs (tcp_abort_on_overflow=0),
    so connects hang exactly like a silently dropped SYN. Deterministic on loopback."""
    with socket.socket() as server, socket.socket() as filler:
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        filler.connect(server.getsockname())  # takes the only slot of backlog 0
        yield int(server.getsockname()[1])


@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A bound UDP socket that never replies: open|filtered."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


class _Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def udp_echo() -> AsyncIterator[int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _Echo, local_addr=("127.0.0.1", 0))
    yield int(transport.get_extra_info("sockname")[1])
    transport.close()


# --- DNS -------------------------------------------------------------------------------------

class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, handler: DnsHandler) -> None:
        self.handler = handler

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self.handler(dns.message.from_wire(data), False)
        if response is not None:
            self.transport.sendto(response.to_wire(), addr)  # type: ignore[attr-defined]


@pytest.fixture
async def dns_server(serve: Serve) -> AsyncIterator[Callable[[DnsHandler], Awaitable[str]]]:
    """A nameserver on 127.0.0.1 (UDP and TCP on one port) answering through a per-test handler
    `handler(query, over_tcp) -> response | None`; None means stay silent."""
    transports: list[asyncio.BaseTransport] = []

    async def start(handler: DnsHandler) -> str:
        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            response = handler(dns.message.from_wire(await reader.readexactly(length)), True)
            if response is not None:
                wire = response.to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()

        port = await serve(tcp)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _DnsUdp(handler), local_addr=("127.0.0.1", port))
        transports.append(transport)
        return f"127.0.0.1:{port}"

    yield start
    for transport in transports:
        transport.close()


def dns_reply(query: dns.message.Message, *records: str, rcode: int = dns.rcode.NOERROR,
              truncated: bool = False) -> dns.message.Message:
    """A response with records in zone-file syntax ("name 60 IN A 10.0.0.5"); A/AAAA records of
    the other type than asked are left out, as a real server would."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    qtype = query.question[0].rdtype
    for text in records:
        name, ttl, klass, rtype, data = text.split(maxsplit=4)
        if rtype in ("A", "AAAA") and dns.rdatatype.from_text(rtype) != qtype:
            continue
        response.answer.append(dns.rrset.from_text(name, int(ttl), klass, rtype, data))
    if truncated:
        response.flags |= dns.flags.TC
        response.answer.clear()
    return response


# --- TLS, HTTP, WebSocket ----------------------------------------------------------------------

@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA(organization_name="Microsoft Corporation")


@pytest.fixture(scope="session")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture
async def http_server() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """aiohttp.web apps on loopback: `await http_server(handler, tls=context)` -> port."""
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                    tls: ssl.SSLContext | None = None) -> int:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
        await site.start()
        runners.append(runner)
        return int(runner.addresses[0][1])

    yield start
    for runner in runners:
        await runner.cleanup()


def proxy(status: int, headers: str = "") -> StreamHandler:
    """An HTTP proxy that answers CONNECT with `status`; on 200 it tunnels to the requested
    port on 127.0.0.1 whatever the name (the names in these tests resolve nowhere)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b" ", 2)
        assert method == b"CONNECT", head
        writer.write(f"HTTP/1.1 {status} Proxy Says\r\n{headers}Content-Length: 0\r\n\r\n".encode())
        await writer.drain()
        if status != 200:
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", int(target.rsplit(b":", 1)[1]))
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()
    return handler


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    """A listening port on 127.0.0.1 that never accepts: the kernel completes the handshake."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])
