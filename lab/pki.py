"""The lab's certificate authorities and the leaf certificates its HTTPS server presents.

As on Azure, a root the node trusts signs an issuing CA that looks like Azure's to the agent's
expected-issuer check (O=Microsoft Corporation), and servers send the leaf with that issuing CA.
The inspection CA plays a TLS-inspecting firewall's self-signed CA, which issues leaves directly.
Leaves carry RSA 2048 keys, as Azure's do, so a server's certificate flight is well over 1200
bytes: what a path-MTU black hole swallows.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LAB_ROOT = ("DigiCert Inc", "Lab DigiCert Global Root G2")
LAB_CA = ("Microsoft Corporation", "Lab Azure TLS Issuing CA")
INSPECTION_CA = ("Contoso Firewall", "Contoso Inspection CA")


@dataclass(frozen=True, slots=True)
class CAFiles:
    cert: Path
    key: Path


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _pem_key(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(
    directory: Path, stem: str, subject: tuple[str, str], signer: CAFiles | None = None
) -> CAFiles:
    """A CA (organization, common name), written as <stem>.pem and <stem>.key: self-signed, or
    an issuing CA signed by `signer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(*subject)
    public = key.public_key()
    issuer_name, issuer_key = name, key
    if signer is not None:
        signer_cert, issuer_key = _load(signer)
        issuer_name = signer_cert.subject
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now() - datetime.timedelta(days=1))
        .not_valid_after(_now() + datetime.timedelta(days=30))
        .add_extension(
            x509.BasicConstraints(ca=True, path_length=None if signer is None else 0),
            critical=True,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )
    files = CAFiles(directory / f"{stem}.pem", directory / f"{stem}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(_pem_key(key))
    files.key.chmod(0o600)
    return files


def _load(ca: CAFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return x509.load_pem_x509_certificate(ca.cert.read_bytes()), key


class Issuer:
    """Issues leaf certificates from one CA; all leaves share one key (fast, and harmless here).

    clock_offset shifts the issuer's idea of now: leaves are valid from an hour before it, so a
    node whose clock is behind by more than that sees them as not yet valid."""

    def __init__(self, ca: CAFiles, clock_offset: datetime.timedelta = datetime.timedelta()) -> None:
        self._cert, self._key = _load(ca)
        self._chain = b"" if self._cert.issuer == self._cert.subject else (
            self._cert.public_bytes(serialization.Encoding.PEM)
        )
        self._offset = clock_offset
        self._leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def issue(self, name: str) -> bytes:
        """PEM of a leaf certificate for name (a DNS name or an IP address), the issuing CA
        unless it is a root (servers send intermediates, not roots), then the leaf's key."""
        try:
            san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        except ValueError:
            san = x509.DNSName(name)
        public = self._leaf_key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self._cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() + self._offset - datetime.timedelta(hours=1))
            .not_valid_after(_now() + self._offset + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName([san]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM) + self._chain + _pem_key(self._leaf_key)
