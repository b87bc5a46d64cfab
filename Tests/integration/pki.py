"""Certificates for the TLS tests. The main PKI comes from the project's own
scripts/dev-certs.sh (OpenSSL); the odd ones the tests need (another CA,
past validity dates, another identity) are made here with `cryptography`."""

from __future__ import annotations

import datetime
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import REPO_ROOT


def dev_pki(directory: Path, ca_dir: Path | None = None) -> Path:
    """The workload folder made by scripts/dev-certs.sh: ca.pem, server.pem/key
    (the gateway, spiffe://meshgate.local/gateway), replica.pem/key (the
    replicas, spiffe://meshgate.local/replica), client.pem/key
    (spiffe://meshgate.local/client); all for localhost and 127.0.0.1. The CA
    key is not there: it is in `ca_dir`, by default `ca` beside `directory`
    (see ca_dir_of)."""
    argv = [str(REPO_ROOT / "scripts/dev-certs.sh")] + (["--ca-dir", str(ca_dir)] if ca_dir else []) + [str(directory)]
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    return directory


def ca_dir_of(directory: Path) -> Path:
    """Where scripts/dev-certs.sh keeps the CA (ca.pem, ca.key) by default:
    the folder `ca` beside the workload folder."""
    return directory.parent / "ca"


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def load_ca(directory: Path, ca_dir: Path | None = None):
    """The dev CA of the workload folder `directory` (its key from the
    signing folder, never from `directory`), for issuing more identities."""
    ca_dir = ca_dir or ca_dir_of(directory)
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    return cert, key


def make_ca(directory: Path, name: str):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(directory: Path, name: str, ca, *, common_name: str, uris=(), dns=(), ips=(), server=False,
          not_before: datetime.datetime | None = None, not_after: datetime.datetime | None = None) -> tuple[Path, Path]:
    """A leaf certificate signed by `ca` (cert, key): returns (pem, key) paths."""
    import ipaddress
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    names = [x509.UniformResourceIdentifier(u) for u in uris] + [x509.DNSName(d) for d in dns] \
        + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - datetime.timedelta(days=1))
               .not_valid_after(not_after or now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                              critical=False))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    pem = _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    key_path = _write(directory / f"{name}.key", key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                                   serialization.NoEncryption()))
    return pem, key_path


def serial_of(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number
