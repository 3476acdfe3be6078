"""An HTTP CONNECT tunnel through the configured proxy, as the node's clients open one for HTTPS,
WebSocket and other TCP traffic: shared by the http, websocket and tcp probes, so all report the
proxy's refusal the same way (its status, the port it refused, its Proxy-Authenticate offers)."""

from __future__ import annotations

import asyncio
import base64
import socket

from probes import _net
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, local_limit
from probes.specs import Proxy, is_ip

MAX_HEAD = 65536  # the most of a response head read: a hostile peer never ends one


async def tunnel(proxy: Proxy, host: str, port: int, trace: Trace) -> socket.socket:
    """An HTTP CONNECT tunnel through the proxy to host:port (the proxy resolves host)."""
    sock = await to_proxy(proxy, trace)
    try:
        status, headers = await _connect_request(sock, host, port, proxy)
    except BaseException:
        sock.close()
        raise
    if status != 200:
        sock.close()
        trace.note(proxy_status=status,
                   proxy_authenticate=[v for k, v in headers if k == "proxy-authenticate"])
        raise ProbeError(_net.proxy_reason(status), f"proxy answered CONNECT {host}:{port} with {status}")
    return sock


async def _connect_request(sock: socket.socket, host: str, port: int,
                           proxy: Proxy) -> tuple[int, list[tuple[str, str]]]:
    loop = asyncio.get_running_loop()
    credentials = authorization(proxy)
    request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n" + (
        f"Proxy-Authorization: {credentials}\r\n" if credentials else "") + "\r\n"
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:  # the peer sends nothing past the head before we speak again
        if len(head) > MAX_HEAD:
            raise ProbeError(Reason.PROXY_DENIED, f"the proxy's answer to CONNECT has no end within {MAX_HEAD} bytes")
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


async def to_proxy(proxy: Proxy, trace: Trace) -> socket.socket:
    """A TCP connection to the proxy itself; PROXY_UNREACHABLE when it cannot be made (a local limit
    propagates: no socket could be opened here, which says nothing of the proxy)."""
    if proxy.scheme != "http":
        raise ProbeError(Reason.PROXY_UNREACHABLE,
                         f"cannot tunnel through {proxy.shown}: only http:// proxies are supported")
    try:
        if is_ip(proxy.host):
            return await _net.connect(proxy.host, proxy.port)
        # the proxy's own name resolves the way applications resolve it
        infos = await asyncio.get_running_loop().getaddrinfo(proxy.host, proxy.port, type=socket.SOCK_STREAM)
        return (await _net.connect_first(_net.ordered(str(i[4][0]) for i in infos), proxy.port))[1]
    except OSError as exc:
        trace.note(proxy_errno=_net.errno_name(exc))
        if local_limit(exc):
            raise  # no socket to the proxy could be opened here: the node's limit, not the proxy
        raise ProbeError(Reason.PROXY_UNREACHABLE,
                         f"cannot connect to the proxy: {exc.strerror or exc}") from exc


def authorization(proxy: Proxy) -> str | None:
    """The Proxy-Authorization value of the proxy URL's userinfo (Basic); None without one."""
    if proxy.user is None:
        return None
    return "Basic " + base64.b64encode(f"{proxy.user}:{proxy.password or ''}".encode()).decode()
