"""TLS handshake with SNI and verification against this node's trust store, nothing above it (a
bare handshake also serves ports that speak no HTTP). When verification fails, a second,
unverified handshake captures the certificate actually presented: that is what tells a
TLS-inspecting middlebox from an expired or misissued certificate.

The handshake runs over memory BIOs on our own socket rather than asyncio's SSL transport: the
bytes a non-TLS peer sent are then at hand, and asyncio's own handshake timer stays out of the
way (the engine owns time)."""

from __future__ import annotations

import _ssl
import asyncio
import socket
import ssl
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from probes._net import connect, connect_first, local_shortage, require, tls_context
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import PROTOCOL_MISMATCH_REASONS, VERIFY_CODES, Reason
from probes.specs import TlsSpec as Spec

_TLS_RECORD_TYPES = frozenset({20, 21, 22, 23})  # change_cipher_spec, alert, handshake, application_data
_ISSUER_NOT_FOUND = frozenset({2, 20})  # the verify codes of an issuer looked up in the store and not found


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Pass when the handshake verifies; a trusted certificate from an issuer outside
    `expected_issuers` still passes the address on, then raises TLS_UNEXPECTED_ISSUER (a warning:
    the path works, but something re-signs the traffic)."""
    trace.note(addresses_ok=[])
    targets = require(addresses)
    with trace.phase("connect"):
        address, sock = await connect_first(targets, spec.port)
    trace.note(address=address)
    try:
        with trace.phase("handshake"):
            try:
                tls = await handshake(sock, tls_context(spec.cafile), spec.host, trace)
            except ssl.SSLCertVerificationError as exc:
                trace.note(verify_code=exc.verify_code, verify_message=exc.verify_message)
                cert = await _capture(address, spec, trace)
                reason = VERIFY_CODES.get(exc.verify_code, Reason.TLS_UNTRUSTED)
                raise ProbeError(reason, f"{exc.verify_message} (presented: {_who(cert)})") from exc
            cipher = tls.cipher()
            cert = describe_cert(tls.getpeercert(binary_form=True) or b"")
            trace.note(version=tls.version(), cipher=cipher[0] if cipher else None, cert=cert)
            trace.passed(address)
            if spec.expected_issuers and cert["issuer_org"] not in spec.expected_issuers:
                raise ProbeError(Reason.TLS_UNEXPECTED_ISSUER,
                                 f"trusted, but issued by {_who(cert)}, "
                                 f"not {' or '.join(spec.expected_issuers)}")
    finally:
        sock.close()


async def handshake(sock: socket.socket, context: ssl.SSLContext, host: str, trace: Trace) -> ssl.SSLObject:
    """Client handshake on a connected non-blocking socket. A reset or close is TLS_RESET; bytes
    that are not a TLS record (an HTTP error page from a proxy or firewall) are
    TLS_PROTOCOL_MISMATCH, noted as `peer_first_bytes`; other ssl errors propagate. An issuer not
    found while this process cannot open a descriptor is that limit (OpenSSL reads a CA directory's
    files during verification), raised as the OSError, not as an untrusted chain."""
    loop = asyncio.get_running_loop()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)
    first = b""
    while True:
        try:
            tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLCertVerificationError as exc:
            if exc.verify_code in _ISSUER_NOT_FOUND and (shortage := local_shortage()) is not None:
                raise shortage from exc
            raise
        except ssl.SSLError as exc:
            if (first and first[0] not in _TLS_RECORD_TYPES) or exc.reason in PROTOCOL_MISMATCH_REASONS:
                trace.note(peer_first_bytes=first[:64].decode("latin-1"))
                raise ProbeError(Reason.TLS_PROTOCOL_MISMATCH,
                                 f"the peer does not speak TLS; it sent {first[:32]!r}") from exc
            raise
        try:
            if data := outgoing.read():
                await loop.sock_sendall(sock, data)
            if done:
                return tls
            chunk = await loop.sock_recv(sock, 65536)
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise ProbeError(Reason.TLS_RESET,
                             "reset by the peer during the TLS handshake") from exc
        if not chunk:
            raise ProbeError(Reason.TLS_RESET,
                             "the peer closed the connection during the TLS handshake")
        first = first or chunk
        incoming.write(chunk)


async def _capture(address: str, spec: Spec, trace: Trace) -> dict[str, Fact] | None:
    """Reconnect without verification to see the presented certificate. Best effort: the
    verification failure is the finding, this only explains it."""
    with trace.phase("capture"):
        try:
            sock = await connect(address, spec.port)
            try:
                tls = await handshake(sock, tls_context(None, verify=False), spec.host, trace)
            finally:
                sock.close()
        except (OSError, ProbeError) as exc:
            trace.note(capture_error=str(exc))
            return None
        cert = {**describe_cert(tls.getpeercert(binary_form=True) or b""), **_issuer_facts(tls)}
        trace.note(cert=cert)
        return cert


def _issuer_facts(tls: ssl.SSLObject) -> dict[str, Fact]:
    """The issuing CA as the peer presented it: its certificate's subject and SHA-256 when the peer
    sent the chain (an inspecting proxy usually does). The unverified chain is public API from
    Python 3.13; 3.11 and 3.12 have it on the private object, so this is best effort."""
    getter = getattr(tls, "get_unverified_chain", None) or getattr(getattr(tls, "_sslobj", None),
                                                                   "get_unverified_chain", None)
    try:
        chain = list(getter() or []) if getter else []
    except (ssl.SSLError, ValueError):
        return {}
    if len(chain) < 2:
        return {}
    second = chain[1]  # 3.13+: DER bytes; before: an _ssl.Certificate
    der = second if isinstance(second, bytes) else second.public_bytes(_ssl.ENCODING_DER)
    issuer = x509.load_der_x509_certificate(der)
    return {"issuer_sha256": issuer.fingerprint(hashes.SHA256()).hex(),
            "issuer_subject": issuer.subject.rfc4514_string()}


def describe_cert(der: bytes) -> dict[str, Fact]:
    """The facts of a certificate a person acts on: who issued it, for which names, until when."""
    cert = x509.load_der_x509_certificate(der)
    orgs = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans: list[Fact] = [*san.get_values_for_type(x509.DNSName),
                            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]
    except x509.ExtensionNotFound:
        sans = []
    not_after = cert.not_valid_after_utc
    try:
        key_id = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except x509.ExtensionNotFound:
        key_id = None
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "issuer_org": str(orgs[0].value) if orgs else None,
        "sans": sans,
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": (not_after - datetime.now(UTC)).days,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "issuer_key_id": key_id.hex() if key_id else None,  # names the signing CA's key
    }


def _who(cert: dict[str, Fact] | None) -> str:
    return "unknown (capture failed)" if cert is None else f"issuer {cert['issuer']}"
