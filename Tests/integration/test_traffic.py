"""Traffic plugins (ABI 1.3) through real traffic: `rate_limit` (token
buckets shared by every event loop, RESOURCE_EXHAUSTED with
grpc-retry-pushback-ms, honoured by the retry plugin of a gateway in
front) and `mirror` (a share of the calls copied to a shadow cluster,
which is a raw HTTP/2 server here so that it can record the shadow's
:authority, stall, or not exist at all); plugins built against the 1.2
header still load beside them."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from conftest import REPO_ROOT
from meshkit import HOST, addr, free_port, insecure_channel, port_accepts, to_yaml, wait_until

HERE = Path(__file__).resolve().parent


def config(port: int, admin: int, routes: list[dict], clusters: dict[str, list[int]]) -> str:
    return to_yaml({
        "runtime": {"drain_timeout": "2s"},
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "public", "address": addr(port), "routes": routes}],
        "clusters": [{"name": name, "connect_timeout": "1s", "endpoints": [{"address": addr(p)} for p in ports]}
                     for name, ports in clusters.items()],
    })


def metric(admin: int, name: str, labels: str) -> float:
    text = urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", line)
        if m and all(part in m.group(1) for part in labels.split(",")):
            return float(m.group(2))
    return 0.0


# --------------------------------------------------------------------------
# rate_limit


def paced_calls(stub, pb, rate: float, seconds: float, metadata) -> list[tuple[bool, grpc.RpcError | None]]:
    """Calls at `rate` per second for `seconds`, each from its own thread
    at its scheduled time (a slow answer does not slow the pace)."""
    results = []
    lock = threading.Lock()

    def one(i):
        try:
            stub.Process(pb.ProcessRequest(request_id=f"rl{i}"), metadata=metadata, timeout=5)
            outcome = (True, None)
        except grpc.RpcError as error:
            outcome = (False, error)
        with lock:
            results.append(outcome)

    start = time.monotonic()
    n = int(rate * seconds)
    with ThreadPoolExecutor(max_workers=16) as pool:
        for i in range(n):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    return results


def test_a_client_at_three_times_the_rate_gets_a_third_through_and_another_key_is_unaffected(mesh, launcher):
    """rate 20/s, burst 4, keyed by x-user. alice calls at 60/s for 3 s over
    four connections (the gateway's event loops share her bucket): about
    20*3+4 = 64 of 180 pass. bob, at 10/s on the same route meanwhile,
    gets every call through. Refusals are RESOURCE_EXHAUSTED naming the
    limit, with grpc-retry-pushback-ms no later than one token interval."""
    port, admin = free_port(), free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
        {"plugin": "rate_limit", "config": {"name": "per-user", "rate": 20, "burst": 4, "key": "header", "header": "x-user"}}]}
    launcher.gateway(config(port, admin, [route], {"mesh": [mesh.replicas["r1"].port]}), port, name="gw-ratelimit")
    channels = [insecure_channel(port) for _ in range(5)]
    try:
        stubs = [mesh.pb2_grpc.MeshServiceStub(ch) for ch in channels]
        for stub in stubs:  # connect every channel first
            stub.Process(mesh.pb2.ProcessRequest(request_id="warm"), timeout=5)
        time.sleep(0.5)  # the warm-up calls (no x-user: not limited) leave no trace; let nothing be pending
        alice_results: list = []

        def alice(stub):
            alice_results.extend(paced_calls(stub, mesh.pb2, 15, 3, [("x-user", "alice")]))

        with ThreadPoolExecutor(max_workers=5) as pool:
            runs = [pool.submit(alice, stubs[i]) for i in range(4)]
            bob = pool.submit(paced_calls, stubs[4], mesh.pb2, 10, 3, [("x-user", "bob")])
            for run in runs:
                run.result()
            bob_results = bob.result()
        assert all(ok for ok, _ in bob_results), [e for _, e in bob_results if e][:3]
        assert len(bob_results) == 30
        passed = sum(1 for ok, _ in alice_results if ok)
        assert len(alice_results) == 180
        # 64 expected; the calls straddle ~3.1 s of wall time on a noisy machine.
        assert 50 <= passed <= 80, passed
        refused = [e for ok, e in alice_results if not ok]
        for error in refused:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
            assert "rate limit 'per-user' exceeded: 20 calls/s, burst 4, per x-user" in error.details()
            pushback = dict(error.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
            assert pushback is not None and 1 <= int(pushback) <= 50, pushback
        assert metric(admin, "meshgate_rate_limit_limited_total", 'limit="per-user"') == len(refused)
        assert metric(admin, "meshgate_rate_limit_allowed_total", 'limit="per-user"') == passed + 30
    finally:
        for ch in channels:
            ch.close()


def test_peer_address_key_and_bad_configs(mesh, launcher, bins, tmp_path):
    """key: peer limits by the client's IP (ABI 1.3 call_peer_address):
    with burst 2 and a slow rate, the third call from 127.0.0.1 is
    refused whatever connection it uses. Bad configs are refused with the
    reason."""
    port, admin = free_port(), free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
             "filters": [{"plugin": "rate_limit", "config": {"rate": 0.5, "burst": 2, "key": "peer"}}]}
    launcher.gateway(config(port, admin, [route], {"mesh": [mesh.replicas["r1"].port]}), port, name="gw-ratelimit-peer")
    outcomes = []
    for _ in range(3):
        with insecure_channel(port) as channel:
            try:
                mesh.pb2_grpc.MeshServiceStub(channel).Process(mesh.pb2.ProcessRequest(request_id="p"), timeout=5)
                outcomes.append("ok")
            except grpc.RpcError as error:
                outcomes.append(error.code().name)
                assert "per client address" in error.details()
                assert 1000 <= int(dict(error.trailing_metadata())["grpc-retry-pushback-ms"]) <= 2000
    assert outcomes == ["ok", "ok", "RESOURCE_EXHAUSTED"]
    for bad, message in [({"burst": 3}, "rate (calls per second) is required"),
                         ({"rate": 5, "key": "cookie"}, "key must be route, peer, identity or header"),
                         ({"rate": 5, "key": "header"}, "key: header needs `header: <name>`")]:
        path = tmp_path / "bad.yaml"
        route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [{"plugin": "rate_limit", "config": bad}]}
        path.write_text(config(free_port(), free_port(), [route], {"mesh": [free_port()]}))
        result = subprocess.run([str(bins.meshgate), "validate", "--config", str(path)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_the_least_recently_used_key_is_dropped_at_max_keys(mesh, launcher):
    """max_keys bounds the buckets: rate 0.1/s, burst 1, so each key's
    second call within 10 s is refused while its bucket is kept. With
    max_keys 2, keys a, b, c: c's bucket evicts a's (the least recently
    used), so b's second call is still refused (kept) while a's passes on
    a new bucket. With max_keys 3 nothing is evicted: both are refused."""
    def run(max_keys: int) -> list[str]:
        port, admin = free_port(), free_port()
        route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
            {"plugin": "rate_limit", "config": {"rate": 0.1, "burst": 1, "key": "header", "header": "x-user", "max_keys": max_keys}}]}
        launcher.gateway(config(port, admin, [route], {"mesh": [mesh.replicas["r1"].port]}), port, name=f"gw-maxkeys-{max_keys}")
        out = []
        with insecure_channel(port) as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)
            for user in ["a", "b", "c", "b", "a"]:
                try:
                    stub.Process(mesh.pb2.ProcessRequest(request_id=user), metadata=[("x-user", user)], timeout=5)
                    out.append(f"{user}:ok")
                except grpc.RpcError as error:
                    out.append(f"{user}:{error.code().name}")
        return out

    assert run(2) == ["a:ok", "b:ok", "c:ok", "b:RESOURCE_EXHAUSTED", "a:ok"]
    assert run(3) == ["a:ok", "b:ok", "c:ok", "b:RESOURCE_EXHAUSTED", "a:RESOURCE_EXHAUSTED"]


def limited_gateway(launcher, replica_port: int, name: str) -> tuple[int, int]:
    """A gateway limiting its route to 4 calls/s, burst 1: (port, admin)."""
    port, admin = free_port(), free_port()
    launcher.gateway(config(port, admin, [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                                           "filters": [{"plugin": "rate_limit", "config": {"rate": 4, "burst": 1}}]}],
                            {"mesh": [replica_port]}), port, name=name)
    return port, admin


def second_call_seconds(channel, mesh) -> float:
    """Two calls back to back; how long the second took (it must succeed)."""
    stub = mesh.pb2_grpc.MeshServiceStub(channel)
    stub.Process(mesh.pb2.ProcessRequest(request_id="first"), timeout=5)
    started = time.monotonic()
    stub.Process(mesh.pb2.ProcessRequest(request_id="second"), timeout=5)
    return time.monotonic() - started


def test_the_retry_plugin_in_front_waits_for_the_pushback(mesh, launcher):
    """A gateway with the retry plugin (RESOURCE_EXHAUSTED retryable,
    backoff 1 ms) in front of one that rate-limits the route to 4/s with
    burst 1. Two calls back to back: the second is refused upstream with
    a pushback of ~250 ms; the front waits that long (not its 1 ms
    backoff, which would spend every attempt at once and fail) and the
    call succeeds."""
    back, back_admin = limited_gateway(launcher, mesh.replicas["r2"].port, "gw-limited")
    front, front_admin = free_port(), free_port()
    retry = {"plugin": "retry", "config": {"max_attempts": 3, "initial_backoff": "1ms", "max_backoff": "1ms",
                                           "retryable_status_codes": ["RESOURCE_EXHAUSTED"]}}
    launcher.gateway(config(front, front_admin, [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "limited", "filters": [retry]}],
                            {"limited": [back]}), front, name="gw-front")
    with insecure_channel(front) as channel:
        took = second_call_seconds(channel, mesh)
    assert 0.15 <= took <= 1.5, took
    assert metric(back_admin, "meshgate_rate_limit_limited_total", 'limit="rate_limit"') == 1


def test_a_grpc_client_with_a_retry_policy_waits_for_the_pushback(mesh, launcher):
    """A grpcio channel whose service config retries RESOURCE_EXHAUSTED
    after 1 ms: the limiter's grpc-retry-pushback-ms (~250 ms) makes it
    wait, and the second of two back-to-back calls succeeds; without the
    pushback its three attempts would all be refused within milliseconds."""
    port, admin = limited_gateway(launcher, mesh.replicas["r3"].port, "gw-limited-grpcio")
    service_config = {"methodConfig": [{"name": [{"service": "mesh.v1.MeshService"}], "retryPolicy": {
        "maxAttempts": 3, "initialBackoff": "0.001s", "maxBackoff": "0.001s", "backoffMultiplier": 1,
        "retryableStatusCodes": ["RESOURCE_EXHAUSTED"]}}]}
    with insecure_channel(port, {"grpc.enable_retries": 1, "grpc.service_config": json.dumps(service_config)}) as channel:
        took = second_call_seconds(channel, mesh)
    assert 0.15 <= took <= 1.5, took
    assert metric(admin, "meshgate_rate_limit_limited_total", 'limit="rate_limit"') == 1


def test_identity_key_limits_each_client_certificate_apart(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """key: identity over mutual TLS: two clients with their own SPIFFE
    identities share nothing; with burst 2 each gets two calls through and
    the third refused, naming the identity limit."""
    import pki
    certs = pki.dev_pki(tmp_path / "certs")
    ca = pki.load_ca(certs)
    pki.issue(certs, "other", ca, common_name="other", uris=["spiffe://meshgate.local/other"])
    replica = launcher.replica("id1")
    port, admin = free_port(), free_port()
    doc = {
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "mtls", "address": addr(port),
                       "tls": {"cert": str(certs / "server.pem"), "key": str(certs / "server.key"), "ca": str(certs / "ca.pem"),
                               "client_auth": "required"},
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
                           {"plugin": "rate_limit", "config": {"name": "per-identity", "rate": 0.2, "burst": 2, "key": "identity"}}]}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": addr(replica.port)}]}],
    }
    launcher.gateway(to_yaml(doc), port, name="gw-limit-identity")

    def outcomes(cert: str) -> list[str]:
        creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes(),
                                             private_key=(certs / f"{cert}.key").read_bytes(),
                                             certificate_chain=(certs / f"{cert}.pem").read_bytes())
        out = []
        with grpc.secure_channel(f"localhost:{port}", creds, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(3):
                try:
                    stub.Process(mesh_pb2.ProcessRequest(request_id=f"{cert}{i}"), timeout=5)
                    out.append("ok")
                except grpc.RpcError as error:
                    assert "per client identity" in error.details(), error.details()
                    out.append(error.code().name)
        return out

    assert outcomes("client") == ["ok", "ok", "RESOURCE_EXHAUSTED"]
    assert outcomes("other") == ["ok", "ok", "RESOURCE_EXHAUSTED"]


def test_identity_key_reads_xfcc_quoting(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """key: identity when a client's DNS name holds `;URI=<someone else's
    URI>`: the gateway quotes it in x-forwarded-client-cert, and the rate
    limiter reads it as the one DNS name it is (not as that URI), so the
    client's calls do not use up the other identity's bucket. Three calls
    from it (the third refused), then the victim's two still pass."""
    import pki
    certs = pki.dev_pki(tmp_path / "certs")
    ca = pki.load_ca(certs)
    victim = "spiffe://meshgate.local/victim"
    pki.issue(certs, "victim", ca, common_name="victim", uris=[victim])
    pki.issue(certs, "smuggler", ca, common_name="smuggler", dns=[f"x;URI={victim};y"])
    replica = launcher.replica("xq1")
    port = free_port()
    doc = {
        "listeners": [{"name": "mtls", "address": addr(port),
                       "tls": {"cert": str(certs / "server.pem"), "key": str(certs / "server.key"), "ca": str(certs / "ca.pem"),
                               "client_auth": "required"},
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
                           {"plugin": "rate_limit", "config": {"name": "per-identity", "rate": 0.05, "burst": 2, "key": "identity"}}]}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": addr(replica.port)}]}],
    }
    launcher.gateway(to_yaml(doc), port, name="gw-limit-xfcc")

    def outcomes(cert: str, calls: int) -> list[str]:
        creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes(),
                                             private_key=(certs / f"{cert}.key").read_bytes(),
                                             certificate_chain=(certs / f"{cert}.pem").read_bytes())
        out = []
        with grpc.secure_channel(f"localhost:{port}", creds, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(calls):
                try:
                    stub.Process(mesh_pb2.ProcessRequest(request_id=f"{cert}{i}"), timeout=5)
                    out.append("ok")
                except grpc.RpcError as error:
                    out.append(error.code().name)
        return out

    assert outcomes("smuggler", 3) == ["ok", "ok", "RESOURCE_EXHAUSTED"]
    assert outcomes("victim", 2) == ["ok", "ok"]


# --------------------------------------------------------------------------
# mirror


class ShadowServer:
    """shadow_server.py in its own process (not to compete for this
    process's GIL with the client whose latency is measured), recording
    each request it receives as a JSON line."""

    def __init__(self, mode: str, tmp: Path):
        self.log = tmp / f"shadow-{mode}-{time.monotonic_ns()}.jsonl"
        self.log.touch()
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(HERE / "shadow_server.py"), mode, str(self.port), str(self.log)])
        wait_until(lambda: port_accepts(self.port), 10)

    @property
    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.endswith("}")]

    def count(self) -> int:
        return len(self.requests)

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


def test_mirror_copies_the_configured_share_with_the_shadow_marker(mesh, launcher, tmp_path):
    """percent: 50 of 200 calls: the shadow receives about half, each the
    client's path and body with :authority suffixed -shadow; the client's
    calls all succeed with the primary's answers; /metrics counts what was
    started and what succeeded. A call carrying the filter's header is
    mirrored whatever the draw on a route that mirrors only such calls."""
    shadow = ShadowServer("ok", tmp_path)
    try:
        port, admin = free_port(), free_port()
        routes = [
            {"match": {"method": "/mesh.v1.MeshService/Process", "headers": [{"name": "x-route", "exact": "tagged"}]}, "cluster": "mesh",
             "filters": [{"plugin": "mirror", "config": {"cluster": "shadow", "header": "x-mirror"}}]},
            {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
             "filters": [{"plugin": "mirror", "config": {"cluster": "shadow", "percent": 50}}]},
        ]
        launcher.gateway(config(port, admin, routes, {"mesh": [mesh.replicas["r1"].port], "shadow": [shadow.port]}),
                         port, name="gw-mirror")
        with insecure_channel(port) as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)
            for i in range(200):
                response = stub.Process(mesh.pb2.ProcessRequest(request_id=f"m{i}", data=f"payload-{i}"), timeout=5)
                assert response.result == f"processed: payload-{i}"
            wait_until(lambda: metric(admin, "meshgate_mirror_requests_total", 'result="ok"') >= shadow.count() > 0, 5)
            mirrored = shadow.count()
            assert 60 <= mirrored <= 140, mirrored
            for request in shadow.requests:
                assert request["headers"][":authority"] == f"{HOST}:{port}-shadow"
                assert request["headers"][":path"] == "/mesh.v1.MeshService/Process"
                assert request["headers"]["content-type"] == "application/grpc"
                assert "payload-" in request["body"]
            assert metric(admin, "meshgate_mirror_requests_total", 'cluster="shadow",result="started"') == mirrored
            assert metric(admin, "meshgate_mirror_requests_total", 'cluster="shadow",result="ok"') == mirrored
            # Header-selected mirroring: without the header never, with it always.
            before = shadow.count()
            for i in range(10):
                stub.Process(mesh.pb2.ProcessRequest(request_id=f"t{i}"), metadata=[("x-route", "tagged")], timeout=5)
            for i in range(10):
                stub.Process(mesh.pb2.ProcessRequest(request_id=f"h{i}"), metadata=[("x-route", "tagged"), ("x-mirror", "1")], timeout=5)
            wait_until(lambda: shadow.count() == before + 10, 5)
            time.sleep(0.3)
            assert shadow.count() == before + 10
    finally:
        shadow.stop()


def latencies(stub, pb, n: int, payload: str = "x") -> list[float]:
    out = []
    for i in range(n):
        started = time.perf_counter()
        stub.Process(pb.ProcessRequest(request_id=f"l{i}", data=payload), timeout=5)
        out.append(time.perf_counter() - started)
    return out


def p99(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.99) - 1]


def test_a_slow_or_dead_shadow_costs_the_primary_nothing(mesh, launcher, tmp_path):
    """Three gateways on one replica: no mirror, a mirror of every call to a
    shadow that never answers nor reads (abandoned after its 300 ms
    timeout), and one to a port where nothing listens. Calls alternate
    between them in rounds; every call succeeds, and the p99 of the
    mirrored routes stays within noise of the plain one. A 1 MiB upload
    through the stalled shadow's route passes: the shadow is abandoned
    when it holds 64 KiB, and never slows the upload."""
    stall = ShadowServer("stall", tmp_path)
    dead_port = free_port()
    try:
        replica = mesh.replicas["r3"].port
        targets = {}
        for name, shadow_port in [("plain", None), ("slow", stall.port), ("dead", dead_port)]:
            port, admin = free_port(), free_port()
            filters = [] if shadow_port is None else [
                {"plugin": "mirror", "config": {"cluster": "shadow", "timeout": "300ms"}}]
            clusters = {"mesh": [replica]} if shadow_port is None else {"mesh": [replica], "shadow": [shadow_port]}
            launcher.gateway(config(port, admin, [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                                                   "filters": filters}], clusters), port, name=f"gw-mirror-{name}")
            targets[name] = (port, admin)
        channels = {name: insecure_channel(port) for name, (port, _) in targets.items()}
        stubs = {name: mesh.pb2_grpc.MeshServiceStub(ch) for name, ch in channels.items()}
        samples = {name: [] for name in targets}
        for stub in stubs.values():
            latencies(stub, mesh.pb2, 10)  # warm
        for round_ in range(6):
            order = list(stubs) if round_ % 2 == 0 else list(reversed(stubs))
            for name in order:
                samples[name] += latencies(stubs[name], mesh.pb2, 50)
        base = p99(samples["plain"])
        for name in ("slow", "dead"):
            print(f"{name}: p99 {p99(samples[name]) * 1000:.2f} ms vs plain {base * 1000:.2f} ms; "
                  f"p50 {statistics.median(samples[name]) * 1000:.2f} vs {statistics.median(samples['plain']) * 1000:.2f}")
            assert p99(samples[name]) <= max(2.5 * base, base + 0.010), (name, p99(samples[name]), base)
        # The stalled shadow received every call (small requests fit its
        # initial window) and answered none: each was abandoned at its timeout.
        slow_admin = targets["slow"][1]
        assert stall.count() == 310
        wait_until(lambda: metric(slow_admin, "meshgate_mirror_requests_total", 'result="abandoned"') >= 310, 5)
        dead_admin = targets["dead"][1]
        dead_failed = (metric(dead_admin, "meshgate_mirror_requests_total", 'result="error"')
                       + metric(dead_admin, "meshgate_mirror_requests_total", 'result="not_started"'))
        assert dead_failed == 310, dead_failed
        # A large client stream through the stalled shadow's route.
        blob = "y" * (1 << 20)
        before = metric(slow_admin, "meshgate_mirror_requests_total", 'result="abandoned"')
        started = time.monotonic()
        summary = stubs["slow"].CollectMetrics(iter([mesh.pb2.Metric(metric_name=blob[:65536], value=1.0)] * 16), timeout=10)
        # All 16 messages (1 MiB) reached the replica, which summed them.
        assert (summary.count, summary.sum, summary.replica_id) == (16, 16.0, "r3"), summary
        assert time.monotonic() - started < 2.0
        wait_until(lambda: metric(slow_admin, "meshgate_mirror_requests_total", 'result="abandoned"') == before + 1, 3)
        for ch in channels.values():
            ch.close()
    finally:
        stall.stop()


# --------------------------------------------------------------------------
# docs/traffic.md (test_docs.py validates each example alone; here they
# are combined in one chain)


def test_the_traffic_page_examples_are_valid_config(bins, tmp_path):
    """docs/traffic.md's rate_limit, mirror and gRPC-Web examples, put
    together into one config, pass `meshgate validate` (so the page stays
    true)."""
    import textwrap
    import yaml
    section = (REPO_ROOT / "docs" / "traffic.md").read_text()
    blocks = [yaml.safe_load(textwrap.dedent(b)) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    assert len(blocks) == 3, blocks
    doc = blocks[2]
    doc["listeners"][0]["routes"][0]["filters"] = blocks[0]["filters"] + blocks[1]["filters"]
    doc["clusters"] = [{"name": name, "endpoints": [{"address": addr(free_port())}]} for name in ("mesh", "canary")]
    path = tmp_path / "docs-traffic.yaml"
    path.write_text(to_yaml(doc))
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rate_limit" in result.stdout + result.stderr and "mirror" in result.stdout + result.stderr


# --------------------------------------------------------------------------
# ABI: plugins of an older minor beside the 1.3 ones


OLD_HEADER_DIR = HERE / "abi" / "v1.2"


def test_plugins_built_against_the_1_2_header_load_beside_1_3_plugins(mesh, launcher, tmp_path):
    """The repository's example C filter and balancer (require_header and
    subset_by_label), compiled against the released 1.2 header (a copy kept
    in the tests), load into this host (1.3) in one chain with rate_limit
    and mirror, and work: the filter refuses a call without its header,
    the balancer sends each version's calls to the replica labelled with it
    (endpoint metadata, the 1.2 addition) and says so in its response
    header, and the mirror gets its copies."""
    assert "#define MG_ABI_MINOR 2" in (OLD_HEADER_DIR / "meshgate_filter.h").read_text()
    libs = {}
    for name, source in [("require_header", "require_header.c"), ("subset_by_label", "subset_by_label.c")]:
        out = tmp_path / f"lib{name}_old.so"
        subprocess.run(["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-I", str(OLD_HEADER_DIR),
                        str(REPO_ROOT / "Plugins" / "examples" / source), "-o", str(out)], check=True, capture_output=True, timeout=60)
        libs[name] = out
    shadow = ShadowServer("ok", tmp_path)
    try:
        port, admin = free_port(), free_port()
        route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
            {"plugin": "rate_limit", "config": {"rate": 1000}},
            {"plugin": "require_header", "config": {"header": "x-api-key"}},
            {"plugin": "mirror", "config": {"cluster": "shadow"}},
            {"plugin": "subset_by_label", "config": {"label": "version", "header": "x-version"}},
        ]}
        versions = {"r1": "v1", "r2": "v2"}
        doc = {
            "runtime": {"drain_timeout": "2s"},
            "admin": {"address": f"{HOST}:{admin}"},
            "listeners": [{"name": "public", "address": addr(port), "routes": [route]}],
            "clusters": [
                {"name": "mesh", "connect_timeout": "1s",
                 "endpoints": [{"address": addr(mesh.replicas[rid].port), "metadata": {"version": version}}
                               for rid, version in versions.items()]},
                {"name": "shadow", "connect_timeout": "1s", "endpoints": [{"address": addr(shadow.port)}]}],
        }
        text = "plugins:\n" + "".join(f"  - {{ name: {n}, path: {p} }}\n" for n, p in libs.items())
        launcher.gateway(text + to_yaml(doc), port, name="gw-old-minor")
        with insecure_channel(port) as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Process(mesh.pb2.ProcessRequest(request_id="no-key"), metadata=[("x-version", "v1")], timeout=5)
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            for rid, version in list(versions.items()) * 3:
                reply, call = stub.Process.with_call(mesh.pb2.ProcessRequest(request_id="k"),
                                                     metadata=[("x-api-key", "s"), ("x-version", version)], timeout=5)
                head = dict(call.initial_metadata())
                assert (reply.replica_id, head.get("x-upstream-version"), head.get("x-checked-by")) == \
                    (rid, version, "require_header"), (rid, version, reply.replica_id, head)
            with pytest.raises(grpc.RpcError) as info:
                stub.Process(mesh.pb2.ProcessRequest(request_id="none"), metadata=[("x-api-key", "s"), ("x-version", "v3")],
                             timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert info.value.details() == "no usable endpoint has label version=v3"
        wait_until(lambda: shadow.count() == 7, 5, message="the mirror's 7 copies (none of the call require_header refused)")
        plugins = urllib.request.urlopen(f"http://{HOST}:{admin}/plugins", timeout=5).read().decode()
        assert "require_header" in plugins and "mirror" in plugins and "subset_by_label" in plugins
    finally:
        shadow.stop()
