"""TLS handshake with SNI and verification against this node's trust store, nothing above it (a
bare handshake also serves ports that speak no HTTP). When verification fails, a second,
unverified handshake captures the certificate actually presented: that is what tells a
TLS-inspecting middlebox from an expired or misissued certificate.

The handshake runs on the tcp check's connection when it was handed over (probes._stream), and the
verified connection is handed on to the http or websocket check above. The certificate's facts of a
verified handshake come from OpenSSL's own parse (`getpeercert`) and hashlib; cryptography (60 ms to
import) is loaded only to describe what a failed verification presented."""

from __future__ import annotations

import _ssl
import hashlib
import ipaddress
import ssl
from datetime import datetime, timezone
from typing import Any

from probes import _stream
from probes._net import connect, require, tls_context
from probes._stream import handshake
from probes._trace import Fact, ProbeError, Trace
from probes.reasons import VERIFY_CODES, Reason
from probes.specs import TlsSpec as Spec


async def run(spec: Spec, addresses: tuple[str, ...], trace: Trace) -> None:
    """Pass when the handshake verifies; a trusted certificate from an issuer outside
    `expected_issuers` still passes the address on, then raises TLS_UNEXPECTED_ISSUER (a warning:
    the path works, but something re-signs the traffic). Either way the verified connection is
    left for the layer above."""
    trace.note(addresses_ok=[])
    targets = require(addresses)
    stream = _stream.take(spec, targets[0], trace)
    if stream is None:
        with trace.phase("connect"):
            stream = await _stream.connect(targets, spec.port)
    _stream.note(trace, stream.handed_by)
    trace.note(address=stream.address)
    kept = False
    try:
        with trace.phase("handshake"):
            try:
                verified = await handshake(stream.sock, tls_context(spec.cafile), spec.host, trace, stream.address)
            except ssl.SSLCertVerificationError as exc:
                trace.note(verify_code=exc.verify_code, verify_message=exc.verify_message)
                cert = await _capture(stream.address, spec, trace)
                reason = VERIFY_CODES.get(exc.verify_code, Reason.TLS_UNTRUSTED)
                raise ProbeError(reason, f"{exc.verify_message} (presented: {_who(cert)})") from exc
            assert verified.tls is not None
            cipher = verified.tls.cipher()
            cert = describe_verified(verified.tls)
            trace.note(version=verified.tls.version(), cipher=cipher[0] if cipher else None, cert=cert)
            trace.passed(stream.address)
            kept = _stream.leave(spec, verified)
            if spec.expected_issuers and cert["issuer_org"] not in spec.expected_issuers:
                raise ProbeError(Reason.TLS_UNEXPECTED_ISSUER,
                                 f"trusted, but issued by {_who(cert)}, "
                                 f"not {' or '.join(spec.expected_issuers)}")
    finally:
        if not kept:
            stream.close()


async def _capture(address: str, spec: Spec, trace: Trace) -> dict[str, Fact] | None:
    """Reconnect without verification to see the presented certificate. Best effort: the
    verification failure is the finding, this only explains it."""
    with trace.phase("capture"):
        try:
            sock = await connect(address, spec.port)
            try:
                tls = (await handshake(sock, tls_context(None, verify=False), spec.host, trace)).tls
            finally:
                sock.close()
        except (OSError, ProbeError) as exc:
            trace.note(capture_error=str(exc))
            return None
        assert tls is not None
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
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    issuer = x509.load_der_x509_certificate(der)
    return {"issuer_sha256": issuer.fingerprint(hashes.SHA256()).hex(),
            "issuer_subject": issuer.subject.rfc4514_string()}


def describe_cert(der: bytes) -> dict[str, Fact]:
    """The facts of a certificate a person acts on: who issued it, for which names, until when."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

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
        "days_left": (not_after - datetime.now(timezone.utc)).days,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "issuer_key_id": key_id.hex() if key_id else None,  # names the signing CA's key
    }


# The attribute names of OpenSSL's parse (getpeercert) that RFC 4514 writes short, as cryptography does;
# a name with any other attribute is described by cryptography instead.
_RFC4514_NAMES = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
                  "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
                  "domainComponent": "DC", "userId": "UID"}
_RFC4514_ESCAPES = str.maketrans({c: "\\" + c for c in '\\"+,;<>'} | {"\0": "\\00"})
_AUTHORITY_KEY_ID = b"\x55\x1d\x23"  # the extension's OID, 2.5.29.35, as DER writes it


def describe_verified(tls: ssl.SSLObject) -> dict[str, Fact]:
    """describe_cert's facts of a verified peer's certificate without cryptography: OpenSSL already
    parsed it (`getpeercert`), hashlib fingerprints it, and the authority key identifier is read from
    the DER. Anything this cannot write exactly as describe_cert does goes to describe_cert."""
    der = tls.getpeercert(binary_form=True) or b""
    parsed: dict[str, Any] = dict(tls.getpeercert() or {})  # OpenSSL's parse: nested tuples of strings
    try:
        subject, issuer = _rfc4514(parsed["subject"]), _rfc4514(parsed["issuer"])
        key_id = _authority_key_id(der)
    except (KeyError, IndexError, ValueError):
        return describe_cert(der)
    not_before = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(parsed["notBefore"])), timezone.utc)
    not_after = datetime.fromtimestamp(ssl.cert_time_to_seconds(str(parsed["notAfter"])), timezone.utc)
    orgs = [str(value) for rdn in parsed["issuer"] for name, value in rdn if name == "organizationName"]
    names: list[tuple[str, str]] = list(parsed.get("subjectAltName", ()))
    sans: list[Fact] = [*(value for kind, value in names if kind == "DNS"),
                        *(str(ipaddress.ip_address(value.strip())) for kind, value in names if kind == "IP Address")]
    return {
        "subject": subject,
        "issuer": issuer,
        "issuer_org": orgs[0] if orgs else None,
        "sans": sans,
        "not_before": not_before.isoformat(),
        "not_after": not_after.isoformat(),
        "days_left": (not_after - datetime.now(timezone.utc)).days,
        "sha256": hashlib.sha256(der).hexdigest(),
        "issuer_key_id": key_id,
    }


def _rfc4514(name: tuple[tuple[tuple[str, str], ...], ...]) -> str:
    """A name of getpeercert as cryptography's rfc4514_string writes it (last RDN first); KeyError
    for an attribute it would write as a dotted OID."""
    return ",".join("+".join(f"{_RFC4514_NAMES[key]}={_escape(str(value))}" for key, value in rdn)
                    for rdn in reversed(name))


def _escape(value: str) -> str:
    if not value:
        return ""
    value = value.translate(_RFC4514_ESCAPES)
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    return value[:-1] + "\\ " if value[-1] == " " else value


def _authority_key_id(der: bytes) -> str | None:
    """The keyIdentifier of the certificate's authority key identifier extension (RFC 5280 4.2.1.1),
    hex; None when it has none. IndexError or ValueError on DER this walk does not follow."""
    _, certificate, _ = _tlv(der, 0)
    _, position, end = _tlv(der, certificate)  # tbsCertificate
    while position < end:
        tag, start, position = _tlv(der, position)
        if tag != 0xA3:  # [3] extensions
            continue
        _, extension, extensions_end = _tlv(der, start)
        while extension < extensions_end:
            _, inside, extension = _tlv(der, extension)
            _, oid, after = _tlv(der, inside)
            if der[oid:after] != _AUTHORITY_KEY_ID:
                continue
            tag, value, value_end = _tlv(der, after)
            if tag == 0x01:  # critical
                tag, value, value_end = _tlv(der, value_end)
            _, field, fields_end = _tlv(der, value)  # the OCTET STRING holds a SEQUENCE
            if field < fields_end and der[field] == 0x80:  # [0] keyIdentifier
                _, key, key_end = _tlv(der, field)
                return der[key:key_end].hex()
            return None
        return None
    return None


def _tlv(der: bytes, position: int) -> tuple[int, int, int]:
    """The DER element at `position`: its tag, where its content starts and where it ends."""
    tag, length = der[position], der[position + 1]
    position += 2
    if length & 0x80:
        size = length & 0x7F
        if not 0 < size <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[position:position + size], "big")
        position += size
    if position + length > len(der):
        raise ValueError("DER element past the end")
    return tag, position, position + length


def _who(cert: dict[str, Fact] | None) -> str:
    return "unknown (capture failed)" if cert is None else f"issuer {cert['issuer']}"
