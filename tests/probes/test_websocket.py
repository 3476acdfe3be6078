"""websocket probe against websockets servers on loopback, raw peers that answer the upgrade
wrongly, and the CONNECT proxy double."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from http import HTTPStatus

import pytest
import trustme
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.utils import accept_key

from agent import engine
from agent.model import Check
from probe_loopback import (
    Serve,
    StreamHandler,
    plaintext,
    proxy,
    reset_after_read,
    server_context,
    silent,
)
from probes import websocket
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, classify
from probes.specs import Proxy

pytest_plugins = ["probe_peers"]

NAME = "svc.test"
WsServer = Callable[..., Awaitable[int]]


async def stay_open(ws: ServerConnection) -> None:
    await ws.wait_closed()


async def hang_up(ws: ServerConnection) -> None:
    """Upgrade, then close at once: what an inspecting proxy with a short idle timeout does."""


def forbidden(connection: ServerConnection, request: Request) -> Response:
    return connection.respond(HTTPStatus.FORBIDDEN, "blocked by policy\n")


async def test_upgrade(ws_server: WsServer, ca: trustme.CA, cafile: str, trace: Trace) -> None:
    port = await ws_server(stay_open, tls=server_context(ca.issue_cert(NAME)))
    await websocket.run(websocket.Spec(f"wss://{NAME}:{port}/api/kernels", NAME, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.facts["status"] == 101 and trace.facts["addresses_ok"] == ["127.0.0.1"]
    assert [p.name for p in trace.phases] == ["connect", "upgrade"] and trace.current is None


async def test_refused(ws_server: WsServer, trace: Trace) -> None:
    port = await ws_server(stay_open, process_request=forbidden)
    with pytest.raises(ProbeError) as info:
        await websocket.run(websocket.Spec(f"ws://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.WS_UPGRADE_REFUSED
    assert "HTTP 403" in info.value.detail
    assert trace.facts["status"] == 403 and trace.current == "upgrade"


async def test_closed_early(ws_server: WsServer, trace: Trace) -> None:
    port = await ws_server(hang_up)
    with pytest.raises(ProbeError) as info:
        await websocket.run(websocket.Spec(f"ws://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.WS_CLOSED_EARLY
    assert trace.facts["close_code"] == 1000 and trace.current == "upgrade"


BAD_ACCEPT = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n")


@pytest.mark.parametrize(("handler", "reason"), [
    (plaintext(BAD_ACCEPT), Reason.WS_UPGRADE_INVALID),
    (plaintext(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Reason.WS_UPGRADE_REFUSED),
    (plaintext(b"\x00\x01garbage\r\n\r\n"), Reason.WS_UPGRADE_INVALID),
    (plaintext(b""), Reason.TCP_CLOSED),
    (reset_after_read, Reason.TCP_RESET),
], ids=["bad-accept", "plain-200", "not-http", "closed", "reset"])
async def test_broken_upgrades(handler: StreamHandler, reason: Reason, serve: Serve, trace: Trace) -> None:
    """The probe owns the I/O (websockets' sans-I/O client), so an RST during the upgrade keeps its
    errno (tcp.reset) where websockets' own client reported it as EOF (tcp.closed)."""
    port = await serve(handler)
    with pytest.raises(Exception) as info:  # noqa: PT011 (any error: the classification below is the assertion)
        await websocket.run(websocket.Spec(f"ws://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    got = info.value.reason if isinstance(info.value, ProbeError) else classify(info.value)
    assert got is reason
    assert trace.current == "upgrade"


async def test_stalled_upgrade(serve: Serve, trace: Trace, unit: float) -> None:
    port = await serve(silent)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await websocket.run(websocket.Spec(f"ws://{NAME}:{port}/", NAME), ("127.0.0.1",), trace)
    assert trace.current == "upgrade"


async def test_through_proxy(ws_server: WsServer, serve: Serve, ca: trustme.CA, cafile: str, trace: Trace) -> None:
    port = await ws_server(stay_open, tls=server_context(ca.issue_cert(NAME)))
    proxy_port = await serve(proxy(200))
    via = Proxy.parse(f"http://127.0.0.1:{proxy_port}")
    spec = websocket.Spec(f"wss://{NAME}:{port}/", NAME, proxy=via, cafile=cafile)
    await websocket.run(spec, (), trace)
    assert trace.facts["status"] == 101 and trace.facts["via_proxy"] is True


@pytest.mark.parametrize(("code", "reason"), [
    (407, Reason.PROXY_AUTH_REQUIRED), (403, Reason.PROXY_DENIED), (504, Reason.PROXY_UPSTREAM_FAILED),
])
async def test_proxy_refuses_connect(code: int, reason: Reason, serve: Serve, trace: Trace) -> None:
    proxy_port = await serve(proxy(code, "Proxy-Authenticate: NTLM\r\n" if code == 407 else ""))
    spec = websocket.Spec(f"wss://{NAME}/", NAME, proxy=Proxy.parse(f"http://bob:pw@127.0.0.1:{proxy_port}"))
    with pytest.raises(ProbeError) as info:
        await websocket.run(spec, (), trace)
    assert info.value.reason is reason
    assert trace.facts["proxy_status"] == code and trace.current == "connect"
    assert trace.facts["proxy"] == f"http://***@127.0.0.1:{proxy_port}"
    if code == 407:
        assert trace.facts["proxy_authenticate"] == ["NTLM"]


async def test_proxy_unreachable(refused_port: int, trace: Trace) -> None:
    spec = websocket.Spec(f"wss://{NAME}/", NAME, proxy=Proxy.parse(f"http://127.0.0.1:{refused_port}"))
    with pytest.raises(ProbeError) as info:
        await websocket.run(spec, (), trace)
    assert info.value.reason is Reason.PROXY_UNREACHABLE
    assert trace.facts["proxy_errno"] == "ECONNREFUSED" and trace.current == "connect"


@pytest.mark.skipif(os.geteuid() != 0, reason="binds port 80, which needs root (CI runs as root)")
async def test_a_proxy_url_without_a_port_is_dialled_on_its_scheme_port(
        ws_server: WsServer, serve: Serve, ca: trustme.CA, cafile: str, trace: Trace) -> None:
    """HTTPS_PROXY=http://host is port 80 to every client on the node and to the planner's check of
    the proxy; the tunnel dialled 8080 once, so TCP passed while every WebSocket check failed."""
    port = await ws_server(stay_open, tls=server_context(ca.issue_cert(NAME)))
    await serve(proxy(200), host="127.0.0.2", port=80)
    spec = websocket.Spec(f"wss://{NAME}:{port}/", NAME, proxy=Proxy.parse("http://127.0.0.2"), cafile=cafile)
    await websocket.run(spec, (), trace)
    assert trace.facts["status"] == 101 and trace.facts["proxy"] == "http://127.0.0.2:80"


async def upgrade_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A peer that accepts the upgrade, then never answers a frame: no pong, no close."""
    head = await reader.readuntil(b"\r\n\r\n")
    key = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key:"))
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")
    await writer.drain()
    while await reader.read(4096):
        pass


async def test_a_silent_peer_ends_the_check_within_its_window(serve: Serve, unit: float) -> None:
    """Issue 10: after a 101 the close handshake waited up to 10 s past the check's window (websockets'
    close_timeout against a silent peer). The probe owns the I/O now: the engine's window ends it in
    its upgrade phase. The outer bound is a hang guard far below those 10 s, not a timing."""
    port = await serve(upgrade_then_silence)
    spec = websocket.Spec(f"ws://{NAME}:{port}/", NAME)
    check = Check(id=f"websocket:{NAME}:{port}", spec=spec, host=NAME, port=port, protocol="tcp",
                  requirements=("test",))
    async with asyncio.timeout(60 * unit):
        result = await engine.attempt(check, ("127.0.0.1",), timeout=6 * unit)
    assert (result.reason, result.phase) == (Reason.WS_TIMEOUT, "upgrade")
    assert result.evidence["status"] == 101
