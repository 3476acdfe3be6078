"""A small authoritative-looking recursive resolver on UDP and TCP 53, answering from lab.zones.

It binds the resolver's own address (not 0.0.0.0) so UDP replies leave from the address the
node asked, as a real resolver's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from lab.zones import Answer

TTL = 60
Resolve = Callable[[str], Answer]


def respond(wire: bytes, resolve: Resolve) -> bytes | None:
    """The wire response to one wire query (None for garbage, which a resolver ignores)."""
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.RA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    answer = resolve(question.name.to_text(omit_final_dot=True))
    response.set_rcode(dns.rcode.from_text(answer.rcode))
    for record in answer.records:
        # A queries get the chain and the address; AAAA and others only the CNAME chain (no IPv6)
        if record.rtype == "CNAME" or question.rdtype == dns.rdatatype.A:
            response.answer.append(
                dns.rrset.from_text(
                    record.name + ".",
                    TTL,
                    dns.rdataclass.IN,
                    record.rtype,
                    record.value + ("." if record.rtype == "CNAME" else ""),
                )
            )
    return response.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = respond(data, self._resolve)
        if reply is not None and self._transport is not None:
            self._transport.sendto(reply, addr)


async def serve(address: str, resolve: Resolve) -> None:
    """Start serving DNS on address:53 over UDP and TCP (the loop keeps the listeners)."""
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: _Udp(resolve), local_addr=(address, 53))

    async def tcp_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                reply = respond(await reader.readexactly(length), resolve)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        writer.close()

    await asyncio.start_server(tcp_client, address, 53)
