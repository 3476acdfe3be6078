"""Fault-playing handlers and message builders for the loopback peers in probe_peers."""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import trustme

# Every wait in these tests is a multiple of this unit; raise it on a slow machine.
UNIT = 0.05 * float(os.environ.get("PROBE_TEST_TIME_SCALE", "1"))

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
DnsHandler = Callable[[dns.message.Message], "dns.message.Message | None"]


class Serve(Protocol):
    async def __call__(self, handler: StreamHandler, *, host: str = ...,
                       tls: ssl.SSLContext | None = ..., port: int = ...) -> int: ...


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read, never answer: a middlebox that stalls after the SYN/ACK."""
    while await reader.read(4096):
        pass


async def reset_after_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the first bytes (a ClientHello, a request), then send an RST, as SNI filters do."""
    await reader.read(4096)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def plaintext(reply: bytes) -> StreamHandler:
    """Answer anything with fixed bytes, e.g. an HTTP error page where TLS was expected."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(reply)
        await writer.drain()
    return handler


def dns_reply(query: dns.message.Message, *records: str, rcode: int = dns.rcode.NOERROR) -> dns.message.Message:
    """A response with records in zone-file syntax ("name 60 IN A 10.0.0.5"); A/AAAA records of
    the other type than asked are left out, as a real server would."""
    response = dns.message.make_response(query)
    response.set_rcode(rcode)
    qtype = query.question[0].rdtype
    for text in records:
        name, ttl, klass, rtype, data = text.split(maxsplit=4)
        if rtype in ("A", "AAAA") and dns.rdatatype.from_text(rtype) != qtype:
            continue
        response.answer.append(dns.rrset.from_text(name, int(ttl), klass, rtype, data))
    return response


def truncated(response: dns.message.Message) -> dns.message.Message:
    """The same response cut down as a server does when it does not fit a UDP datagram."""
    response.flags |= dns.flags.TC
    response.answer.clear()
    return response


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


def proxy(status: int, headers: str = "") -> StreamHandler:
    """An HTTP proxy that answers CONNECT with `status`; on 200 it tunnels to the requested
    port on 127.0.0.1 whatever the name (the names in these tests resolve nowhere)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b" ", 2)
        assert method == b"CONNECT", head
        writer.write(f"HTTP/1.1 {status} Proxy Says\r\n{headers}Content-Length: 0\r\n\r\n".encode())
        await writer.drain()
        if status != 200:
            return
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", int(target.rsplit(b":", 1)[1]))
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()
    return handler


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()




def self_signed_context(ca: trustme.CA, directory: str) -> ssl.SSLContext:
    """A server presenting a lone self-signed certificate (a device's factory default)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert, key = f"{directory}/self.pem", f"{directory}/self.key"
    ca.cert_pem.write_to_path(cert)
    ca.private_key_pem.write_to_path(key)
    context.load_cert_chain(cert, key)
    return context


@contextmanager
def descriptors_exhausted(free: int = 0) -> Iterator[None]:
    """This process really out of descriptors, with `free` left: the soft RLIMIT_NOFILE lowered to just
    above the descriptors open now and the rest taken by /dev/null; all undone on exit. A socket the
    probe opens past the `free` ones fails with EMFILE, as under `ulimit -n` on a busy node."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, top + 64), hard))
    taken: list[int] = []
    try:
        while True:
            try:
                taken.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as exc:
                if exc.errno != errno.EMFILE:
                    raise
                break
        for _ in range(free):
            os.close(taken.pop())
        yield
    finally:
        for fd in taken:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def smb2_reply(*, dialect: int = 0x0311, status: int = 0, command: int = 0, length: int | None = None) -> bytes:
    """An SMB2 NEGOTIATE reply as a server frames it on 445 (MS-SMB2 2.2.4, or 2.2.2 for an error
    status), its NetBIOS length `length` when given (a lying header)."""
    header = struct.pack("<4sHHIHHIIQIIQ16s", b"\xfeSMB", 64, 0, status, command, 1, 1, 0, 0, 0, 0, 0, b"")
    if status:
        body = struct.pack("<HBBI", 9, 0, 0, 0) + b"\x00"
    else:
        body = struct.pack("<HHHH16sIIIIQQHHI", 65, 1, dialect, 0, b"loopback-server!", 0, 65536, 65536, 65536,
                           0, 0, 128, 0, 0)
    message = header + body
    return struct.pack(">I", len(message) if length is None else length) + message
