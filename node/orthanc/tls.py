"""Certificates for the node's HTTPS and DICOM TLS: a self-signed pair for a first run, and the
checks and the one file Orthanc's HTTP server reads.

Made with ``cryptography`` rather than by calling ``openssl``: no shell-out, no dependency on
the tool's version or its configuration file, and the same code checks a pair an admin brings.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from node.errors import ConfigurationError
from node.support.private import write_private

#: the names every self-signed certificate carries: the node's own clients connect to 127.0.0.1
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
#: BCP 195 (RFC 9325) asks for at least 2048-bit RSA; DICOM devices of every age accept it
RSA_BITS = 2048
DEFAULT_DAYS = 825


@dataclass(frozen=True)
class CertificatePair:
    certificate: Path
    private_key: Path


def make_self_signed(
    folder: Path, *, names: Sequence[str] = (), days: int = DEFAULT_DAYS, stem: str = "node"
) -> CertificatePair:
    """Write ``STEM.crt`` (the certificate, 644) and ``STEM.key`` (its key, 600) into ``folder``.

    The certificate names this machine (its host name), ``localhost``, 127.0.0.1 and ::1, and
    ``names`` (host names or IP addresses other hosts reach it by). It is its own issuer: a
    client trusts it by being given the ``.crt`` file (requests' ``verify=``, storescu's
    ``--add-cert-file``)."""
    if days < 1:
        raise ConfigurationError(f"a certificate must be valid for at least 1 day, not {days}")
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    host = socket.gethostname()
    all_names = list(dict.fromkeys([host, *LOCAL_NAMES, *names]))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName([_general_name(name) for name in all_names]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        # server for HTTPS and the DICOM port, client for the node's own DICOM TLS calls
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    pair = CertificatePair(folder / f"{stem}.crt", folder / f"{stem}.key")
    write_private(
        pair.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
    )
    pair.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pair.certificate.chmod(0o644)  # public: modalities and browsers are given it
    return pair


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def check_pair(certificate: Path, private_key: Path, *, setting: str) -> tuple[bytes, bytes]:
    """The PEM bytes of a certificate (chain) and its key, after checking that both can be read
    and that the key is the certificate's; a bad pair stops the start with what is wrong."""
    try:
        chain_pem = certificate.read_bytes()
        key_pem = private_key.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"{setting}: {error.filename} cannot be read: {error.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
    except ValueError:
        raise ConfigurationError(f"{setting}.certificate: {certificate} holds no PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise ConfigurationError(
            f"{setting}.private_key: {private_key} is not an unencrypted PEM private key"
        ) from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if chain[0].public_key().public_bytes(der, public) != key.public_key().public_bytes(der, public):
        raise ConfigurationError(
            f"{setting}: the private key {private_key} is not the key of the certificate {certificate}"
        )
    return chain_pem, key_pem


def write_orthanc_pem(certificate: Path, private_key: Path, target: Path) -> Path:
    """Orthanc's ``SslCertificate``: one PEM with the certificate (chain) and the key, mode 600."""
    chain_pem, key_pem = check_pair(certificate, private_key, setting="orthanc.https")
    write_private(target, chain_pem.rstrip(b"\n") + b"\n" + key_pem)
    return target
