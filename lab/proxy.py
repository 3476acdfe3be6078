"""A forward HTTP proxy in the az namespace: CONNECT tunnels and absolute-URI requests.

It plays a customer's egress proxy in a hub subnet. It resolves names as Azure DNS does in the
scenario (lab.zones) and answers as real proxies do when they are in the way: 407 with a Basic
challenge without the lab's credentials (proxy "auth"), 403 for names on the scenario's deny
list, 502 when it cannot reach the target (no route to the private endpoints, nothing there).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from lab import addresses
from lab.scenarios import Scenario, matches
from lab.zones import zones_of

CREDENTIALS = ("aml-node", "lab-proxy-secret")
"""The user and password the proxy accepts in "auth" mode (the node's environment has none)."""
REALM = "contoso"
AGENT = "Lab-Proxy/1.0"
HEAD_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
_PE_SUBNET = ipaddress.ip_network(addresses.PE_SUBNET)
_HOP_BY_HOP = frozenset({"connection", "proxy-connection", "proxy-authorization", "keep-alive"})


class Refusal(Exception):
    """The proxy's own answer instead of a tunnel or a relayed response."""

    def __init__(self, status: int, reason: str, body: str, *headers: str) -> None:
        super().__init__(f"{status} {reason}: {body}")
        self.status, self.reason, self.body, self.headers = status, reason, body, headers

    def response(self) -> bytes:
        body = f"{self.body}\n".encode()
        lines = [
            f"HTTP/1.1 {self.status} {self.reason}",
            f"Server: {AGENT}",
            "Content-Type: text/plain; charset=utf-8",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *self.headers,
        ]
        return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n" + body


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    host: str
    port: int
    forward: bytes  # what goes upstream first: b"" for CONNECT, the origin-form request otherwise
    authorization: str | None


def parse(head: bytes) -> Request:
    """A proxy request head (through the blank line); Refusal 400 if it is not one."""
    line, *fields = head.decode("latin-1").split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3:
        raise Refusal(400, "Bad Request", "malformed request line")
    method, target, version = parts
    headers = [f.split(":", 1) for f in fields if ":" in f]
    authorization = next(
        (v.strip() for k, v in headers if k.strip().lower() == "proxy-authorization"), None
    )
    if method == "CONNECT":
        host, _, port = target.rpartition(":")
        if not host or not port.isdigit():
            raise Refusal(400, "Bad Request", "CONNECT needs host:port")
        return Request(method, host.strip("[]"), int(port), b"", authorization)
    url = urlsplit(target)
    if url.scheme != "http" or not url.hostname:
        raise Refusal(400, "Bad Request", "only absolute http:// URIs and CONNECT are proxied")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in _HOP_BY_HOP]
    forward = "".join(f"{x}\r\n" for x in [f"{method} {path} {version}", *kept, "Connection: close"])
    return Request(method, url.hostname, url.port or 80, forward.encode() + b"\r\n", authorization)


class Proxy:
    """One scenario's proxy; `serve` binds it to addresses.PROXY:PROXY_PORT."""

    def __init__(self, scenario: Scenario) -> None:
        self._scenario = scenario
        self._zones = zones_of(scenario, addresses.AZURE_DNS)  # the hub's DNS: Azure DNS
        self._authorization = "Basic " + base64.b64encode(":".join(CREDENTIALS).encode()).decode()

    async def serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._client, addresses.PROXY, addresses.PROXY_PORT)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, TimeoutError, asyncio.IncompleteReadError,
                                 asyncio.LimitOverrunError):
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
                request = parse(head)
                upstream_reader, upstream = await self._admit(request)
            except Refusal as refusal:
                writer.write(refusal.response())
                await writer.drain()
            else:
                if request.method == "CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                upstream.write(request.forward)
                await asyncio.gather(_pipe(reader, upstream), _pipe(upstream_reader, writer))
                upstream.close()
        writer.close()

    async def _admit(self, request: Request) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The upstream connection for a request, or the Refusal the proxy answers instead."""
        host = request.host
        if self._scenario.proxy == "auth" and request.authorization != self._authorization:
            raise Refusal(407, "Proxy Authentication Required", "proxy authentication required",
                          f'Proxy-Authenticate: Basic realm="{REALM}"')
        if matches(host, self._scenario.proxy_deny):
            raise Refusal(403, "Forbidden", f"access to {host} is denied by the proxy's policy")
        if request.method == "CONNECT" and self._scenario.proxy_connect_ports \
                and request.port not in self._scenario.proxy_connect_ports:
            raise Refusal(403, "Forbidden", f"CONNECT to port {request.port} is not in SSL_ports")
        try:
            address = self._zones.address_of(host)
        except LookupError:
            raise Refusal(502, "Bad Gateway", f"cannot resolve {host}") from None
        if not self._scenario.proxy_reaches_private and ipaddress.ip_address(address) in _PE_SUBNET:
            raise Refusal(502, "Bad Gateway", f"no route to {address} ({host})")
        try:
            return await asyncio.wait_for(
                asyncio.open_connection(address, request.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            raise Refusal(502, "Bad Gateway", f"cannot connect to {host}:{request.port}") from None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on (the other direction may still be talking); on an
    error, close the writer, which ends the other direction too."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()
