"""smb probe against real peers: a real samba (smbd) at its dialects, and hostile loopback servers
that accept 445 and then stay silent, close, reset, answer HTTP or TLS, answer SMB1, or send a
broken SMB2 reply."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

import pytest

from probe_loopback import Serve, plaintext, reset_after_read, silent, smb2_reply
from probes import smb
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, Status
from probes.specs import SpecError

pytest_plugins = ["probe_peers"]

LOCAL = ("127.0.0.1",)


async def negotiate(port: int, trace: Trace, addresses: tuple[str, ...] = LOCAL, **spec: object) -> None:
    await smb.run(smb.Spec("files.test", port, **spec), addresses, trace)  # type: ignore[arg-type]


async def failure(port: int, trace: Trace, **spec: object) -> ProbeError:
    with pytest.raises(ProbeError) as info:
        await negotiate(port, trace, **spec)
    assert trace.current == "negotiate" and trace.facts["addresses_ok"] == []
    return info.value


def attempt(trace: Trace, index: int = 0) -> dict[str, object]:
    attempts = trace.facts["attempts"]
    assert isinstance(attempts, list)
    found = attempts[index]
    assert isinstance(found, dict)
    return found


# -- a real samba ------------------------------------------------------------------------------


async def test_samba_negotiates_smb_3_1_1(smbd: Callable[..., int], trace: Trace) -> None:
    """The request with its 3.1.1 negotiate contexts (SHA-512 preauth, ciphers) is one smbd accepts."""
    await negotiate(smbd(), trace)
    assert trace.facts["dialect"] == "3.1.1" and trace.facts["addresses_ok"] == ["127.0.0.1"]
    found = attempt(trace)
    assert (found["outcome"], found["dialect"], found["nt_status"]) == ("negotiated", "3.1.1", "0x00000000")
    assert isinstance(found["bytes_seen"], int) and found["bytes_seen"] > 2 * smb.HEADER
    assert [p.name for p in trace.phases] == ["connect", "negotiate"] and trace.current is None


async def test_samba_capped_at_smb_2_1_is_a_warning(smbd: Callable[..., int], trace: Trace) -> None:
    """`server max protocol = SMB2_10`: the share would mount without encryption, never from outside the
    region. The address still passes (the layer works), the reason is a warning."""
    port = smbd("SMB2_10")
    with pytest.raises(ProbeError) as info:
        await negotiate(port, trace)
    assert info.value.reason is Reason.SMB_DIALECT_OLD and Reason.SMB_DIALECT_OLD.status is Status.WARN
    assert "SMB 2.1, below 3.0" in info.value.detail
    assert trace.facts["dialect"] == "2.1" and trace.facts["addresses_ok"] == ["127.0.0.1"]


async def test_samba_without_a_dialect_in_common_is_its_error_status(smbd: Callable[..., int],
                                                                      trace: Trace) -> None:
    """Offered only SMB 3.x, a server capped at 2.1 answers STATUS_NOT_SUPPORTED: a well-formed SMB2 error."""
    error = await failure(smbd("SMB2_10"), trace, dialects=("3.0", "3.0.2", "3.1.1"))
    assert error.reason is Reason.SMB_ERROR_STATUS and "0xC00000BB (STATUS_NOT_SUPPORTED)" in error.detail
    assert attempt(trace)["nt_status"] == "0xC00000BB"


async def test_samba_without_3_1_1_offered_needs_no_negotiate_contexts(smbd: Callable[..., int],
                                                                       trace: Trace) -> None:
    await negotiate(smbd(), trace, dialects=("2.1", "3.0", "3.0.2"))
    assert trace.facts["dialect"] == "3.0.2"


async def test_samba_on_both_loopback_addresses(smbd: Callable[..., int], trace: Trace) -> None:
    await negotiate(smbd(), trace, addresses=("::1", "127.0.0.1"))
    assert sorted(trace.facts["addresses_ok"]) == ["127.0.0.1", "::1"] and "partial" not in trace.facts  # type: ignore[arg-type]


# -- hostile servers that accept the connection ------------------------------------------------


async def test_accepted_but_silent_is_cut_by_the_engines_deadline_in_negotiate(serve: Serve, trace: Trace,
                                                                               unit: float) -> None:
    """A middlebox that terminates 445 and never speaks: no timer of the probe's own, the phase left
    open names where it stalled (the engine makes that smb.no-negotiate-reply)."""
    port = await serve(silent)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await negotiate(port, trace)
    assert trace.current == "negotiate" and trace.facts["addresses_ok"] == []
    assert attempt(trace)["outcome"] == "smb.no-negotiate-reply" and attempt(trace)["bytes_seen"] == 0


async def test_the_request_is_an_smb2_negotiate_with_the_3_1_1_contexts(serve: Serve, trace: Trace,
                                                                         unit: float) -> None:
    """What the silent peer received: NetBIOS framing, the SMB2 header, five dialects and, 8-aligned,
    the preauth-integrity (SHA-512, a 32-byte salt) and encryption contexts (MS-SMB2 2.2.3)."""
    received = bytearray()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            received.extend(data)

    port = await serve(record)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await negotiate(port, trace)
    data = bytes(received)
    assert data[0] == 0 and int.from_bytes(data[1:4], "big") == len(data) - 4
    message = data[4:]
    assert message[:4] == smb.SMB2 and struct.unpack_from("<HHIH", message, 4) == (64, 0, 0, 0)
    size, count, _, _, _, _, offset, contexts = struct.unpack_from("<HHHHI16sIH", message, 64)
    assert (size, count) == (36, 5)
    assert struct.unpack_from("<5H", message, 100) == (0x0202, 0x0210, 0x0300, 0x0302, 0x0311)
    assert offset % 8 == 0 and contexts == 2
    kind, length = struct.unpack_from("<HH", message, offset)
    assert kind == 1 and struct.unpack_from("<HHH", message, offset + 8) == (1, 32, 1)  # SHA-512, 32-byte salt
    second = offset + 8 + length + (-(8 + length) % 8)
    assert struct.unpack_from("<HHIH", message, second) == (2, 10, 0, 4)  # encryption: four ciphers
    assert len(message) == second + 8 + 10


async def test_closed_right_after_the_request(serve: Serve, trace: Trace) -> None:
    async def close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)

    error = await failure(await serve(close), trace)
    assert error.reason is Reason.SMB_CLOSED and "closed the connection right after" in error.detail
    assert error.detail.startswith("127.0.0.1:")


async def test_reset_right_after_the_request(serve: Serve, trace: Trace) -> None:
    error = await failure(await serve(reset_after_read), trace)
    assert error.reason is Reason.SMB_CLOSED and "reset" in error.detail


@pytest.mark.parametrize(("reply", "what"), [
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "an HTTP response"),
    (b"\x15\x03\x03\x00\x02\x02\x28", "a TLS record"),  # a TLS alert: an inspecting proxy's handshake_failure
    (b"\x00\x00\x00\x08garbage!", "bytes that are not SMB"),  # a zero first byte, no SMB signature
    (b"\x82\x00\x00\x00", "bytes that are not SMB"),  # a NetBIOS positive session response (port 139's)
], ids=["http", "tls", "garbage", "netbios-session"])
async def test_a_non_smb_answer(serve: Serve, trace: Trace, reply: bytes, what: str) -> None:
    error = await failure(await serve(plaintext(reply)), trace)
    assert error.reason is Reason.SMB_NOT_SMB and what in error.detail
    assert attempt(trace)["first_bytes"] == reply[:64].decode("latin-1")
    assert attempt(trace)["bytes_seen"] == len(reply)


async def test_an_smb1_only_reply(serve: Serve, trace: Trace) -> None:
    smb1 = b"\xffSMB" + b"\x72" + bytes(4) + b"\x98" + bytes(24)  # an SMB_COM_NEGOTIATE response header
    error = await failure(await serve(plaintext(struct.pack(">I", len(smb1)) + smb1)), trace)
    assert error.reason is Reason.SMB_SMB1_ONLY


@pytest.mark.parametrize(("reply", "words"), [
    (smb2_reply()[:40], "truncated"),  # the header cut short, then closed
    (smb2_reply(length=16 * 1024 * 1024 - 1), "declaring 16777215 bytes"),  # an oversize NetBIOS length
    (smb2_reply(length=20)[:24], "declaring 20 bytes"),  # shorter than any header
    (smb2_reply(command=1), "not a NEGOTIATE reply"),  # a SESSION_SETUP reply to a NEGOTIATE
    (smb2_reply(dialect=0x02FF), "dialect 0x02ff"),  # the SMB1-negotiate wildcard, never an answer to SMB2
    (b"\x00\x00\x00", "before an SMB2 header"),
], ids=["truncated", "oversize-length", "undersize-length", "wrong-command", "unknown-dialect", "three-bytes"])
async def test_a_broken_smb2_reply(serve: Serve, trace: Trace, reply: bytes, words: str) -> None:
    error = await failure(await serve(plaintext(reply)), trace)
    assert error.reason is Reason.SMB_INVALID_REPLY and words in error.detail


async def test_an_smb2_error_status(serve: Serve, trace: Trace) -> None:
    error = await failure(await serve(plaintext(smb2_reply(status=0xC00000D0))), trace)
    assert error.reason is Reason.SMB_ERROR_STATUS and "0xC00000D0 (STATUS_REQUEST_NOT_ACCEPTED)" in error.detail


async def test_a_reply_in_small_pieces_is_read_whole(serve: Serve, trace: Trace, unit: float) -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        for byte in smb2_reply(dialect=0x0302):
            writer.write(bytes([byte]))
            await writer.drain()
        await reader.read(4096)

    await negotiate(await serve(dribble), trace)
    assert trace.facts["dialect"] == "3.0.2"


async def test_some_addresses_failing_is_partial(serve: Serve, trace: Trace) -> None:
    """The loopback server listens on IPv4 only, so ::1 on the same port is refused."""
    port = await serve(plaintext(smb2_reply()))
    await negotiate(port, trace, addresses=("::1", "127.0.0.1"))
    assert trace.facts["addresses_ok"] == ["127.0.0.1"] and trace.facts["partial"] is True
    outcomes = {a["address"]: a["outcome"] for a in trace.facts["attempts"]}  # type: ignore[union-attr,index]
    assert outcomes == {"127.0.0.1": "negotiated", "::1": "tcp.refused"}


async def test_the_first_address_speaks_for_a_set_that_all_fail(serve: Serve, trace: Trace) -> None:
    http = await serve(plaintext(b"HTTP/1.1 400 Bad Request\r\n\r\n"), host="::1")
    await serve(plaintext(smb2_reply(status=0xC0000022)), port=http)  # the same port on 127.0.0.1
    with pytest.raises(ProbeError) as info:
        await negotiate(http, trace, addresses=("::1", "127.0.0.1"))
    assert info.value.reason is Reason.SMB_ERROR_STATUS  # IPv4 first: it speaks for the service


# -- before SMB is spoken ----------------------------------------------------------------------


async def test_a_stalled_connect_is_cut_in_the_connect_phase(stalled_port: int, trace: Trace, unit: float) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await negotiate(stalled_port, trace)
    assert trace.current == "connect" and trace.facts["attempts"] == []


async def test_refused_is_the_tcp_verdict(refused_port: int, trace: Trace) -> None:
    with pytest.raises(ConnectionRefusedError):
        await negotiate(refused_port, trace)
    assert trace.current == "connect" and attempt(trace)["outcome"] == "tcp.refused"


async def test_no_address_is_a_skip(trace: Trace) -> None:
    with pytest.raises(ProbeError) as info:
        await smb.run(smb.Spec("files.test"), (), trace)
    assert info.value.reason is Reason.SKIP_DEPENDENCY


@pytest.mark.parametrize("values", [{"dialects": ()}, {"dialects": ("3.1.1", "3.1.1")},
                                    {"dialects": ("1.0",)}, {"secure_dialect": "4.0"}, {"port": 0}])
def test_a_spec_no_server_could_answer_is_refused(values: dict[str, object]) -> None:
    with pytest.raises(SpecError):
        smb.Spec("files.test", **values)  # type: ignore[arg-type]
