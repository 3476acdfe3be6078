"""Real loopback peers for the probe tests: every fault is a server that misbehaves in one way.
All bind 127.0.0.1 on port 0 and are torn down with every connection they accepted, so no test
leaks a socket (filterwarnings=error turns a ResourceWarning into a failure).

A plugin module that each test file loads with `pytest_plugins = ["probe_peers"]`, not a
conftest.py: a second conftest module would replace `conftest` in sys.modules and break
tests/test_guard.py, which imports the root conftest by that name. Plain helpers (handlers that
play a fault) live in probe_loopback, which test files import directly."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import dns.message
import pytest
import trustme
from aiohttp import web
from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as serve_websocket

from lab import daemons, samba
from lab import squid as lab_squid
from lab.scenarios import Scenario
from probe_loopback import UNIT, DnsHandler, Serve, StreamHandler, truncated
from probes._trace import Trace


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
                    tls: ssl.SSLContext | None = None, port: int = 0) -> int:
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

        server = await asyncio.start_server(tracked, host, port, ssl=tls)
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
def half_stalled() -> Iterator[int]:
    """One port on two loopback addresses: 127.0.0.2 accepts, 127.0.0.1 has a full accept queue."""
    with socket.socket() as stalled, socket.socket() as filler, socket.socket() as good:
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(0)
        filler.connect(stalled.getsockname())
        port = stalled.getsockname()[1]
        good.bind(("127.0.0.2", port))
        good.listen()
        yield int(port)


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


class _DnsUdp(asyncio.DatagramProtocol):
    def __init__(self, handler: DnsHandler, truncate: bool) -> None:
        self.handler = handler
        self.truncate = truncate

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        response = self.handler(dns.message.from_wire(data))
        if response is not None:
            wire = (truncated(response) if self.truncate else response).to_wire()
            self.transport.sendto(wire, addr)  # type: ignore[attr-defined]


@pytest.fixture
async def dns_server(serve: Serve) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """A nameserver on 127.0.0.1 (UDP and TCP on one port) answering through a per-test
    `handler(query) -> response | None` (None: stay silent): `await dns_server(handler)` gives
    "127.0.0.1:port". With truncate_udp=True, UDP answers come back truncated (TC) and only TCP
    carries the records."""
    transports: list[asyncio.BaseTransport] = []

    async def start(handler: DnsHandler, *, truncate_udp: bool = False) -> str:
        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            response = handler(dns.message.from_wire(await reader.readexactly(length)))
            if response is not None:
                wire = response.to_wire()
                writer.write(struct.pack("!H", len(wire)) + wire)
                await writer.drain()

        port = await serve(tcp)
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _DnsUdp(handler, truncate_udp), local_addr=("127.0.0.1", port))
        transports.append(transport)
        return f"127.0.0.1:{port}"

    yield start
    for transport in transports:
        transport.close()


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA(organization_name="Microsoft Corporation")


@pytest.fixture(scope="session")
def cafile(ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


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


@pytest.fixture
def tcp_listener() -> Iterator[int]:
    """A listening port on 127.0.0.1 that never accepts: the kernel completes the handshake."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield int(server.getsockname()[1])


@pytest.fixture
async def ws_server() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """websockets servers on loopback: `await ws_server(handler, tls=..., process_request=...)`."""
    servers: list[Server] = []

    async def start(handler: Callable[[ServerConnection], Awaitable[None]],
                    tls: ssl.SSLContext | None = None, **options: Any) -> int:
        server = await serve_websocket(handler, "127.0.0.1", 0, ssl=tls, **options)
        servers.append(server)
        return int(next(iter(server.sockets)).getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
def smbd() -> Iterator[Callable[..., int]]:
    """Real samba servers on loopback (127.0.0.1 and ::1): `smbd(max_protocol="SMB2_10")` -> port,
    started as the lab starts its own (lab.samba), torn down with the test. Skips when smbd is not
    installed; `./dev` installs samba, so CI has it. Its files live in a short temporary directory:
    samba's messaging sockets must fit a Unix socket path."""
    if not samba.installed():
        pytest.skip("smbd is not installed (apt-get install samba; ./dev installs it)")
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="smbd-") as root:

        def start(max_protocol: str = "SMB3_11") -> int:
            with socket.socket() as probe:  # a free port: samba binds its own sockets
                probe.bind(("127.0.0.1", 0))
                port = int(probe.getsockname()[1])
            config = samba.configure(Path(root) / str(len(processes)), port=port, max_protocol=max_protocol,
                                     loopback=True)
            processes.append(samba.start(config))
            return port

        try:
            yield start
        finally:
            for process in processes:
                samba.stop(process)


@pytest.fixture
async def squid() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """A real squid on 127.0.0.1 configured by the lab for a scenario's proxy knobs (lab.squid):
    `await squid(scenario)` -> its port. Its DNS server is loopback, so use address targets.
    Skipped where squid cannot run (not root: it switches to its own user; not installed)."""
    if os.geteuid() != 0 or not os.access(lab_squid.BINARY, os.X_OK):
        pytest.skip("a real squid needs root and squid installed (./dev installs it)")
    running: list[daemons.Daemon] = []
    roots: list[Path] = []

    async def start(scenario: Scenario, **settings: Any) -> int:
        """`settings`: lab.squid.prepare's (root_ca, inspection_ca for an ssl-bump scenario)."""
        root = Path(tempfile.mkdtemp(prefix="squid-probe-"))
        roots.append(root)
        root.chmod(0o711)  # squid's user reaches its own directory inside
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        directory = root / "squid"
        settings.setdefault("dns", "127.0.0.1")
        running.append(await lab_squid.start(scenario, directory, listen=("127.0.0.1", port), **settings))
        return port

    yield start
    for daemon in running:
        await daemon.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
