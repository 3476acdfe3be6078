"""tls probe against loopback TLS servers with trustme certificates, and against peers that are
not TLS servers at all. The name is svc.test everywhere: it is only SNI, never resolved."""

from __future__ import annotations

import asyncio
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from probe_loopback import (
    Serve,
    StreamHandler,
    plaintext,
    reset_after_read,
    self_signed_context,
    server_context,
    silent,
)
from probes import _net, tls
from probes._trace import ProbeError, Trace
from probes.reasons import Reason, Status, classify

pytest_plugins = ["probe_peers"]

NAME = "svc.test"
NOW = datetime.now(UTC)


async def test_valid(serve: Serve, ca: trustme.CA, cafile: str, trace: Trace) -> None:
    port = await serve(silent, tls=server_context(ca.issue_cert(NAME)))
    await tls.run(tls.Spec(NAME, port, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]
    assert trace.facts["version"] in ("TLSv1.2", "TLSv1.3")
    hello = trace.facts["server_hello_ms"]  # what the tls latency threshold reads (agent/latency.py)
    assert isinstance(hello, float) and hello >= 0
    cert = trace.facts["cert"]
    assert isinstance(cert, dict)
    assert cert["issuer_org"] == "Microsoft Corporation" and cert["sans"] == [NAME]
    assert isinstance(cert["days_left"], int) and cert["days_left"] > 0
    assert len(str(cert["sha256"])) == 64
    assert [p.name for p in trace.phases] == ["connect", "handshake"] and trace.current is None


def leaf(ca: trustme.CA, other: trustme.CA, tmp_path: Path, kind: str) -> ssl.SSLContext:
    if kind == "untrusted":
        return server_context(other.issue_cert(NAME))
    if kind == "wrong-name":
        return server_context(ca.issue_cert("other.test"))
    if kind == "expired":
        return server_context(ca.issue_cert(NAME, not_before=NOW - timedelta(days=30),
                                            not_after=NOW - timedelta(days=1)))
    if kind == "not-yet-valid":
        return server_context(ca.issue_cert(NAME, not_before=NOW + timedelta(days=1),
                                            not_after=NOW + timedelta(days=30)))
    return self_signed_context(other, str(tmp_path))


@pytest.mark.parametrize(("kind", "reason", "code", "issuer_org"), [
    ("untrusted", Reason.TLS_UNTRUSTED, 20, "Contoso Inspection"),
    ("wrong-name", Reason.TLS_NAME_MISMATCH, 62, "Microsoft Corporation"),
    ("expired", Reason.TLS_EXPIRED, 10, "Microsoft Corporation"),
    ("not-yet-valid", Reason.TLS_NOT_YET_VALID, 9, "Microsoft Corporation"),
    ("self-signed", Reason.TLS_SELF_SIGNED, 18, "Contoso Inspection"),
])
async def test_verification_failures(kind: str, reason: Reason, code: int, issuer_org: str, serve: Serve,
                                     ca: trustme.CA, cafile: str, tmp_path: Path, trace: Trace) -> None:
    """Each failure is classified from the verify code, and the presented certificate captured."""
    other = trustme.CA(organization_name="Contoso Inspection")
    port = await serve(silent, tls=leaf(ca, other, tmp_path, kind))
    with pytest.raises(ProbeError) as info:
        await tls.run(tls.Spec(NAME, port, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is reason
    assert classify(info.value.__cause__) is reason  # type: ignore[arg-type]
    assert trace.current == "handshake"
    assert trace.facts["verify_code"] == code
    assert trace.facts["cert"]["issuer_org"] == issuer_org  # type: ignore[index]
    assert [p.name for p in trace.phases] == ["connect", "handshake", "capture"]
    assert trace.facts["addresses_ok"] == []


async def test_unexpected_issuer(serve: Serve, tmp_path: Path, trace: Trace) -> None:
    """Trusted (the inspection CA is in the bundle) but not a public Microsoft/DigiCert issuer."""
    inspection = trustme.CA(organization_name="Contoso Inspection")
    inspection.cert_pem.write_to_path(str(tmp_path / "inspection.pem"))
    port = await serve(silent, tls=server_context(inspection.issue_cert(NAME)))
    with pytest.raises(ProbeError) as info:
        await tls.run(tls.Spec(NAME, port, cafile=str(tmp_path / "inspection.pem"),
                               expected_issuers=("Microsoft Corporation", "DigiCert Inc")), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.TLS_UNEXPECTED_ISSUER
    assert Reason.TLS_UNEXPECTED_ISSUER.status is Status.WARN
    assert trace.current == "handshake"
    assert trace.facts["addresses_ok"] == ["127.0.0.1"]  # the path works: the next layer may run
    await tls.run(tls.Spec(NAME, port, cafile=str(tmp_path / "inspection.pem"), expected_issuers=()),
                  ("127.0.0.1",), Trace())


async def test_an_untrusted_chain_names_its_issuing_ca(serve: Serve, cafile: str, trace: Trace) -> None:
    """An inspecting proxy that sends its intermediate: the capture names that CA by fingerprint."""
    root = trustme.CA(organization_name="Contoso Inspection")
    intermediate = root.create_child_ca()
    port = await serve(silent, tls=server_context(intermediate.issue_cert(NAME)))  # leaf + intermediate
    with pytest.raises(ProbeError) as info:
        await tls.run(tls.Spec(NAME, port, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is Reason.TLS_UNTRUSTED
    cert = trace.facts["cert"]
    presented = x509.load_pem_x509_certificate(intermediate.cert_pem.bytes())
    assert cert["issuer_sha256"] == presented.fingerprint(hashes.SHA256()).hex()  # type: ignore[index]
    assert cert["issuer_subject"] == presented.subject.rfc4514_string()  # type: ignore[index]
    assert cert["issuer_key_id"]  # type: ignore[index]


@pytest.mark.parametrize(("handler", "reason"), [
    (plaintext(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"), Reason.TLS_PROTOCOL_MISMATCH),
    (reset_after_read, Reason.TLS_RESET),
], ids=["plaintext", "reset"])
async def test_not_a_tls_server(handler: StreamHandler, reason: Reason, serve: Serve, cafile: str,
                                trace: Trace) -> None:
    port = await serve(handler)
    with pytest.raises(ProbeError) as info:
        await tls.run(tls.Spec(NAME, port, cafile=cafile), ("127.0.0.1",), trace)
    assert info.value.reason is reason
    assert trace.current == "handshake"
    if reason is Reason.TLS_PROTOCOL_MISMATCH:
        assert trace.facts["peer_first_bytes"] == "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


async def test_stalled_handshake(serve: Serve, cafile: str, trace: Trace, unit: float) -> None:
    """TCP connects, the ClientHello goes unanswered (path-MTU black hole): the engine's deadline
    strikes with the handshake phase open."""
    port = await serve(silent)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(6 * unit):
            await tls.run(tls.Spec(NAME, port, cafile=cafile), ("127.0.0.1",), trace)
    assert trace.current == "handshake"


async def test_connects_to_the_first_address_that_accepts(serve: Serve, ca: trustme.CA, cafile: str,
                                                          trace: Trace) -> None:
    port = await serve(silent, host="::1", tls=server_context(ca.issue_cert(NAME)))
    await tls.run(tls.Spec(NAME, port, cafile=cafile), ("127.0.0.1", "::1"), trace)  # IPv4 refused
    assert trace.facts["address"] == "::1" and trace.facts["addresses_ok"] == ["::1"]


async def test_refused(refused_port: int, cafile: str, trace: Trace) -> None:
    with pytest.raises(ConnectionRefusedError) as info:
        await tls.run(tls.Spec(NAME, refused_port, cafile=cafile), ("127.0.0.1",), trace)
    assert classify(info.value) is Reason.TCP_REFUSED
    assert trace.current == "connect"


async def test_a_run_loads_each_trust_store_once(serve: Serve, ca: trustme.CA, tmp_path: Path) -> None:
    """Inside a run (probes._net.shared) each trust configuration has one context, loaded once: a
    bundle rewritten during the run is not read again. Outside a run every check loads its own."""
    bundle = tmp_path / "bundle.pem"
    ca.cert_pem.write_to_path(str(bundle))
    port = await serve(silent, tls=server_context(ca.issue_cert(NAME)))
    spec = tls.Spec(NAME, port, cafile=str(bundle))
    async with _net.shared():
        first = _net.tls_context(str(bundle))
        assert _net.tls_context(str(bundle)) is first
        assert _net.tls_context(str(bundle), verify=False) is not first
        assert _net.tls_context(None) is not first
        await tls.run(spec, ("127.0.0.1",), Trace())
        trustme.CA().cert_pem.write_to_path(str(bundle))  # the node's store changes mid-run
        await tls.run(spec, ("127.0.0.1",), Trace())  # still the store the run loaded
    assert _net.tls_context(str(bundle)) is not _net.tls_context(str(bundle))
    with pytest.raises(ProbeError) as info:
        await tls.run(spec, ("127.0.0.1",), Trace())  # a new run reads the store as it is now
    assert info.value.reason is Reason.TLS_UNTRUSTED


async def test_concurrent_handshakes_each_keep_their_own_certificate(serve: Serve, ca: trustme.CA,
                                                                     tmp_path: Path) -> None:
    """One shared context serves checks of servers with different issuers at once: each check
    reports the certificate of its own handshake."""
    inspection = trustme.CA(organization_name="Contoso Inspection")
    bundle = tmp_path / "both.pem"
    bundle.write_bytes(ca.cert_pem.bytes() + inspection.cert_pem.bytes())
    ports = {org: await serve(silent, tls=server_context(issuer.issue_cert(NAME)))
             for org, issuer in (("Microsoft Corporation", ca), ("Contoso Inspection", inspection))}

    async def one(org: str) -> tuple[str, Trace]:
        trace = Trace()
        await tls.run(tls.Spec(NAME, ports[org], cafile=str(bundle)), ("127.0.0.1",), trace)
        return org, trace

    async with _net.shared():
        outcomes = await asyncio.gather(*(one(org) for _ in range(6) for org in ports))
    for org, trace in outcomes:
        cert = trace.facts["cert"]
        assert isinstance(cert, dict) and cert["issuer_org"] == org
