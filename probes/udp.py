"""UDP reachability with nmap's semantics: a reply proves it open, an ICMP error proves it closed or
prohibited, silence proves nothing (open|filtered). A connected socket is what makes the kernel
deliver ICMP errors at all; IP_RECVERR also queues their exact type, code and sender."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from dataclasses import dataclass

from probes._net import errno_name, family, require, since_ms, sockaddr
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import UDP_ERRNO_CODES, Reason, classify

IP_RECVERR = 11  # <linux/in.h>; Python 3.11 has no constant for it
IPV6_RECVERR = 25  # <linux/in6.h>
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err


@dataclass(frozen=True, slots=True)
class Spec:
    host: str
    port: int
    payload: bytes = b""  # a protocol-valid request where one exists: many services ignore garbage
    attempts: int = 3  # datagrams sent; ICMP is rate limited and UDP is lossy, so retransmit
    interval: float = 0.5  # listening window after each datagram (a protocol parameter)


class _Listener(asyncio.DatagramProtocol):
    """Waits for the first reply or ICMP error on one connected socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done: asyncio.Future[OSError | None] = asyncio.get_running_loop().create_future()
        self.replies = 0
        self.icmp: dict[str, Fact] | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies += 1
        if not self.done.done():
            self.done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.icmp = self.icmp or _read_errqueue(self.sock)  # also drains it: epoll would spin on it
        if not self.done.done() and isinstance(exc, OSError):
            self.done.set_result(exc)


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Probe every address at once; any reply passes. Otherwise an ICMP error fails the check
    and silence is inconclusive (UDP_NO_REPLY), which for UDP 5831 is the normal case."""
    attempts: list[Fact] = []
    trace.note(addresses_ok=[], attempts=attempts, replies=0)
    targets = require(addresses)

    async def exchange(address: str) -> tuple[OSError | None, int]:
        start = time.monotonic()
        listener, sent = await _exchange(address, spec)
        error = listener.done.result() if listener.done.done() else None
        if listener.replies:
            outcome = "reply"
            trace.passed(address)
        else:
            outcome = (_reason(error) if error else Reason.UDP_NO_REPLY).value
        attempts.append({"address": address, "outcome": outcome, "errno": errno_name(error) if error else None,
                         "icmp": listener.icmp, "datagrams": sent, "elapsed_ms": since_ms(start)})
        return error, listener.replies

    with trace.phase("exchange"):
        results = await asyncio.gather(*(exchange(a) for a in targets))
        trace.note(replies=sum(replies for _, replies in results))
        if trace.facts["addresses_ok"]:
            return
        for address, (error, _) in zip(targets, results):
            if error is not None:
                raise ProbeError(_reason(error), f"{address}:{spec.port}: {_describe(error)}") from error
        raise ProbeError(Reason.UDP_NO_REPLY, f"no reply after {spec.attempts} datagrams to port "
                         f"{spec.port}: open|filtered (silence is normal for UDP 5831)")


async def _exchange(address: str, spec: Spec) -> tuple[_Listener, int]:
    """Send, listen `interval`, resend, until a reply or an error or `attempts` datagrams."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(family(address), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if family(address) == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        sock.connect(sockaddr(address, spec.port))  # connected: the kernel reports ICMP errors
        transport, listener = await loop.create_datagram_endpoint(lambda: _Listener(sock), sock=sock)
    except BaseException:
        sock.close()
        raise
    sent = 0
    try:
        while sent < spec.attempts and not listener.done.done():
            transport.sendto(spec.payload)
            sent += 1
            await asyncio.wait({listener.done}, timeout=spec.interval)
    finally:
        transport.close()
    return listener, sent


def _read_errqueue(sock: socket.socket) -> dict[str, Fact] | None:
    """The queued ICMP error: type, code and the address that sent it (a router or the host)."""
    try:
        _, ancillary, _, _ = sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except OSError:
        return None
    for level, kind, data in ancillary:
        if (level, kind) in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)) \
                and len(data) >= _EXTENDED_ERR.size + 2:
            _, origin, icmp_type, code, _, _, _ = _EXTENDED_ERR.unpack_from(data)
            return {"origin": origin, "type": icmp_type, "code": code,
                    "offender": _offender(data[_EXTENDED_ERR.size:])}
    return None


def _offender(raw: bytes) -> str | None:
    """The sockaddr after sock_extended_err (SO_EE_OFFENDER)."""
    (fam,) = struct.unpack_from("=H", raw)
    if fam == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def _reason(error: OSError) -> Reason:
    return UDP_ERRNO_CODES.get(error.errno or 0) or classify(error)


def _describe(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "ICMP port unreachable: nothing listens there, or a firewall rejects"
    return f"{errno_name(error) or 'error'}: {error.strerror or error}"
