"""An SMB2 NEGOTIATE on 445 (MS-SMB2 2.2.3 and 2.2.4), the first message of every mount: a TCP
connect proves only that something accepts, and a firewall or proxy that terminates or inspects
445 accepts too. A reply with the SMB2 signature passes and names the dialect; nothing past
NEGOTIATE is sent (no session, no credentials).

The request offers the dialects Windows and Linux's cifs offer, with the negotiate contexts SMB
3.1.1 requires (pre-authentication integrity: SHA-512 and a salt) and the encryption capabilities
Windows clients add, in the direct-TCP framing of port 445 (a zero byte and a 24-bit length)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from dataclasses import dataclass

from probes import _stream
from probes._net import connect, errno_name, first_error, require, since_ms
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import Reason, classify, local_limit
from probes.specs import SMB_DIALECTS
from probes.specs import SmbSpec as Spec

DIALECT_CODES = {"2.0.2": 0x0202, "2.1": 0x0210, "3.0": 0x0300, "3.0.2": 0x0302, "3.1.1": 0x0311}
_DIALECT_NAMES = {code: name for name, code in DIALECT_CODES.items()}
SMB2 = b"\xfeSMB"
SMB1 = b"\xffSMB"
HEADER = 64  # the SMB2 header (2.2.1); a NEGOTIATE response's fixed part is 64 bytes more (2.2.4)
MAX_REPLY = 65536  # a NEGOTIATE reply is well under 1 KiB: a frame declared larger is not one
NEGOTIATE = 0  # the command code
_SIGNING_ENABLED = 0x0001
_CAPABILITIES = 0x7F  # DFS, leasing, large MTU, multi-channel, persistent handles, directory leasing, encryption
_PREAUTH_INTEGRITY, _ENCRYPTION = 0x0001, 0x0002  # negotiate context types (2.2.3.1)
_SHA512 = 0x0001
_CIPHERS = (0x0004, 0x0002, 0x0003, 0x0001)  # AES-256-GCM, AES-128-GCM, AES-256-CCM, AES-128-CCM, Windows' order
STATUS_NAMES = {
    0xC00000BB: "STATUS_NOT_SUPPORTED",  # no dialect in common
    0xC0000022: "STATUS_ACCESS_DENIED",
    0xC000000D: "STATUS_INVALID_PARAMETER",
    0xC000009A: "STATUS_INSUFFICIENT_RESOURCES",
    0xC00000D0: "STATUS_REQUEST_NOT_ACCEPTED",  # the server's connection limit
}


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete SMB2 NEGOTIATE reply: its NT status and, on success, the dialect chosen."""

    status: int
    dialect: str | None


def _aligned(data: bytes) -> bytes:
    return data + bytes(-len(data) % 8)


def negotiate_request(dialects: tuple[str, ...], client_guid: bytes, salt: bytes) -> bytes:
    """The NEGOTIATE request, framed for port 445. Negotiate contexts come only with 3.1.1, as the
    specification has it; offsets count from the SMB2 header's first byte."""
    codes = [DIALECT_CODES[d] for d in dialects]
    smb3 = any(code >= 0x0300 for code in codes)
    fixed = HEADER + 36 + 2 * len(codes)
    if 0x0311 in codes:
        preauth = struct.pack("<HHH", 1, len(salt), _SHA512) + salt
        ciphers = struct.pack(f"<H{len(_CIPHERS)}H", len(_CIPHERS), *_CIPHERS)
        contexts = [struct.pack("<HHI", kind, len(data), 0) + data
                    for kind, data in ((_PREAUTH_INTEGRITY, preauth), (_ENCRYPTION, ciphers))]
        tail = struct.pack("<IHH", fixed + (-fixed % 8), len(contexts), 0)
        trailer = bytes(-fixed % 8) + b"".join(_aligned(c) for c in contexts[:-1]) + contexts[-1]
    else:
        tail, trailer = bytes(8), b""  # ClientStartTime: zero
    header = struct.pack("<4sHHIHHIIQIIQ16s", SMB2, HEADER, 0, 0, NEGOTIATE, 1, 0, 0, 0, 0, 0, 0, b"")
    body = struct.pack("<HHHHI16s", 36, len(codes), _SIGNING_ENABLED, 0, _CAPABILITIES if smb3 else 0,
                       client_guid) + tail + struct.pack(f"<{len(codes)}H", *codes)
    message = header + body + trailer
    return struct.pack(">I", len(message)) + message


def parse(data: bytes, eof: bool, offered: tuple[str, ...] = SMB_DIALECTS) -> Reply | None:
    """The NEGOTIATE reply in the bytes received so far; None while it is incomplete and the peer
    has not closed. ProbeError as soon as the bytes show it is no SMB2 reply, or a broken one."""
    if data and data[0] != 0:  # the direct-TCP header starts with a zero byte: anything else is another protocol
        raise ProbeError(Reason.SMB_NOT_SMB, f"answered the SMB2 NEGOTIATE with {_what(data)}: {data[:32]!r}")
    if len(data) < 8:
        if not eof:
            return None
        if not data:
            raise ProbeError(Reason.SMB_CLOSED, "closed the connection right after the SMB2 NEGOTIATE request, "
                             "without a reply")
        raise ProbeError(Reason.SMB_INVALID_REPLY, f"closed after {len(data)} bytes, before an SMB2 header")
    protocol = data[4:8]
    if protocol == SMB1:
        raise ProbeError(Reason.SMB_SMB1_ONLY, "answered with SMB1 (\\xffSMB), which Azure Files never speaks")
    if protocol != SMB2:
        raise ProbeError(Reason.SMB_NOT_SMB, f"answered the SMB2 NEGOTIATE with {_what(data)}: {data[:32]!r}")
    length = int.from_bytes(data[1:4], "big")
    if not HEADER + 8 <= length <= MAX_REPLY:
        raise ProbeError(Reason.SMB_INVALID_REPLY, f"sent an SMB2 reply declaring {length} bytes: no NEGOTIATE reply "
                         f"is shorter than {HEADER + 8} or longer than {MAX_REPLY}")
    if len(data) < 4 + length:
        if not eof:
            return None
        raise ProbeError(Reason.SMB_INVALID_REPLY, f"closed after {len(data) - 4} of the {length} bytes of "
                         "its SMB2 reply (truncated)")
    message = data[4:4 + length]
    size, _, status, command = struct.unpack_from("<HHIH", message, 4)
    if size != HEADER or command != NEGOTIATE:
        raise ProbeError(Reason.SMB_INVALID_REPLY, f"sent an SMB2 header of size {size} for command {command}, not a "
                         f"NEGOTIATE reply ({HEADER}, {NEGOTIATE})")
    if status != 0:
        return Reply(status, None)
    body, _, code = struct.unpack_from("<HHH", message, HEADER)
    dialect = _DIALECT_NAMES.get(code)
    if body != 65 or length < 2 * HEADER or dialect not in offered:
        raise ProbeError(Reason.SMB_INVALID_REPLY, f"sent a malformed NEGOTIATE reply (structure size {body}, "
                         f"{length} bytes, dialect 0x{code:04x}, offered {', '.join(offered)})")
    return Reply(status, dialect)


def _what(data: bytes) -> str:
    if data.startswith(b"HTTP/"):
        return "an HTTP response"
    if data[0] in (20, 21, 22, 23) and data[1:2] == b"\x03":
        return "a TLS record"
    return "bytes that are not SMB"


def status_text(status: int) -> str:
    name = STATUS_NAMES.get(status)
    return f"0x{status:08X}" + (f" ({name})" if name else "")


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Connect to every address at once, then negotiate on each connection at once. Pass if any
    address negotiates (`partial` when some do not); the lowest dialect negotiated below
    `secure_dialect` passes the addresses on, then raises SMB_DIALECT_OLD (a warning). All failing
    raises the first address's own error."""
    attempts: list[Fact] = []
    trace.note(addresses_ok=[], attempts=attempts)
    targets = require(addresses)
    connected: dict[str, socket.socket] = {}

    handed = _stream.take(spec, targets[0], trace)  # the tcp check's connection, when it left one
    _stream.note(trace, handed.handed_by if handed else None)
    if handed is not None:
        connected[handed.address] = handed.sock

    async def connect_one(address: str) -> OSError | None:
        if address in connected:
            return None
        start = time.monotonic()
        try:
            connected[address] = await connect(address, spec.port)
        except OSError as exc:
            attempts.append({"address": address, "outcome": classify(exc).value, "errno": errno_name(exc),
                             "elapsed_ms": since_ms(start)})
            if local_limit(exc):  # read by the engine should the others time out: no verdict then
                trace.note(local_limit=f"{address}: {errno_name(exc) or exc}")
            return exc
        return None

    async def negotiate_one(address: str, sock: socket.socket) -> Reply | Exception:
        start = time.monotonic()
        attempt: dict[str, Fact] = {"address": address, "outcome": Reason.SMB_NO_NEGOTIATE_REPLY.value,
                                    "bytes_seen": 0}  # what stays if the deadline cuts it
        attempts.append(attempt)
        try:
            reply = await _negotiate(sock, spec.dialects, attempt)
            attempt.update(dialect=reply.dialect, nt_status=f"0x{reply.status:08X}")
            if reply.status != 0:
                raise ProbeError(Reason.SMB_ERROR_STATUS,
                                 f"answered the SMB2 NEGOTIATE with NT status {status_text(reply.status)}")
            attempt["outcome"] = "negotiated"
            trace.passed(address)
            return reply
        except ProbeError as exc:
            attempt["outcome"] = exc.reason.value
            return ProbeError(exc.reason, f"{address}:{spec.port} {exc.detail}")
        except OSError as exc:
            attempt.update(outcome=classify(exc).value, errno=errno_name(exc))
            return exc
        finally:
            attempt["elapsed_ms"] = since_ms(start)

    try:
        with trace.phase("connect"):
            errors = [e for e in await asyncio.gather(*(connect_one(a) for a in targets)) if e is not None]
            if len(errors) == len(targets):
                raise first_error(errors)
        with trace.phase("negotiate"):
            order = [a for a in targets if a in connected]
            replies = await asyncio.gather(*(negotiate_one(a, connected[a]) for a in order))
            _judge(spec, dict(zip(order, replies, strict=True)), len(targets), trace)
    finally:
        for sock in connected.values():
            sock.close()


async def _negotiate(sock: socket.socket, dialects: tuple[str, ...], attempt: dict[str, Fact]) -> Reply:
    loop = asyncio.get_running_loop()
    data = b""
    try:
        await loop.sock_sendall(sock, negotiate_request(dialects, os.urandom(16), os.urandom(32)))
        while True:
            chunk = await loop.sock_recv(sock, MAX_REPLY)
            data += chunk
            attempt["bytes_seen"] = len(data)
            reply = parse(data, not chunk, dialects)
            if reply is not None:
                return reply
    except (ConnectionResetError, BrokenPipeError) as exc:
        if not data:
            raise ProbeError(Reason.SMB_CLOSED, f"reset the connection ({errno_name(exc) or 'RST'}) right after "
                             "the SMB2 NEGOTIATE request, without a reply") from exc
        parse(data, True, dialects)  # what the bytes before the reset were
        raise
    except ProbeError:
        if data:
            attempt["first_bytes"] = data[:64].decode("latin-1")
        raise


def _judge(spec: Spec, replies: dict[str, Reply | Exception], tried: int, trace: Trace) -> None:
    """The verdict of the addresses that connected, as the tcp probe gives one for a set."""
    passed = {a: r for a, r in replies.items() if isinstance(r, Reply)}
    if not passed:
        raise next(e for e in replies.values() if isinstance(e, Exception))
    if len(passed) < tried:
        trace.note(partial=True)
    address, lowest = min(passed.items(), key=lambda item: SMB_DIALECTS.index(str(item[1].dialect)))
    trace.note(dialect=lowest.dialect)
    if SMB_DIALECTS.index(str(lowest.dialect)) < SMB_DIALECTS.index(spec.secure_dialect):
        raise ProbeError(Reason.SMB_DIALECT_OLD, f"{address}:{spec.port} negotiated SMB {lowest.dialect}, below "
                         f"{spec.secure_dialect}: no encryption, no mount from outside the storage account's region")
