"""WebSocket upgrade and one ping/pong, as Jupyter and the compute instance terminal need: HTTPS
can work while a proxy or firewall strips the Upgrade headers, refuses the upgrade, or closes
the connection right after it.

We open the TCP connection (or the proxy's CONNECT tunnel) ourselves and hand websockets the
socket: the connect phase then stays separate from the upgrade, the address stays pinned, and
websockets (>= 15) cannot pick a proxy from the environment behind the engine's back."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidMessage, InvalidStatus

from probes import _net
from probes._trace import ProbeError, Trace
from probes._tunnel import tunnel
from probes.reasons import Reason
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
            address, sock = None, await tunnel(spec.proxy, spec.host, port, trace)
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
        error = _net.proxy_error(exc.response.headers) if spec.proxy else None
        if error is not None:  # inside an inspecting proxy's TLS: its own error page, not the upgrade's answer
            trace.note(proxy_error=error)
            raise _net.proxy_answer(exc.response.status_code, error) from exc
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
