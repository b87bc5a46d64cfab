"""TLS rotation beyond the listener's certificate (README "TLS and mutual
TLS", Rotation: "Certificate, key and CA files are checked every second
... New handshakes use new material at once"): a listener's client CA
file, and the upstream side, a cluster's `ca` and its `cert`/`key`.
Files are replaced by rename, as a secret mount or cert-manager does; no
reload is asked for."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import grpc

import pki
from coverkit import config_doc, mesh_route
from meshkit import HOST, free_port, insecure_channel, to_yaml, wait_until

SPIFFE_CLIENT = "spiffe://meshgate.local/client"


def replace_file(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    shutil.copy(source, tmp)
    os.replace(tmp, target)


def tls_call(port: int, pb2, pb2_grpc, root: Path, cert: Path, key: Path) -> object:
    """One Process call on a new TLS channel: the reply, or the RpcError."""
    creds = grpc.ssl_channel_credentials(root_certificates=root.read_bytes(), private_key=key.read_bytes(),
                                         certificate_chain=cert.read_bytes())
    with grpc.secure_channel(f"localhost:{port}", creds, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        try:
            return pb2_grpc.MeshServiceStub(ch).Process(pb2.ProcessRequest(request_id="rot"), timeout=5)
        except grpc.RpcError as error:
            return error


def plain_call(port: int, pb2, pb2_grpc) -> object:
    with insecure_channel(port) as ch:
        try:
            return pb2_grpc.MeshServiceStub(ch).Process(pb2.ProcessRequest(request_id="up"), timeout=5)
        except grpc.RpcError as error:
            return error


def test_a_rotated_client_ca_file_applies_to_new_handshakes(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """client_auth required with `ca: clients-ca.pem` holding CA A: a
    client of CA A is served, one of CA B refused. The file is replaced
    with CA B: within a few seconds the CA-B client is served and the CA-A
    client refused, without a reload."""
    certs = pki.dev_pki(tmp_path / "certs")
    ca_b = pki.make_ca(certs, "ca-b")
    client_b, client_b_key = pki.issue(certs, "client-b", ca_b, common_name="client", uris=[SPIFFE_CLIENT])
    clients_ca = certs / "clients-ca.pem"
    shutil.copy(certs / "ca.pem", clients_ca)
    replica = launcher.replica("tr1")
    port = free_port()
    doc = config_doc(port, None, {"mesh": [replica.port]}, [mesh_route()],
                     listener={"tls": {"cert": str(certs / "server.pem"), "key": str(certs / "server.key"),
                                       "ca": str(clients_ca), "client_auth": "required"}})
    gw = launcher.gateway(to_yaml(doc), port, name="gw-client-ca")
    root = certs / "ca.pem"  # the gateway's own certificate stays CA A's

    def as_a():
        return tls_call(port, mesh_pb2, mesh_pb2_grpc, root, certs / "client.pem", certs / "client.key")

    def as_b():
        return tls_call(port, mesh_pb2, mesh_pb2_grpc, root, client_b, client_b_key)
    assert wait_until(lambda: not isinstance(as_a(), grpc.RpcError), timeout=10, message="the CA-A client served")
    refused = as_b()
    assert isinstance(refused, grpc.RpcError) and refused.code() == grpc.StatusCode.UNAVAILABLE, refused

    replace_file(certs / "ca-b.pem", clients_ca)
    wait_until(lambda: not isinstance(as_b(), grpc.RpcError), timeout=10, interval=0.2,
               message=f"the CA-B client to be served after the CA file was replaced\n{gw.proc.describe()}")
    after = as_a()
    assert isinstance(after, grpc.RpcError) and after.code() == grpc.StatusCode.UNAVAILABLE, after
    assert "TLS material reloaded" in gw.proc.log_text()


def upstream_gateway(launcher, certs: Path, cluster_tls: dict, name: str) -> tuple[int, object]:
    """A replica serving TLS with replica.pem and requiring client
    certificates of the dev CA, behind a plaintext listener whose cluster
    speaks TLS with `cluster_tls`."""
    replica = launcher.replica("tu1", "--tls-cert", str(certs / "replica.pem"), "--tls-key", str(certs / "replica.key"),
                               "--tls-ca", str(certs / "ca.pem"))
    port = free_port()
    doc = config_doc(port, None, {"mesh": [replica.port]}, [mesh_route()],
                     cluster_extra={"mesh": {"tls": {**cluster_tls, "server_name": "localhost"}}})
    return port, launcher.gateway(to_yaml(doc), port, name=name)


def test_a_rotated_upstream_ca_file_applies_to_new_upstream_connections(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """The cluster's `ca` file first holds another CA, so the gateway
    refuses the replica's certificate and calls fail UNAVAILABLE. Replaced
    with the dev CA, calls succeed within a few seconds, without a reload."""
    certs = pki.dev_pki(tmp_path / "certs")
    pki.make_ca(certs, "other-ca")
    upstream_ca = certs / "upstream-ca.pem"
    shutil.copy(certs / "other-ca.pem", upstream_ca)
    port, gw = upstream_gateway(launcher, certs, {"ca": str(upstream_ca), "cert": str(certs / "server.pem"),
                                                  "key": str(certs / "server.key")}, "gw-upstream-ca")
    failed = plain_call(port, mesh_pb2, mesh_pb2_grpc)
    assert isinstance(failed, grpc.RpcError) and failed.code() == grpc.StatusCode.UNAVAILABLE, failed

    replace_file(certs / "ca.pem", upstream_ca)
    reply = wait_until(lambda: (lambda r: None if isinstance(r, grpc.RpcError) else r)(plain_call(port, mesh_pb2, mesh_pb2_grpc)),
                       timeout=15, interval=0.2,
                       message=f"calls to succeed after the upstream CA file was replaced\n{gw.proc.describe()}")
    assert reply.replica_id == "tu1"


def test_a_rotated_upstream_client_certificate_applies_to_new_upstream_connections(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """The cluster's `cert`/`key` first hold an identity of another CA, so
    the replica (requiring dev-CA client certificates) refuses the
    gateway's handshake and calls fail UNAVAILABLE. The files are replaced
    (key, then certificate) with the gateway's dev identity: calls
    succeed within a few seconds, without a reload."""
    certs = pki.dev_pki(tmp_path / "certs")
    foreign = pki.make_ca(certs, "foreign-ca")
    foreign_cert, foreign_key = pki.issue(certs, "foreign-gw", foreign, common_name="gateway",
                                          uris=["spiffe://meshgate.local/gateway"])
    gw_cert, gw_key = certs / "gw-up.pem", certs / "gw-up.key"
    shutil.copy(foreign_cert, gw_cert)
    shutil.copy(foreign_key, gw_key)
    os.chmod(gw_key, 0o600)
    port, gw = upstream_gateway(launcher, certs, {"ca": str(certs / "ca.pem"), "cert": str(gw_cert), "key": str(gw_key)},
                                "gw-upstream-cert")
    failed = plain_call(port, mesh_pb2, mesh_pb2_grpc)
    assert isinstance(failed, grpc.RpcError) and failed.code() == grpc.StatusCode.UNAVAILABLE, failed

    replace_file(certs / "server.key", gw_key)
    replace_file(certs / "server.pem", gw_cert)
    reply = wait_until(lambda: (lambda r: None if isinstance(r, grpc.RpcError) else r)(plain_call(port, mesh_pb2, mesh_pb2_grpc)),
                       timeout=15, interval=0.2,
                       message=f"calls to succeed after the upstream client certificate was replaced\n{gw.proc.describe()}")
    assert reply.replica_id == "tu1"
