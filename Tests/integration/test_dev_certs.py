"""scripts/dev-certs.sh lays a development PKI out as a real one: the CA's
private key stays in its signing folder, never in the workload folder that
containers mount and Kubernetes Secrets are made from, and the gateway, the
replicas and a client each get their own identity. Parsed with
`cryptography`, not trusted from file names."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

import pki
from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts/dev-certs.sh"
SPIFFE = {"server": "spiffe://meshgate.local/gateway", "replica": "spiffe://meshgate.local/replica",
          "client": "spiffe://meshgate.local/client"}
USAGES = {"server": {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH},
          "replica": {ExtendedKeyUsageOID.SERVER_AUTH},
          "client": {ExtendedKeyUsageOID.CLIENT_AUTH}}


def public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_keys_in(directory: Path) -> dict[Path, object]:
    """Every private key under `directory`, whatever the file is called."""
    keys = {}
    for path in directory.rglob("*"):
        if path.is_file() and b"PRIVATE KEY" in path.read_bytes():
            keys[path] = serialization.load_pem_private_key(path.read_bytes(), password=None)
    return keys


def test_the_workload_folder_holds_no_ca_key_and_one_identity_per_workload(tmp_path):
    certs = pki.dev_pki(tmp_path / "certs")
    ca_dir = pki.ca_dir_of(certs)
    assert ca_dir == tmp_path / "ca"
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    # The CA key is in the signing folder, matches the CA certificate, and
    # only its owner can read it (or list the folder).
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    assert public_der(ca_key.public_key()) == public_der(ca_cert.public_key())
    assert (ca_dir / "ca.pem").read_bytes() == (certs / "ca.pem").read_bytes()
    assert (ca_dir / "ca.key").stat().st_mode & 0o077 == 0
    assert ca_dir.stat().st_mode & 0o077 == 0

    # The workload folder: the CA certificate and three identities, and no
    # key in it (by any name) is the CA's.
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem", "client.key", "client.pem", "replica.key", "replica.pem",
                                                        "server.key", "server.pem"]
    keys = private_keys_in(certs)
    assert sorted(p.name for p in keys) == ["client.key", "replica.key", "server.key"]
    for path, key in keys.items():
        assert public_der(key.public_key()) != public_der(ca_cert.public_key()), f"{path} is the CA's key"
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others: {oct(path.stat().st_mode)}"

    identities = {}
    for name in ("server", "replica", "client"):
        cert = x509.load_pem_x509_certificate((certs / f"{name}.pem").read_bytes())
        cert.verify_directly_issued_by(ca_cert)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca, name
        assert public_der(keys[certs / f"{name}.key"].public_key()) == public_der(cert.public_key()), f"{name}.key is not {name}.pem's"
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE[name]], name
        assert set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == USAGES[name], name
        identities[name] = (public_der(cert.public_key()), cert.subject.rfc4514_string())
        if name != "client":   # the servers answer on loopback in the demo and the tests
            assert "localhost" in sans.get_values_for_type(x509.DNSName), name
    assert len({key for key, _ in identities.values()}) == 3, "each workload has its own key"
    assert len({subject for _, subject in identities.values()}) == 3, identities
    # The names the Kubernetes manifests verify them by.
    replica = x509.load_pem_x509_certificate((certs / "replica.pem").read_bytes())
    assert "mesh-replicas" in replica.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)


def test_a_ca_folder_inside_the_workload_folder_is_refused(tmp_path):
    certs = tmp_path / "certs"
    result = subprocess.run([str(SCRIPT), "--ca-dir", str(certs / "signing"), str(certs)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "is inside the workload folder" in result.stderr, result.stderr
    assert not private_keys_in(tmp_path), "no key may be written"


def test_a_second_run_keeps_the_ca_renews_the_identities_and_drops_an_old_layouts_ca_key(tmp_path):
    certs = pki.dev_pki(tmp_path / "certs")
    ca_pem = (certs / "ca.pem").read_bytes()
    server_pem = (certs / "server.pem").read_bytes()
    # The layout of older versions: the CA key beside the workload keys.
    (certs / "ca.key").write_bytes((pki.ca_dir_of(certs) / "ca.key").read_bytes())
    pki.dev_pki(certs)
    assert not (certs / "ca.key").exists()
    assert (certs / "ca.pem").read_bytes() == ca_pem, "the trust anchor stays"
    assert (certs / "server.pem").read_bytes() != server_pem, "the identities are issued again"
    x509.load_pem_x509_certificate((certs / "server.pem").read_bytes()) \
        .verify_directly_issued_by(x509.load_pem_x509_certificate(ca_pem))
