"""Requests through a real squid on loopback, configured as the lab configures it: its answers
(403 outside SSL_ports, 407 with its Basic challenge, and the error pages it makes itself when it
denies a request or cannot reach the service) are the reasons the agent gives, never the
service's answer."""

from __future__ import annotations

import asyncio
import random
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trustme
from aiohttp import web

from lab import squid as lab_squid
from lab.scenarios import Scenario
from probes import http, tcp, websocket
from probes._trace import ProbeError, Trace
from probes.reasons import Reason
from probes.specs import Proxy

pytest_plugins = ["probe_peers"]

Squid = Callable[..., Awaitable[int]]
STOCK = Scenario("stock", "", "", proxy="open", proxy_connect_ports=(443,))
AUTH = Scenario("auth", "", "", proxy="auth")
USER = ":".join(lab_squid.CREDENTIALS)


async def test_a_stock_squid_refuses_connect_outside_ssl_ports(squid: Squid, tcp_listener: int, trace: Trace) -> None:
    via = Proxy.parse(f"http://127.0.0.1:{await squid(STOCK)}")
    with pytest.raises(ProbeError) as info:
        await tcp.run(tcp.Spec("127.0.0.1", tcp_listener, proxy=via), (), trace)
    assert info.value.reason is Reason.PROXY_DENIED
    assert f"127.0.0.1:{tcp_listener}" in info.value.detail
    assert trace.facts["proxy_status"] == 403 and trace.current == "connect"


async def test_an_open_squid_tunnels_to_any_port(squid: Squid, tcp_listener: int, trace: Trace) -> None:
    via = Proxy.parse(f"http://127.0.0.1:{await squid(Scenario('open', '', '', proxy='open'))}")
    await tcp.run(tcp.Spec("127.0.0.1", tcp_listener, proxy=via), (), trace)
    assert trace.facts["via_proxy"] is True


async def test_squid_demands_credentials(squid: Squid, tcp_listener: int, trace: Trace) -> None:
    port = await squid(AUTH)
    with pytest.raises(ProbeError) as info:
        await tcp.run(tcp.Spec("127.0.0.1", tcp_listener, proxy=Proxy.parse(f"http://127.0.0.1:{port}")), (), trace)
    assert info.value.reason is Reason.PROXY_AUTH_REQUIRED
    assert trace.facts["proxy_status"] == 407
    assert trace.facts["proxy_authenticate"] == [f'Basic realm="{lab_squid.REALM}"']


@pytest.mark.parametrize("user", ["aml-node:wrong", USER])
async def test_squid_checks_the_password(squid: Squid, tcp_listener: int, trace: Trace, user: str) -> None:
    """basic_ncsa_auth against the lab's MD5-crypt password file: only the right password passes."""
    via = Proxy.parse(f"http://{user}@127.0.0.1:{await squid(AUTH)}")
    spec = tcp.Spec("127.0.0.1", tcp_listener, proxy=via)
    if user == USER:
        await tcp.run(spec, (), trace)
        assert trace.facts["via_proxy"] is True
    else:
        with pytest.raises(ProbeError) as info:
            await tcp.run(spec, (), trace)
        assert info.value.reason is Reason.PROXY_AUTH_REQUIRED


def test_md5_crypt_matches_glibc() -> None:
    """The known MD5-crypt vector (`openssl passwd -1 -salt saltsalt password`)."""
    assert lab_squid.md5_crypt("password", "saltsalt") == "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"


# -- answers squid makes itself: never the service's ------------------------------------------------

async def answer(request: web.Request) -> web.Response:
    return web.Response(status=503, text="the service itself is unavailable")


async def test_a_destination_squid_denies_is_proxy_denied(squid: Squid, http_server: Callable[..., Awaitable[int]],
                                                          trace: Trace) -> None:
    """Plain HTTP is sent to the proxy as a request, not a CONNECT: squid's 403 (ERR_ACCESS_DENIED)
    for a denied domain is its own answer, not the service's 403."""
    port = await http_server(answer)
    denying = Scenario("deny", "", "", proxy="open", proxy_deny=("127.0.0.1",))
    via = Proxy.parse(f"http://127.0.0.1:{await squid(denying)}")
    with pytest.raises(ProbeError) as info:
        await http.run(http.Spec(f"http://127.0.0.1:{port}/", "127.0.0.1", proxy=via), (), trace)
    assert info.value.reason is Reason.PROXY_DENIED and "ERR_ACCESS_DENIED" in info.value.detail
    assert trace.facts["status"] == 403 and trace.facts["proxy_error"] == "ERR_ACCESS_DENIED"


async def test_a_service_squid_cannot_reach_is_proxy_upstream_failed(squid: Squid, refused_port: int,
                                                                     trace: Trace) -> None:
    via = Proxy.parse(f"http://127.0.0.1:{await squid(Scenario('open', '', '', proxy='open'))}")
    with pytest.raises(ProbeError) as info:
        await http.run(http.Spec(f"http://127.0.0.1:{refused_port}/", "127.0.0.1", proxy=via), (), trace)
    assert info.value.reason is Reason.PROXY_UPSTREAM_FAILED and "ERR_CONNECT_FAIL" in info.value.detail


async def test_the_service_s_own_error_through_squid_is_reachable(
        squid: Squid, http_server: Callable[..., Awaitable[int]], trace: Trace) -> None:
    """The control: the service's own 503, relayed by squid, proves the path."""
    port = await http_server(answer)
    via = Proxy.parse(f"http://127.0.0.1:{await squid(Scenario('open', '', '', proxy='open'))}")
    await http.run(http.Spec(f"http://127.0.0.1:{port}/", "127.0.0.1", proxy=via), (), trace)
    assert trace.facts["status"] == 503 and trace.facts["proxy_error"] is None


def free_loopback(port: int, kind: socket.SocketKind = socket.SOCK_STREAM) -> str:
    """A loopback address whose `port` is free here (the lab's squid bumps port 443 only, and
    asks its DNS server on port 53)."""
    for _ in range(20):
        address = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
        return address
    pytest.skip(f"no free loopback address for port {port}")


class _Answering(asyncio.DatagramProtocol):
    """squid's nameserver: every A question is answered with one address."""

    def __init__(self, address: str) -> None:
        self.address = address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, peer: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        if query.question[0].rdtype == dns.rdatatype.A:
            reply.answer.append(dns.rrset.from_text(query.question[0].name, 60, "IN", "A", self.address))
        self.transport.sendto(reply.to_wire(), peer)  # type: ignore[attr-defined]


@pytest.fixture
def inspection(tmp_path: Path) -> tuple[Path, Path]:
    """An inspection CA the client trusts; squid signs its bumped certificates with it."""
    ca = trustme.CA(organization_name="Corp Proxy")
    cert, key = tmp_path / "inspection.pem", tmp_path / "inspection.key"
    ca.cert_pem.write_to_path(str(cert))
    ca.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.mark.parametrize("layer", ["https", "websocket"])
async def test_an_inspecting_squid_that_cannot_verify_the_service(
        layer: str, squid: Squid, inspection: tuple[Path, Path], ca: trustme.CA, trace: Trace) -> None:
    """An ssl-bump squid without the service's CA in its store: every request inside the bumped
    TLS gets squid's 503 ERR_SECURE_CONNECT_FAIL, which is no answer of the service (before, an
    HTTPS check passed on it and the WebSocket check blamed the upgrade)."""
    name, origin, nameserver = "origin.lab.test", free_loopback(443), free_loopback(53, socket.SOCK_DGRAM)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(name).configure_cert(context)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, origin, 443, ssl_context=context).start()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Answering(origin), local_addr=(nameserver, 53))
    try:
        port = await squid(Scenario("bump", "", "", proxy="open", proxy_inspects=True), dns=nameserver,
                           inspection_ca=inspection)
        via, cafile = Proxy.parse(f"http://127.0.0.1:{port}"), str(inspection[0])
        request = (http.run(http.Spec(f"https://{name}/", name, proxy=via, cafile=cafile), (), trace)
                   if layer == "https" else
                   websocket.run(websocket.Spec(f"wss://{name}/", name, proxy=via, cafile=cafile), (), trace))
        with pytest.raises(ProbeError) as info:
            await request
    finally:
        transport.close()
        await runner.cleanup()
    assert info.value.reason is Reason.PROXY_UPSTREAM_FAILED
    assert "ERR_SECURE_CONNECT_FAIL" in info.value.detail and "TLS" in info.value.detail
