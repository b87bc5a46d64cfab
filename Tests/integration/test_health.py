"""Health: grpc.health.v1 served by the gateway itself, active checks of
the upstreams taking failing replicas out of rotation, the admin probes,
and NOT_SERVING before GOAWAY on SIGTERM. Real clients: grpcio's health
stubs (grpcio-health-checking), grpcurl, urllib."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Launcher, mesh_routes
from meshkit import HOST, free_port, gateway_config, insecure_channel, to_yaml, wait_until

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
SERVICE = "mesh.v1.MeshService"
INTERVAL_S = 0.2
THRESHOLD = 2


def health_config(port: int, admin_port: int, replica_ports: list[int], mode: str) -> str:
    """The session-style gateway plus active checks and an admin address."""
    config = gateway_config(port, clusters={"mesh": replica_ports}, routes=mesh_routes(), drain_timeout="5s")
    doc_tail = to_yaml({"health_check": {
        "mode": mode, "interval": f"{int(INTERVAL_S * 1000)}ms", "timeout": "500ms",
        "unhealthy_threshold": THRESHOLD, "healthy_threshold": THRESHOLD,
    }}, indent=4)
    config = config.replace("  - name: mesh\n", "  - name: mesh\n" + doc_tail, 1)
    return f"admin: {{ address: {HOST}:{admin_port} }}\n" + config


class HealthMesh:
    def __init__(self, launch: Launcher, pb2, pb2_grpc, mode: str):
        self.pb2, self.pb2_grpc = pb2, pb2_grpc
        self.replicas = {rid: launch.replica(rid) for rid in ("h1", "h2", "h3")}
        self.port, self.admin_port = free_port(), free_port()
        config = health_config(self.port, self.admin_port, [r.port for r in self.replicas.values()], mode)
        assert f"mode: {mode}" in config
        self.gateway = launch.gateway(config, self.port, name=f"gw-health-{mode}")
        self.channel = insecure_channel(self.port)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.stub = pb2_grpc.MeshServiceStub(self.channel)
        self._controls = {rid: pb2_grpc.SampleControlStub(insecure_channel(r.port)) for rid, r in self.replicas.items()}

    def set_serving(self, rid: str, serving: bool) -> None:
        self._controls[rid].SetServing(self.pb2.SetServingRequest(serving=serving), timeout=5)

    def calls(self, rid: str) -> int:
        return self._controls[rid].GetStats(self.pb2.StatsRequest(), timeout=5).calls

    def check(self, service: str):
        return self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

    def endpoint_health(self, rid: str) -> float | None:
        """grpc_endpoint_health of one replica's endpoint on /metrics (1 healthy, 0 not)."""
        text = urllib.request.urlopen(f"http://{HOST}:{self.admin_port}/metrics", timeout=5).read().decode()
        wanted = f'endpoint="{HOST}:{self.replicas[rid].port}"'
        for line in text.splitlines():
            if line.startswith("grpc_endpoint_health{") and wanted in line:
                return float(line.rsplit(" ", 1)[1])
        return None

    def spread(self, n: int) -> Counter:
        return Counter(self.stub.Process(self.pb2.ProcessRequest(request_id=str(i)), timeout=5).replica_id
                       for i in range(n))


@pytest.fixture(scope="module", params=["check", "watch"])
def hmesh(request, bins, mesh_pb2, mesh_pb2_grpc, tmp_path_factory):
    launch = Launcher(bins, tmp_path_factory.mktemp(f"health-{request.param}"))
    try:
        m = HealthMesh(launch, mesh_pb2, mesh_pb2_grpc, request.param)
        wait_until(lambda: m.check(SERVICE) == SERVING, timeout=10, message="the service to be SERVING")
        yield m
        m.channel.close()
    finally:
        launch.stop_all()


def test_grpcio_check(hmesh):
    """Check answers for the gateway itself, a routed service, the health
    service's own name (Kubernetes liveness probes ask for it) and refuses an
    unknown service with NOT_FOUND."""
    assert hmesh.check("") == SERVING
    assert hmesh.check(SERVICE) == SERVING
    assert hmesh.check("grpc.health.v1.Health") == SERVING
    with pytest.raises(grpc.RpcError) as info:
        hmesh.check("no.such.Service")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpcurl_check(hmesh):
    """grpcurl (descriptors from reflection routed to the replicas) gets SERVING."""
    out = subprocess.run(["grpcurl", "-plaintext", "-d", json.dumps({"service": SERVICE}),
                          f"{HOST}:{hmesh.port}", "grpc.health.v1.Health/Check"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"status": "SERVING"}


def test_watch_unknown_service_stays_open(hmesh):
    """Watch on an unknown service sends SERVICE_UNKNOWN and keeps the stream open."""
    call = hmesh.health.Watch(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert next(call).status == SERVICE_UNKNOWN
    time.sleep(0.5)
    assert call.is_active()
    call.cancel()


def test_admin_probes(hmesh):
    """The admin address answers /healthz and /ready with 200, others 404."""
    for path in ("/healthz", "/ready"):
        with urllib.request.urlopen(f"http://{HOST}:{hmesh.admin_port}{path}", timeout=5) as r:
            assert r.status == 200
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{HOST}:{hmesh.admin_port}/nope", timeout=5)
    assert info.value.code == 404


def test_unhealthy_replica_leaves_rotation(hmesh):
    """A replica turned NOT_SERVING gets no calls once interval × threshold
    has passed, while the service stays SERVING; turned back, it serves again."""
    assert hmesh.endpoint_health("h2") == 1
    hmesh.set_serving("h2", False)
    try:
        wait_until(lambda: hmesh.endpoint_health("h2") == 0, timeout=5, interval=0.05,
                   message="h2 marked unhealthy by its checks")
        before = hmesh.calls("h2")
        spread = hmesh.spread(30)
        assert hmesh.calls("h2") == before, spread
        assert set(spread) == {"h1", "h3"}
        assert hmesh.check(SERVICE) == SERVING
    finally:
        hmesh.set_serving("h2", True)
    wait_until(lambda: "h2" in hmesh.spread(6), timeout=5, interval=0.2, message="h2 back in rotation")


def test_all_down_then_back_seen_by_watch(hmesh):
    """All replicas NOT_SERVING: Check says NOT_SERVING, calls get
    UNAVAILABLE, and a Watch sees SERVING -> NOT_SERVING -> SERVING."""
    seen: list[int] = []
    watch = hmesh.health.Watch(health_pb2.HealthCheckRequest(service=SERVICE), timeout=30)

    def read():
        try:
            for response in watch:
                seen.append(response.status)
        except grpc.RpcError:
            pass
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: seen == [SERVING], timeout=5, message="the first Watch message")
    for rid in hmesh.replicas:
        hmesh.set_serving(rid, False)
    try:
        wait_until(lambda: hmesh.check(SERVICE) == NOT_SERVING, timeout=5, interval=0.1,
                   message="NOT_SERVING with every replica down")
        with pytest.raises(grpc.RpcError) as info:
            hmesh.stub.Process(hmesh.pb2.ProcessRequest(request_id="x"), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "healthy" in info.value.details()
    finally:
        for rid in hmesh.replicas:
            hmesh.set_serving(rid, True)
    wait_until(lambda: hmesh.check(SERVICE) == SERVING, timeout=5, interval=0.1, message="SERVING again")
    wait_until(lambda: seen[-1:] == [SERVING] and NOT_SERVING in seen, timeout=5, message="the Watch to see both changes")
    assert seen[0] == SERVING and NOT_SERVING in seen and seen[-1] == SERVING, seen
    watch.cancel()
    assert hmesh.stub.Process(hmesh.pb2.ProcessRequest(request_id="y"), timeout=5).replica_id


def test_killed_replica_detected_without_failed_calls(hmesh, launcher, bins):
    """A replica killed hard while calls run without pause: its checks mark
    it unhealthy within interval × threshold (plus a check's timeout), no
    call started after the kill fails, during or after that window (the
    gateway's own connect failure handling covers the gap; a call that was
    in flight on the killed replica may be lost, UNAVAILABLE), and the
    service stays SERVING."""
    victim = hmesh.replicas["h3"]
    assert hmesh.endpoint_health("h3") == 1
    stop = threading.Event()
    done: list[tuple[float, str]] = []
    failures: list[tuple[float, str]] = []

    def load():
        stub = hmesh.pb2_grpc.MeshServiceStub(hmesh.channel)
        while not stop.is_set():
            started = time.monotonic()
            try:
                reply = stub.Process(hmesh.pb2.ProcessRequest(request_id="k"), timeout=5)
                done.append((started, reply.replica_id))
            except grpc.RpcError as error:
                failures.append((started, f"{error.code()}: {error.details()}"))
    caller = threading.Thread(target=load, daemon=True)
    caller.start()
    try:
        wait_until(lambda: {"h1", "h2", "h3"} <= {rid for _, rid in done}, timeout=5, message="calls on every replica")
        victim.proc.popen.kill()
        victim.proc.popen.wait(timeout=5)
        killed = time.monotonic()
        wait_until(lambda: hmesh.endpoint_health("h3") == 0, timeout=5, interval=0.02, message="h3 marked unhealthy")
        detected = time.monotonic() - killed
        # interval × threshold, a check's timeout (500 ms) and scheduling slack.
        assert detected < INTERVAL_S * THRESHOLD + 0.5 + 1.0, detected
        mark = len(done)
        wait_until(lambda: len(done) > mark + 20, timeout=5, message="calls after the detection")
    finally:
        stop.set()
        caller.join(timeout=10)
    try:
        # At most the one call in flight on h3 when it died is lost; every
        # call started after the kill succeeded, on h1 or h2.
        assert len(failures) <= 1 and all(started < killed and "UNAVAILABLE" in what for started, what in failures), failures
        after = [rid for started, rid in done if started > killed]
        assert len(after) > 20 and set(after) <= {"h1", "h2"}, Counter(after)
        spread = hmesh.spread(20)
        assert set(spread) == {"h1", "h2"}, spread
        assert hmesh.check(SERVICE) == SERVING
    finally:
        # Bring h3 back on the same port for the tests that follow.
        hmesh.replicas["h3"] = launcher.replica("h3", port=victim.port)
        hmesh._controls["h3"] = hmesh.pb2_grpc.SampleControlStub(insecure_channel(victim.port))
    wait_until(lambda: "h3" in hmesh.spread(6), timeout=10, interval=0.3, message="h3 back after restart")


def test_sigterm_turns_not_serving_before_goaway(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """On SIGTERM a Watch on "" sees NOT_SERVING (and /ready turns 503)
    before the gateway closes; the Watch then ends and the process exits 0."""
    launch = Launcher(bins, tmp_path)
    try:
        replica = launch.replica("d1")
        port, admin_port = free_port(), free_port()
        gw = launch.gateway(health_config(port, admin_port, [replica.port], "watch"), port, name="gw-health-drain")
        with insecure_channel(port) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
            assert next(watch).status == SERVING
            gw.proc.send_signal(signal.SIGTERM)
            assert next(watch).status == NOT_SERVING
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://{HOST}:{admin_port}/ready", timeout=5)
            assert info.value.code == 503
            with pytest.raises(grpc.RpcError) as ended:
                next(watch)
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert gw.proc.wait(timeout=10) == 0
    finally:
        launch.stop_all()


def test_a_health_only_listener_serves_probes_and_nothing_else(mesh, launcher, bins):
    """`health_only: true`: a plaintext port for probes that cannot present
    a client certificate (Kubernetes' gRPC probes). It answers
    grpc.health.v1 for every service the gateway routes, refuses every
    other call with UNIMPLEMENTED naming why, and `meshgate probe` (the
    container image's HEALTHCHECK) gives grpc_health_probe's exit codes:
    0 SERVING, 4 NOT_SERVING, 3 an RPC error, 2 no connection, 1 bad
    arguments."""
    import yaml
    port, health_port, dead_port = free_port(), free_port(), free_port()
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()], "dead": [dead_port]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
                                                {"match": {"service": "grpc.reflection.v1.ServerReflection"}, "cluster": "dead"}]))
    dead = next(c for c in doc["clusters"] if c["name"] == "dead")
    dead["health_check"] = {"mode": "check", "interval": "1s", "timeout": "500ms"}
    doc["listeners"].append({"name": "health", "address": f"{HOST}:{health_port}", "health_only": True})
    launcher.gateway(to_yaml(doc), port, name="gw-health-only")
    wait_until(lambda: __import__("meshkit").port_accepts(health_port), timeout=5, message="the health port")

    with insecure_channel(health_port) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="mesh.v1.MeshService"), timeout=5).status == SERVING
        # The dead cluster's endpoint leaves rotation once its checks fail.
        wait_until(lambda: health.Check(health_pb2.HealthCheckRequest(service="grpc.reflection.v1.ServerReflection"),
                                        timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING,
                   timeout=10, interval=0.2, message="the dead cluster NOT_SERVING")
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.Process(mesh.pb2.ProcessRequest(request_id="x", data="x"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "serves only grpc.health.v1" in refused.value.details()
    # The same call on the public listener is served.
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        assert stub.Process(mesh.pb2.ProcessRequest(request_id="x", data="x"), timeout=5).result == "processed: x"

    def probe(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bins.meshgate), "probe", *args], capture_output=True, text=True, timeout=20)
    ok = probe("--addr", f"{HOST}:{health_port}", "--service", "mesh.v1.MeshService")
    assert ok.returncode == 0 and "SERVING" in ok.stdout, ok
    down = probe("--addr", f"{HOST}:{health_port}", "--service", "grpc.reflection.v1.ServerReflection")
    assert down.returncode == 4 and "NOT_SERVING" in down.stderr, down
    unknown = probe("--addr", f"{HOST}:{health_port}", "--service", "no.such.Service")
    assert unknown.returncode == 3 and "NOT_FOUND" in unknown.stderr, unknown
    nobody = probe("--addr", f"{HOST}:{free_port()}", "--connect-timeout", "500ms")
    assert nobody.returncode == 2 and "cannot connect" in nobody.stderr, nobody
    bad = probe("--addr", "no-port-here")
    assert bad.returncode == 1 and "HOST:PORT" in bad.stderr, bad


def test_a_health_only_listener_takes_no_routes(bins, tmp_path):
    config = tmp_path / "mesh.yaml"
    config.write_text("listeners:\n  - name: probes\n    address: 127.0.0.1:1\n    health_only: true\n"
                      "    routes: []\nclusters: []\n")
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(config)], capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert f"{config}:5:13: listeners[0].routes: a health_only listener serves only grpc.health.v1" in result.stderr


def test_a_health_only_port_holds_256_connections_by_default(bins, launcher):
    """The plaintext probe port is public: without max_connections it keeps
    256 connections open at once (idle ones too: each is one descriptor);
    one of 257 is accepted and closed at once, probes work again once some
    close, and its `listening` line says the default (issue 26)."""
    import socket
    port, health_port = free_port(), free_port()
    gateway = launcher.gateway(to_yaml({
        "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": []},
                      {"name": "probes", "address": f"{HOST}:{health_port}", "health_only": True}],
        "clusters": []}), port, name="gw-probe-cap")
    held = []
    try:
        for _ in range(257):
            held.append(socket.create_connection((HOST, health_port), timeout=5))
        # Which one is refused depends on which event loop sets its
        # connection up first; one of the 257 is closed at once.
        closed = _closed_within(held, seconds=3)
        assert len(closed) == 1, f"{len(closed)} of 257 connections were closed"
        held = [sock for sock in held if sock not in closed]
        closed[0].close()
        for sock in held[:16]:
            sock.close()

        def probes() -> bool:
            try:
                with insecure_channel(health_port) as channel:
                    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status == SERVING
            except grpc.RpcError:
                return False
        wait_until(probes, timeout=10, interval=0.2, message="a probe once slots are free")
        listening = [json.loads(line) for line in gateway.proc.log_text().splitlines()
                     if line.startswith("{") and '"listening"' in line]
        assert {line["listener"]: line["max_connections"] for line in listening}["probes"] == "256 (default)", listening
    finally:
        for sock in held:
            sock.close()


def _closed_within(socks, seconds: float) -> list:
    """The sockets of `socks` their peer closes within `seconds` (EOF or reset)."""
    import select
    import socket
    import time
    closed = []
    deadline = time.monotonic() + seconds
    open_ = list(socks)
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(open_, [], [], max(0.0, deadline - time.monotonic()))
        for sock in readable:
            try:
                data = sock.recv(4096, socket.MSG_DONTWAIT)
            except ConnectionResetError:
                data = b""
            except BlockingIOError:
                continue
            if not data:
                closed.append(sock)
                open_.remove(sock)
    return closed
