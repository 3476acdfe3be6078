"""The "Azure" side of a lab, run in the az namespace: `python -m lab.servers CONFIG.json`.

Hosts DNS (Azure DNS and a custom DNS server), IMDS and plain HTTP on 80, HTTPS/WebSocket on
443, TCP listeners and the UDP 5831 responder on one asyncio loop, and runs the real servers the
scenario has as its children: squid as the forward proxy (lab.squid), nginx in front of the
compute instance (lab.nginx); 445 is a real samba the lab starts beside it (lab.samba), or here a
silent listener. Prints `ready` on stdout once every listener is bound and every real server
accepts. Exits on SIGTERM, and on EOF on stdin: the owning process holds the other end of that
pipe, so the servers never outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from lab import addresses, daemons, dnsserver, nginx, squid
from lab.config import ServerConfig
from lab.pki import Issuer
from lab.web import SniCertificates, http_app, https_app
from lab.zones import zones_of
from probes import _compat

TCP_PORTS = (8787, 18881)
SMB_PORT = 445  # a real samba (lab.samba, started by the lab), or `_silent_listener` in smb_silent scenarios
UDP_PORT = 5831
_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux; Python 3.11 does not export it


async def _tcp_listener(port: int) -> asyncio.Server:
    """Accepts, reads briefly, closes: enough for a TCP reachability probe."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with _compat.timeout(1.0):
                await reader.read(4096)
        writer.close()

    return await asyncio.start_server(client, "0.0.0.0", port)


async def _silent_listener(port: int) -> asyncio.Server:
    """Accepts and reads until the peer hangs up, never answering: a middlebox that terminates the port."""

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while await reader.read(4096):
                pass
        writer.close()

    return await asyncio.start_server(client, "0.0.0.0", port)


def _udp_responder(port: int, silent: bool) -> socket.socket:
    """Echoes every datagram from the address it was sent to (IP_PKTINFO), as the simulated
    public front end would; a 0.0.0.0 socket would otherwise answer from 10.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_IP, _IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)

    def readable() -> None:
        while True:
            try:
                data, ancillary, _, peer = sock.recvmsg(65535, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            destination = next(
                (
                    d[8:12]
                    for level, kind, d in ancillary
                    if (level, kind) == (socket.SOL_IP, _IP_PKTINFO)
                ),
                None,
            )
            if silent or destination is None:
                continue
            info = struct.pack("=i4s4s", 0, destination, bytes(4))
            with contextlib.suppress(OSError):
                sock.sendmsg([data], [(socket.SOL_IP, _IP_PKTINFO, info)], 0, peer)

    asyncio.get_running_loop().add_reader(sock.fileno(), readable)
    return sock


async def _web(app: web.Application, port: int, ssl_context: Any = None, *, host: str = "0.0.0.0",
               reuse_port: bool = False) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=ssl_context, reuse_port=reuse_port).start()
    return runner


async def _squid(config: ServerConfig) -> daemons.Daemon:
    root_ca = config.lab_root if config.scenario.proxy_trusts_services else None  # None: the system store
    return await squid.start(config.scenario, config.workdir / "squid", root_ca=root_ca,
                             inspection_ca=(config.inspection_ca.cert, config.inspection_ca.key))


async def _nginx(config: ServerConfig, issuer: Issuer) -> daemons.Daemon:
    directory = config.workdir / "nginx"
    certificates = {name: issuer.issue(name) for name in nginx.front_names(config.scenario)}
    argv = nginx.prepare(config.scenario, directory, certificates, issuer.issue(SniCertificates.NO_SNI))
    return await daemons.start("nginx", argv, addresses.PE_WORKSPACE, 443, directory / "error.log")


async def serve(config: ServerConfig) -> None:
    scenario = config.scenario
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def owner_gone() -> None:
        if not os.read(sys.stdin.fileno(), 512):
            loop.remove_reader(sys.stdin.fileno())
            stop.set()

    loop.add_reader(sys.stdin.fileno(), owner_gone)

    for server in (addresses.AZURE_DNS, addresses.CUSTOM_DNS):
        await dnsserver.serve(server, zones_of(scenario, server).answer)
    leaves = config.workdir / "leaves"
    leaves.mkdir(exist_ok=True)
    clock = datetime.timedelta(seconds=scenario.server_clock_offset)
    lab_issuer = Issuer(config.lab_ca, clock)
    certificates = SniCertificates(scenario, lab_issuer, Issuer(config.inspection_ca, clock), leaves)
    front = scenario.websocket_front is not None
    runners = [await _web(http_app(scenario), 80)]
    running: list[daemons.Daemon] = []
    try:  # the real servers are stopped on every way out; the rest goes with this process
        if front:  # nginx's backend: the same application, in plain HTTP on loopback
            runners.append(await _web(https_app(scenario), nginx.BACKEND_PORT, host="127.0.0.1"))
            running.append(await _nginx(config, lab_issuer))
        runners.append(await _web(https_app(scenario), 443, certificates.context(), reuse_port=front))
        listeners = [await _tcp_listener(port) for port in TCP_PORTS]
        if scenario.smb_silent:
            listeners.append(await _silent_listener(SMB_PORT))
        responder = _udp_responder(UDP_PORT, scenario.udp_silent)
        if scenario.proxy in ("open", "auth"):  # "unreachable": nothing listens at its address
            running.append(await _squid(config))
        print("ready", flush=True)
        await stop.wait()
        responder.close()
        for listener in listeners:
            listener.close()
        for runner in runners:
            await runner.cleanup()
    finally:
        for daemon in running:
            await daemon.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m lab.servers CONFIG.json", file=sys.stderr)
        return 2
    asyncio.run(serve(ServerConfig.from_json(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
