"""WebSocket upgrade and one ping/pong, as Jupyter and the compute instance terminal need: HTTPS
can work while a proxy or firewall strips the Upgrade headers, refuses the upgrade, or closes
the connection right after it.

We open the TCP connection (or the proxy's CONNECT tunnel) ourselves and hand websockets the
socket: the connect phase then stays separate from the upgrade, the address stays pinned, and
websockets (>= 15) cannot pick a proxy from the environment behind the engine's back."""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus

from probes import _net
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, local_limit
from probes.specs import Proxy
from probes.specs import WebSocketSpec as Spec


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Pass on 101 with a valid handshake and an answered ping. Through a proxy the proxy
    resolves the target, so `addresses` may then be empty."""
    trace.note(addresses_ok=[], via_proxy=spec.proxy is not None,
               proxy=spec.proxy.shown if spec.proxy else None)
    parts = urlsplit(spec.url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    with trace.phase("connect"):
        if spec.proxy:
            address, sock = None, await _tunnel(spec.proxy, spec.host, port, trace)
        else:
            address, sock = await _net.connect_first(_net.require(addresses), port)
    try:
        with trace.phase("upgrade"):
            await _upgrade(spec, sock, _net.tls_context(spec.cafile) if secure else None, trace)
    finally:
        sock.close()  # normally already closed with the connection; not when the upgrade never began
    if address is not None:
        trace.passed(address)


async def _upgrade(spec: Spec, sock: socket.socket, context: ssl.SSLContext | None, trace: Trace) -> None:
    try:
        ws = await connect(spec.url, sock=sock, ssl=context, server_hostname=spec.host if context else None,
                           proxy=None, open_timeout=None)
    except InvalidStatus as exc:
        trace.note(status=exc.response.status_code)
        raise ProbeError(Reason.WS_UPGRADE_REFUSED,
                         f"HTTP {exc.response.status_code} {exc.response.reason_phrase} "
                         "to the upgrade") from exc
    except InvalidMessage as exc:
        if isinstance(exc.__cause__, (OSError, EOFError)):
            raise  # closed or reset instead of a response: classify reads the cause
        raise ProbeError(Reason.WS_UPGRADE_INVALID,
                         f"not a valid HTTP response to the upgrade: {exc}") from exc
    except InvalidHandshake as exc:
        raise ProbeError(Reason.WS_UPGRADE_INVALID,
                         f"upgrade answered, but mangled: {exc}") from exc
    trace.note(status=ws.response.status_code if ws.response else None,
               server=ws.response.headers.get("Server") if ws.response else None)
    try:
        await (await ws.ping())
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd else None
        trace.note(close_code=code)
        raise ProbeError(Reason.WS_CLOSED_EARLY,
                         f"closed right after the upgrade (close code {code})") from exc
    finally:
        await ws.close()


async def _tunnel(proxy: Proxy, host: str, port: int, trace: Trace) -> socket.socket:
    """An HTTP CONNECT tunnel through the proxy to host:port (the proxy resolves host)."""
    if proxy.scheme != "http":
        raise ProbeError(Reason.PROXY_UNREACHABLE,
                         f"cannot tunnel a WebSocket through {proxy.shown}: only http:// proxies are supported")
    try:
        if _net.is_ip(proxy.host):
            sock = await _net.connect(proxy.host, proxy.port)
        else:  # the proxy's own name resolves the way applications resolve it
            infos = await asyncio.get_running_loop().getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
            _, sock = await _net.connect_first(_net.ordered(str(i[4][0]) for i in infos), proxy.port)
    except OSError as exc:
        trace.note(proxy_errno=_net.errno_name(exc))
        if local_limit(exc):
            raise  # no socket to the proxy could be opened here: the node's limit, not the proxy
        raise ProbeError(Reason.PROXY_UNREACHABLE,
                         f"cannot connect to the proxy: {exc.strerror or exc}") from exc
    try:
        status, headers = await _connect_request(sock, host, port, proxy.user, proxy.password)
    except BaseException:
        sock.close()
        raise
    if status != 200:
        sock.close()
        trace.note(proxy_status=status,
                   proxy_authenticate=[v for k, v in headers if k == "proxy-authenticate"])
        raise ProbeError(_net.proxy_reason(status), f"proxy answered CONNECT with {status}")
    return sock


async def _connect_request(sock: socket.socket, host: str, port: int, user: str | None,
                           password: str | None) -> tuple[int, list[tuple[str, str]]]:
    loop = asyncio.get_running_loop()
    request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        request += f"Proxy-Authorization: Basic {token}\r\n"
    await loop.sock_sendall(sock, (request + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:  # the peer sends nothing past the head before we speak again
        chunk = await loop.sock_recv(sock, 4096)
        if not chunk:
            raise ProbeError(Reason.PROXY_DENIED,
                             "the proxy closed the connection instead of answering CONNECT")
        head += chunk
    status_line, *lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    try:
        status = int(status_line.split()[1])
    except (IndexError, ValueError):
        raise ProbeError(Reason.PROXY_DENIED,
                         f"not an HTTP answer to CONNECT: {status_line[:60]!r}") from None
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    return status, headers
