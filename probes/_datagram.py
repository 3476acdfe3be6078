"""One request/reply exchange over a connected UDP socket, for the udp probe and for direct DNS
queries. Connected, because only then does the kernel report ICMP errors to the socket;
IP_RECVERR, because then it also queues their exact type, code and sender. (dnspython's own
asyncio UDP path loses an ICMP error that arrives before it starts reading, and reports a
closed resolver port as a timeout.)"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import time
from dataclasses import dataclass

from probes._net import family, sockaddr
from probes._timing import Estimator, wait_any
from probes._trace import Fact

SIOCGSTAMP = 0x8906  # <asm-generic/sockios.h>: the arrival time of the last datagram read (struct timeval)
_TIMEVAL = struct.Struct("@ll")
IP_RECVERR = 11  # <linux/in.h>; Python 3.11 has no constant for it
IPV6_RECVERR = 25  # <linux/in6.h>
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # struct sock_extended_err


@dataclass(frozen=True, slots=True)
class Exchange:
    """What came back: the first reply, or the ICMP error, or neither (silence)."""

    reply: bytes | None
    replies: int
    error: OSError | None
    icmp: dict[str, Fact] | None  # origin, type, code, offender: from the error queue
    sent: int
    window: float  # the listening window after each datagram, at the end (shorter than asked: paced)
    rtt: float | None = None  # seconds from the last datagram sent to the reply's arrival, as the kernel saw it


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reply: bytes | None = None
        self.replies = 0
        self.error: OSError | None = None
        self.icmp: dict[str, Fact] | None = None
        self.sent_at: float | None = None  # the wall clock at the last datagram sent (the kernel's stamps are)
        self.rtt: float | None = None

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies += 1
        if not self.done.done():
            self.reply = data
            arrived = received_at(self.sock)
            self.rtt = None if self.sent_at is None else max(arrived - self.sent_at, 0.0)
            self.done.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.icmp = self.icmp or read_errqueue(self.sock)  # also drains it: epoll would spin on it
        if not self.done.done() and isinstance(exc, OSError):
            self.error = exc
            self.done.set_result(None)


async def exchange(address: str, port: int, payload: bytes, attempts: int, interval: float,
                   rtt: Estimator | None = None, hop_limit: int | None = None) -> Exchange:
    """Send, listen `interval`, resend, until a reply, an error, or `attempts` datagrams; the
    listening window is a protocol parameter, not a deadline (the engine owns those). With the
    run's estimator (`rtt`), a window is at most the address's route bound (probes/_timing.py), read
    again as samples arrive: an ICMP error is the kernel's answer, as fast as a SYN-ACK. A
    `hop_limit` (IP TTL) makes it one copy of the flow for path localisation (probes._hops)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(family(address), socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        queue_errors(sock, hop_limit)
        received_at(sock)  # the first ask turns the kernel's arrival stamps on for this socket
        sock.connect(sockaddr(address, port))
        transport, listener = await loop.create_datagram_endpoint(lambda: _Listener(sock), sock=sock)
    except BaseException:
        sock.close()
        raise
    def window() -> float:
        bound = rtt.bound(address) if rtt is not None else None
        return interval if bound is None else min(interval, bound)

    sent = 0
    try:
        while sent < attempts and not listener.done.done():
            _send(sock, listener, payload)
            sent += 1
            await wait_any({listener.done}, time.monotonic(), window, rtt)
    finally:
        transport.close()
    return Exchange(listener.reply, listener.replies, listener.error, listener.icmp, sent, window(), listener.rtt)


def received_at(sock: socket.socket) -> float:
    """When the last datagram this socket read arrived, on the wall clock (SIOCGSTAMP): a busy event
    loop reads a reply late, the kernel stamped it on arrival. Now, where the kernel has no stamp."""
    try:
        stamp = fcntl.ioctl(sock.fileno(), SIOCGSTAMP, bytes(_TIMEVAL.size))
    except OSError:  # ENOENT: nothing read yet (this call turned the stamps on)
        return time.time()
    seconds, micros = _TIMEVAL.unpack(stamp)
    return float(seconds + micros / 1e6)


def queue_errors(sock: socket.socket, hop_limit: int | None = None) -> None:
    """ICMP errors for this socket onto its error queue (IP_RECVERR), and its packets' hop limit."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
        if hop_limit is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hop_limit)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        if hop_limit is not None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, hop_limit)


def _send(sock: socket.socket, listener: _Listener, payload: bytes) -> None:
    """Send on the socket itself: asyncio's transport silently drops an empty datagram (3.11),
    and an empty datagram is the classic UDP probe. Errors go where the transport sends them."""
    try:
        listener.sent_at = time.time()
        sock.send(payload)
    except BlockingIOError:
        pass  # a full send buffer loses the datagram, as the network may: the next one retries
    except OSError as exc:
        listener.error_received(exc)


def read_errqueue(sock: socket.socket) -> dict[str, Fact] | None:
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
    """The sockaddr after sock_extended_err (SO_EE_OFFENDER): the router or host that answered."""
    (fam,) = struct.unpack_from("=H", raw)
    if fam == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if fam == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None
