"""A local certificate authority for one instance: its CA, the server's certificate and, for
mutual TLS, a client certificate, all made with the ``cryptography`` package.

Each instance gets a CA of its own (nothing is added to the system's trust store): the client
commands trust exactly that CA when they talk to that instance. EC P-256 keys: quick to make
(milliseconds; RSA 2048 takes a noticeable fraction of a second on a busy machine) and accepted
by every TLS stack the OpenAI clients use.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

# Always in the server certificate: the addresses `nimctl run` publishes on by default.
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
CA_VALID_DAYS = 825  # the longest a server certificate is trusted by Apple's TLS stack
CERT_VALID_DAYS = 825


@dataclass(frozen=True)
class Issued:
    """PEM bytes of one certificate and its private key."""

    cert_pem: bytes
    key_pem: bytes


def _key() -> EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: EllipticCurvePrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    organization = x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nimctl")
    return x509.Name([organization, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: object, days: int) -> x509.CertificateBuilder:
    from cryptography import x509

    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        # An hour back: a container's clock a little behind the host's must not reject it.
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def make_ca(instance: str) -> tuple[Issued, EllipticCurvePrivateKey]:
    """A CA for ``instance``; its key is returned to sign with and is not kept anywhere."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    key = _key()
    name = _name(f"nimctl CA for {instance}")
    cert = (
        _builder(name, name, key.public_key(), CA_VALID_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)), key


def issue(
    ca_cert_pem: bytes,
    ca_key: EllipticCurvePrivateKey,
    common_name: str,
    *,
    hosts: Iterable[str] = (),
    client: bool = False,
) -> Issued:
    """A leaf certificate the CA signs: for a server (valid for ``hosts``) or, ``client``, a client."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = _key()
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), CERT_VALID_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if not client:
        builder = builder.add_extension(x509.SubjectAlternativeName(_alt_names(hosts)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return Issued(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _alt_names(hosts: Iterable[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*LOOPBACK_NAMES, *hosts]):
        bare = host.strip().removeprefix("[").removesuffix("]")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(bare)))
        except ValueError:
            names.append(x509.DNSName(bare))
    return names
