"""Dynamic service discovery with the real systems, started on loopback by
the tests: a watched file, dnsmasq (A and SRV records) and an etcd server
(replicas registering themselves under leases, and `meshgate register`).

Each source: two replicas to start with, a third added under load (it
starts taking calls), one removed under load (no failed RPC), and the
source's failure (broken file, dnsmasq or etcd stopped) keeping the last
endpoints in service until it recovers."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Optional

import grpc
import pytest

from conftest import Launcher
from discovery_servers import Dnsmasq, EtcdServer
from meshkit import HOST, free_port, insecure_channel, port_accepts, to_yaml, wait_until

HEALTH = {"mode": "watch", "interval": "200ms", "timeout": "500ms",
          "unhealthy_threshold": 1, "healthy_threshold": 1}
PREFIX = "/meshgate/services/mesh/"


# --------------------------------------------------------------------------
# Helpers


def discovery_config(port: int, admin_port: int, discovery: dict, health: bool | dict = True) -> str:
    """health: True for HEALTH, False for none, or a health_check block."""
    cluster: dict = {"name": "mesh", "discovery": discovery}
    if health:
        cluster["health_check"] = HEALTH if health is True else health
    doc = {
        "admin": {"address": f"{HOST}:{admin_port}"},
        "runtime": {"drain_timeout": "3s"},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
        "clusters": [cluster],
    }
    return to_yaml(doc)


def clusters(admin_port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/clusters", timeout=5) as response:
        assert response.headers["content-type"] == "application/json"
        return json.loads(response.read())


def mesh_cluster(admin_port: int) -> dict:
    return next(c for c in clusters(admin_port)["clusters"] if c["name"] == "mesh")


def endpoint_addresses(admin_port: int) -> set[str]:
    return {e["address"] for e in mesh_cluster(admin_port)["endpoints"]}


class Load:
    """Unary calls in a loop on one channel until stopped: which replica
    answered each, and every failure with its status."""

    def __init__(self, port: int, pb2, pb2_grpc):
        self.pb2 = pb2
        self.channel = insecure_channel(port)
        self.stub = pb2_grpc.MeshServiceStub(self.channel)
        self.lock = threading.Lock()
        self.answers: list[tuple[float, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Load":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.channel.close()

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                reply = self.stub.Process(self.pb2.ProcessRequest(request_id=f"load-{i}"), timeout=5)
                with self.lock:
                    self.answers.append((time.monotonic(), reply.replica_id))
            except grpc.RpcError as error:
                with self.lock:
                    self.failures.append(f"{error.code().name}: {error.details()}")
            time.sleep(0.004)

    def since(self, t: float) -> Counter:
        with self.lock:
            return Counter(rid for at, rid in self.answers if at >= t)

    def total(self) -> int:
        with self.lock:
            return len(self.answers)

    def wait_for(self, replica_id: str, after: float, timeout: float = 15.0) -> None:
        wait_until(lambda: self.since(after)[replica_id] >= 5, timeout=timeout, interval=0.1,
                   message=f"{replica_id} to take calls (seen since: {dict(self.since(after))})")

    def wait_gone(self, replica_id: str, timeout: float = 15.0) -> float:
        """Waits until a full second of calls has none for `replica_id`."""
        def gone() -> bool:
            now = time.monotonic()
            recent = self.since(now - 1.0)
            return sum(recent.values()) >= 20 and recent[replica_id] == 0
        wait_until(gone, timeout=timeout, interval=0.2, message=f"{replica_id} to leave rotation")
        return time.monotonic()


def start_replica(launch: Launcher, replica_id: str, host: str = HOST, port: Optional[int] = None,
                  extra: tuple[str, ...] = ()):
    port = port or free_port()
    argv = [str(launch.bins.mesh_sample), "--host", host, "--port", str(port), "--replica-id", replica_id, *extra]
    proc = launch.group.start(f"replica-{replica_id}-{host}-{port}", argv)
    wait_until(lambda: port_accepts(port, host=host), timeout=20, message=f"{replica_id} on {host}:{port}")
    return proc, port


def start_gateway(launch: Launcher, config: str, port: int):
    path = launch.work_dir / f"gateway-{port}.yaml"
    path.write_text(config)
    return launch.group.start(f"meshgate-{port}", [str(launch.bins.meshgate), "run", "--config", str(path)], port=port)


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def endpoints_yaml(ports: dict[str, int]) -> str:
    return to_yaml({"endpoints": [{"address": f"{HOST}:{p}", "metadata": {"replica": rid}} for rid, p in ports.items()]})


# --------------------------------------------------------------------------
# File


def test_file_discovery_add_remove_and_broken_file(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    launch = Launcher(bins, tmp_path)
    try:
        ports = {rid: start_replica(launch, rid)[1] for rid in ("f1", "f2", "f3")}
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(endpoints_yaml({"f1": ports["f1"], "f2": ports["f2"]}))
        port, admin = free_port(), free_port()
        start_gateway(launch, discovery_config(port, admin, {"file": {"path": str(endpoints), "refresh_interval": "200ms"}}), port)

        with Load(port, mesh_pb2, mesh_pb2_grpc) as load:
            load.wait_for("f1", 0)
            load.wait_for("f2", 0)
            assert load.since(0)["f3"] == 0

            added = time.monotonic()
            write_atomically(endpoints, endpoints_yaml(ports))
            load.wait_for("f3", added)
            meta = {e["address"]: e["metadata"] for e in mesh_cluster(admin)["endpoints"]}
            assert meta[f"{HOST}:{ports['f3']}"] == {"replica": "f3"}

            write_atomically(endpoints, endpoints_yaml({"f2": ports["f2"], "f3": ports["f3"]}))
            load.wait_gone("f1")

            # A broken file and an empty one keep the last endpoints.
            write_atomically(endpoints, "endpoints:\n  - address: [oops\n")
            wait_until(lambda: mesh_cluster(admin)["discovery"]["consecutive_failures"] > 0, timeout=5,
                       message="the broken file to be reported")
            status = mesh_cluster(admin)["discovery"]
            assert str(endpoints) in status["last_error"] and "YAML" in status["last_error"], status
            write_atomically(endpoints, "endpoints: []\n")
            wait_until(lambda: mesh_cluster(admin)["discovery"]["state"] == "empty answer ignored", timeout=5,
                       message="the empty file to be ignored")
            assert endpoint_addresses(admin) == {f"{HOST}:{ports['f2']}", f"{HOST}:{ports['f3']}"}
            after = time.monotonic()
            time.sleep(1.0)
            assert set(load.since(after)) == {"f2", "f3"}, load.since(after)
            assert load.failures == [], load.failures[:5]
            assert load.total() > 200
    finally:
        launch.stop_all()


# --------------------------------------------------------------------------
# DNS (dnsmasq)


def test_a_membership_change_does_not_shortcut_recovery(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """An endpoint that failed its checks needs `healthy_threshold` passes to
    come back, even when a membership change restarts its probe meanwhile;
    only an endpoint added at run time gets in on its first pass."""
    launch = Launcher(bins, tmp_path)
    try:
        ports = {rid: start_replica(launch, rid)[1] for rid in ("k1", "k2", "k3")}
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(endpoints_yaml({"k1": ports["k1"], "k2": ports["k2"]}))
        port, admin = free_port(), free_port()
        check = {"mode": "check", "interval": "200ms", "timeout": "500ms", "unhealthy_threshold": 1, "healthy_threshold": 5}
        gw = start_gateway(launch, discovery_config(port, admin, {"file": {"path": str(endpoints), "refresh_interval": "100ms"}},
                                                    health=check), port)
        k2 = f"{HOST}:{ports['k2']}"
        with insecure_channel(ports["k2"]) as control_channel:
            control = mesh_pb2_grpc.SampleControlStub(control_channel)
            control.SetServing(mesh_pb2.SetServingRequest(serving=False), timeout=5)
            wait_until(lambda: not next(e for e in mesh_cluster(admin)["endpoints"] if e["address"] == k2)["healthy"],
                       timeout=5, message="k2 to fail its checks")
            # k2 serves again, and at once the membership changes (k3 added):
            # every probe restarts while k2 has passed at most a check or two.
            control.SetServing(mesh_pb2.SetServingRequest(serving=True), timeout=5)
            write_atomically(endpoints, endpoints_yaml(ports))
            wait_until(lambda: next(e for e in mesh_cluster(admin)["endpoints"] if e["address"] == k2)["healthy"],
                       timeout=10, message="k2 to recover")
        healthy_lines = [json.loads(t) for t in gw.log_text().splitlines() if '"msg":"endpoint healthy"' in t]
        k2_lines = [line for line in healthy_lines if line["endpoint"] == k2]
        assert k2_lines and all(line["reason"] == "5 consecutive successful checks" for line in k2_lines), k2_lines
        k3_lines = [line for line in healthy_lines if line["endpoint"] == f"{HOST}:{ports['k3']}"]
        assert k3_lines and k3_lines[0]["reason"] == "1 consecutive successful checks", healthy_lines
    finally:
        launch.stop_all()


def test_dns_a_records_follow_the_hosts_file(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """A/AAAA discovery: three replicas on 127.0.0.1/.2/.3, one port; the
    name's records change under load; dnsmasq stopped keeps the endpoints."""
    launch = Launcher(bins, tmp_path)
    try:
        replica_port = free_port()
        for i in (1, 2, 3):
            start_replica(launch, f"d{i}", host=f"127.0.0.{i}", port=replica_port)
        dns = Dnsmasq(tmp_path / "dnsmasq", launch.group)
        dns.set_hosts({"mesh.test": ["127.0.0.1", "127.0.0.2"]})
        dns.start()
        port, admin = free_port(), free_port()
        discovery = {"dns": {"name": "mesh.test", "port": replica_port, "resolver": dns.address,
                             "refresh_interval": "5s", "min_refresh_interval": "200ms", "timeout": "300ms", "family": "v4"}}
        start_gateway(launch, discovery_config(port, admin, discovery), port)
        assert endpoint_addresses(admin) == {f"127.0.0.1:{replica_port}", f"127.0.0.2:{replica_port}"}

        with Load(port, mesh_pb2, mesh_pb2_grpc) as load:
            load.wait_for("d1", 0)
            load.wait_for("d2", 0)
            added = time.monotonic()
            dns.set_hosts({"mesh.test": ["127.0.0.1", "127.0.0.2", "127.0.0.3"]})
            load.wait_for("d3", added)
            dns.set_hosts({"mesh.test": ["127.0.0.2", "127.0.0.3"]})
            load.wait_gone("d1")

            dns.stop()
            wait_until(lambda: mesh_cluster(admin)["discovery"]["consecutive_failures"] > 0, timeout=10,
                       message="the DNS failure to be reported")
            assert "failing" in mesh_cluster(admin)["discovery"]["state"]
            during = time.monotonic()
            time.sleep(1.0)
            assert set(load.since(during)) == {"d2", "d3"}, load.since(during)

            dns.start()
            wait_until(lambda: mesh_cluster(admin)["discovery"]["state"] == "ok", timeout=15,
                       message="discovery to recover")
            assert load.failures == [], load.failures[:5]
    finally:
        launch.stop_all()


def test_dns_srv_records(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """SRV discovery (`_grpc._tcp.name`): ports and weights from the
    records, targets resolved through their A records."""
    launch = Launcher(bins, tmp_path)
    try:
        ports = {rid: start_replica(launch, rid)[1] for rid in ("s1", "s2", "s3")}
        dns = Dnsmasq(tmp_path / "dnsmasq", launch.group)
        dns.set_hosts({f"{rid}.mesh.test": ["127.0.0.1"] for rid in ports})
        service = "_grpc._tcp.mesh.test"
        dns.set_srv([(service, "s1.mesh.test", ports["s1"], 0, 1), (service, "s2.mesh.test", ports["s2"], 0, 3),
                     (service, "s3.mesh.test", ports["s3"], 10, 1)])  # s3: a lower priority, unused
        dns.start()
        port, admin = free_port(), free_port()
        discovery = {"dns": {"srv": service, "resolver": dns.address, "refresh_interval": "1s",
                             "min_refresh_interval": "200ms", "timeout": "300ms", "family": "v4"}}
        start_gateway(launch, discovery_config(port, admin, discovery), port)
        weights = {e["address"]: e["weight"] for e in mesh_cluster(admin)["endpoints"]}
        assert weights == {f"{HOST}:{ports['s1']}": 1, f"{HOST}:{ports['s2']}": 3}, weights

        with Load(port, mesh_pb2, mesh_pb2_grpc) as load:
            load.wait_for("s1", 0)
            load.wait_for("s2", 0)
            added = time.monotonic()
            # SRV records are command-line options: dnsmasq restarts on the same port.
            dns.set_srv([(service, f"{rid}.mesh.test", p, 0, 1) for rid, p in ports.items()])
            load.wait_for("s3", added)
            assert load.failures == [], load.failures[:5]
    finally:
        launch.stop_all()


def test_dns_answer_too_big_for_udp_comes_over_tcp(bins, tmp_path):
    """A name with 150 A records (a large headless Service): more than a
    1232-byte UDP answer holds, so the truncated answer is asked again over
    TCP and every address becomes an endpoint, not just the first ~70."""
    launch = Launcher(bins, tmp_path)
    try:
        addresses = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(150)]
        dns = Dnsmasq(tmp_path / "dnsmasq", launch.group)
        dns.set_hosts({"big.mesh.test": addresses})
        dns.start()
        port, admin = free_port(), free_port()
        discovery = {"dns": {"name": "big.mesh.test", "port": 50051, "resolver": dns.address, "refresh_interval": "1s",
                             "min_refresh_interval": "200ms", "timeout": "500ms", "family": "v4"}}
        start_gateway(launch, discovery_config(port, admin, discovery, health=False), port)
        found = wait_until(lambda: len(endpoint_addresses(admin)) == 150 and endpoint_addresses(admin), timeout=10,
                           message="all 150 addresses")
        assert found == {f"{a}:50051" for a in addresses}
    finally:
        launch.stop_all()


# --------------------------------------------------------------------------
# etcd


def test_etcd_registration_discovery_and_outage(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()

        def registered(rid: str, ttl: int = 10):
            return start_replica(launch, rid, extra=("--register-etcd", etcd.endpoint, "--register-prefix", PREFIX,
                                                     "--register-ttl", str(ttl)))

        procs = {rid: registered(rid)[0] for rid in ("e1", "e2")}
        wait_until(lambda: len(etcd.get_prefix(PREFIX)) == 2, timeout=10, message="two registrations in etcd")
        value = json.loads(etcd.get_prefix(PREFIX)[PREFIX + "e1"])
        assert value["metadata"] == {"replica": "e1"} and value["weight"] == 1, value

        port, admin = free_port(), free_port()
        start_gateway(launch, discovery_config(port, admin, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}}), port)
        assert len(endpoint_addresses(admin)) == 2

        with Load(port, mesh_pb2, mesh_pb2_grpc) as load:
            load.wait_for("e1", 0)
            load.wait_for("e2", 0)

            # A third replica registers itself: traffic, no config change.
            added = time.monotonic()
            procs["e3"], _ = registered("e3", ttl=3)
            load.wait_for("e3", added)

            # A clean stop unregisters first: no call fails.
            procs["e1"].send_signal(signal.SIGTERM)
            procs["e1"].wait(timeout=10)
            load.wait_gone("e1")
            assert PREFIX + "e1" not in etcd.get_prefix(PREFIX)
            assert load.failures == [], load.failures[:5]

            # `meshgate register` for a process that cannot register itself.
            _, e4_port = start_replica(launch, "e4")
            added = time.monotonic()
            register = launch.group.start("register-e4", [
                str(bins.meshgate), "register", "--etcd", etcd.endpoint, "--prefix", PREFIX,
                "--address", f"{HOST}:{e4_port}", "--id", "e4", "--ttl", "5", "--metadata", "zone=b"])
            load.wait_for("e4", added)
            assert json.loads(etcd.get_prefix(PREFIX)[PREFIX + "e4"])["metadata"] == {"zone": "b"}
            register.send_signal(signal.SIGTERM)
            assert register.wait(timeout=10) == 0
            load.wait_gone("e4")
            assert load.failures == [], load.failures[:5]

            # Killed hard: its lease (3 s) expires and it leaves rotation.
            procs["e3"].popen.kill()
            killed = time.monotonic()
            wait_until(lambda: PREFIX + "e3" not in etcd.get_prefix(PREFIX), timeout=10, message="e3's lease to expire")
            wait_until(lambda: len(endpoint_addresses(admin)) == 1, timeout=5, message="e3 to leave the cluster")
            assert time.monotonic() - killed < 10
            baseline = len(load.failures)

            # etcd down: the last endpoints keep serving; back: the watch resumes.
            etcd.stop()
            wait_until(lambda: mesh_cluster(admin)["discovery"]["consecutive_failures"] > 0, timeout=10,
                       message="the etcd outage to be reported")
            during = time.monotonic()
            time.sleep(1.0)
            assert set(load.since(during)) == {"e2"}, load.since(during)
            etcd.start()
            wait_until(lambda: mesh_cluster(admin)["discovery"]["state"] == "ok", timeout=20,
                       message="the etcd watch to resume")
            added = time.monotonic()
            procs["e5"], _ = registered("e5")
            load.wait_for("e5", added, timeout=20)
            assert load.failures[baseline:] == [], load.failures[baseline:][:5]
    finally:
        launch.stop_all()


def test_discovery_config_errors(bins, tmp_path):
    """A discovery block that cannot work names the file, line and field."""
    import subprocess
    cases = {
        "both": ({"endpoints": [{"address": "127.0.0.1:1"}], "discovery": {"file": {"path": "x.yaml"}}},
                 "clusters[0].endpoints: a cluster has either"),
        "two sources": ({"discovery": {"file": {"path": "x"}, "dns": {"name": "a", "port": 1}}},
                        "takes exactly one source"),
        "dns without port": ({"discovery": {"dns": {"name": "mesh.test"}}}, "clusters[0].discovery.dns.port"),
        "etcd without prefix": ({"discovery": {"etcd": {"endpoints": ["127.0.0.1:2379"]}}},
                                "clusters[0].discovery.etcd.prefix: required field is missing"),
        "bad etcd endpoint": ({"discovery": {"etcd": {"endpoints": ["nowhere"], "prefix": "/p/"}}},
                              "clusters[0].discovery.etcd.endpoints[0]"),
    }
    for name, (cluster, expected) in cases.items():
        doc = {"listeners": [{"name": "l", "address": "127.0.0.1:1",
                              "routes": [{"match": {"service": "s"}, "cluster": "c"}]}],
               "clusters": [{"name": "c", **cluster}]}
        path = tmp_path / f"{name.replace(' ', '-')}.yaml"
        path.write_text(to_yaml(doc))
        result = subprocess.run([str(bins.meshgate), "validate", "--config", str(path)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert str(path) in result.stderr and expected in result.stderr, (name, result.stderr)


def test_membership_update_remaps_only_the_new_endpoints_keys(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """Consistent hash on a discovered cluster: a fourth endpoint appearing
    in the file takes only keys that move to it (about a quarter); when it
    leaves, every key goes back where it was."""
    launch = Launcher(bins, tmp_path)
    try:
        ports = {rid: start_replica(launch, rid)[1] for rid in ("c1", "c2", "c3", "c4")}
        endpoints = tmp_path / "endpoints.yaml"
        three = {rid: ports[rid] for rid in ("c1", "c2", "c3")}
        endpoints.write_text(endpoints_yaml(three))
        port, admin = free_port(), free_port()
        config = discovery_config(port, admin, {"file": {"path": str(endpoints), "refresh_interval": "100ms"}})
        config = config.replace("        cluster: mesh\n",
                                "        cluster: mesh\n        filters:\n          - plugin: consistent_hash\n"
                                "            config: { header: x-user }\n", 1)
        assert "consistent_hash" in config
        start_gateway(launch, config, port)
        keys = [f"user-{i}" for i in range(600)]
        channel = insecure_channel(port)
        stub = mesh_pb2_grpc.MeshServiceStub(channel)

        def key_map() -> dict[str, str]:
            futures = {k: stub.Process.future(mesh_pb2.ProcessRequest(request_id=k), metadata=[("x-user", k)], timeout=30)
                       for k in keys}
            return {k: f.result().replica_id for k, f in futures.items()}

        wait_until(lambda: len(set(key_map().values())) == 3, timeout=10, message="three endpoints healthy")
        before = key_map()
        write_atomically(endpoints, endpoints_yaml(ports))
        wait_until(lambda: "c4" in key_map().values(), timeout=10, message="c4 to take keys")
        after = key_map()
        moved = [k for k in keys if before[k] != after[k]]
        assert all(after[k] == "c4" for k in moved), "a key moved to an endpoint that was already there"
        assert 0.10 < len(moved) / len(keys) < 0.40, len(moved)
        write_atomically(endpoints, endpoints_yaml(three))
        wait_until(lambda: "c4" not in key_map().values(), timeout=10, message="c4 to leave")
        assert key_map() == before
        channel.close()
    finally:
        launch.stop_all()


def test_a_source_with_nothing_yet_starts_empty_then_fills(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """A file that does not exist yet: the gateway starts (after its 5 s
    wait), calls get UNAVAILABLE saying discovery has found nothing yet
    (without naming the file: issue 26), and the file's
    endpoints take calls as soon as it appears."""
    launch = Launcher(bins, tmp_path)
    try:
        _, replica_port = start_replica(launch, "n1")
        endpoints = tmp_path / "later.yaml"
        port, admin = free_port(), free_port()
        start_gateway(launch, discovery_config(port, admin, {"file": {"path": str(endpoints), "refresh_interval": "100ms"}},
                                               health=False), port)
        status = mesh_cluster(admin)
        assert status["endpoints"] == [] and "failing" in status["discovery"]["state"], status
        assert "cannot read the file" in status["discovery"]["last_error"]
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Process(mesh_pb2.ProcessRequest(request_id="x"), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
            assert "has no endpoints" in info.value.details() and "discovery" in info.value.details(), info.value.details()
            assert str(endpoints) not in info.value.details() and "later.yaml" not in info.value.details(), info.value.details()
            write_atomically(endpoints, endpoints_yaml({"n1": replica_port}))
            wait_until(lambda: mesh_cluster(admin)["endpoints"], timeout=5, message="the file's endpoint in the cluster")
            assert mesh_cluster(admin)["discovery"]["state"] == "ok"
            assert stub.Process(mesh_pb2.ProcessRequest(request_id="y"), timeout=5).replica_id == "n1"
    finally:
        launch.stop_all()


def test_etcd_over_mutual_tls(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """etcd requiring client certificates: `meshgate register` and the
    gateway's discovery both connect with the dev PKI; a gateway without a
    client certificate reports the refused handshake on /clusters."""
    from pki import dev_pki
    launch = Launcher(bins, tmp_path)
    try:
        pki = dev_pki(tmp_path / "pki")
        etcd = EtcdServer(tmp_path / "etcd", launch.group, pki=pki)
        etcd.start()
        _, replica_port = start_replica(launch, "t1")
        launch.group.start("register-t1", [
            str(bins.meshgate), "register", "--etcd", etcd.endpoint, "--prefix", PREFIX, "--id", "t1",
            "--address", f"{HOST}:{replica_port}", "--etcd-ca", str(pki / "ca.pem"),
            "--etcd-cert", str(pki / "client.pem"), "--etcd-key", str(pki / "client.key"), "--etcd-server-name", "localhost"])
        wait_until(lambda: PREFIX + "t1" in etcd.get_prefix(PREFIX), timeout=10, message="the TLS registration")

        tls = {"ca": str(pki / "ca.pem"), "cert": str(pki / "client.pem"), "key": str(pki / "client.key"), "server_name": "localhost"}
        port, admin = free_port(), free_port()
        start_gateway(launch, discovery_config(port, admin, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX, "tls": tls}}), port)
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            wait_until(lambda: stub.Process(mesh_pb2.ProcessRequest(request_id="x"), timeout=5).replica_id == "t1",
                       timeout=10, message="t1 to serve through the gateway")
            # The sample service registers itself over mutual TLS too.
            start_replica(launch, "t2", extra=("--register-etcd", etcd.endpoint, "--register-prefix", PREFIX,
                                               "--register-etcd-ca", str(pki / "ca.pem"), "--register-etcd-cert", str(pki / "client.pem"),
                                               "--register-etcd-key", str(pki / "client.key"), "--register-etcd-server-name", "localhost"))
            seen: set[str] = set()
            wait_until(lambda: seen.add(stub.Process(mesh_pb2.ProcessRequest(request_id="y"), timeout=5).replica_id) or "t2" in seen,
                       timeout=15, interval=0.05, message="t2, registered over TLS, to serve through the gateway")

        no_cert = {"ca": str(pki / "ca.pem"), "server_name": "localhost"}
        port2, admin2 = free_port(), free_port()
        start_gateway(launch, discovery_config(port2, admin2, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX, "tls": no_cert}},
                                               health=False), port2)
        status = mesh_cluster(admin2)
        assert status["endpoints"] == [] and status["discovery"]["consecutive_failures"] > 0, status
        assert "TLS: " in status["discovery"]["last_error"] and "certificate" in status["discovery"]["last_error"], status

        # Client certificate files replaced in place: a certificate from a CA
        # etcd does not trust, then the right one, with no reload or restart.
        import shutil
        from pki import issue, make_ca
        foreign = make_ca(pki, "foreign-ca")
        issue(pki, "foreign-client", foreign, common_name="client")
        rotating = {"ca": str(pki / "ca.pem"), "cert": str(tmp_path / "etcd-client.pem"), "key": str(tmp_path / "etcd-client.key"),
                    "server_name": "localhost"}
        shutil.copy(pki / "foreign-client.pem", rotating["cert"])
        shutil.copy(pki / "foreign-client.key", rotating["key"])
        port3, admin3 = free_port(), free_port()
        start_gateway(launch, discovery_config(port3, admin3, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX, "tls": rotating}},
                                               health=False), port3)
        status = mesh_cluster(admin3)
        assert status["endpoints"] == [] and "TLS: " in status["discovery"]["last_error"], status
        for suffix in ("key", "pem"):
            staged = tmp_path / f"staged.{suffix}"
            shutil.copy(pki / f"client.{suffix}", staged)
            os.replace(staged, rotating["cert" if suffix == "pem" else "key"])
        wait_until(lambda: [e for e in mesh_cluster(admin3)["endpoints"] if e["address"] == f"{HOST}:{replica_port}"],
                   timeout=15, message="discovery to connect with the rotated certificate")
    finally:
        launch.stop_all()


# --------------------------------------------------------------------------
# Input limits (docs/limits.md, "Documents and discovery"): what a source may give the gateway


def etcd_value(port: int, rid: str) -> str:
    return json.dumps({"address": f"{HOST}:{port}", "weight": 1, "metadata": {"replica": rid}})


def test_etcd_value_nested_10000_deep_is_refused_and_the_gateway_keeps_serving(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """Anyone who can write under the prefix (every replica that registers
    itself can) writes a 1,000-deep JSON value, a 10,000-deep one, then a
    100,000-deep one:
    the gateway refuses each key with a log line naming it and the limit
    (depth, at its line and column; size), keeps
    serving its endpoints without a failed call, and still follows the
    prefix (a key written afterwards takes calls)."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        ports = {rid: start_replica(launch, rid)[1] for rid in ("j1", "j2", "j3")}
        for rid in ("j1", "j2"):
            etcd.put(PREFIX + rid, etcd_value(ports[rid], rid))
        port, admin = free_port(), free_port()
        gateway = start_gateway(launch, discovery_config(port, admin, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}}), port)
        with Load(port, mesh_pb2, mesh_pb2_grpc) as load:
            load.wait_for("j1", 0)
            load.wait_for("j2", 0)
            # 10,000 levels (the issue's figure), then 100,000: the tree used
            # to be built recursively, and the second overflowed the stack
            # (SIGSEGV). Now both are refused by their size (an etcd value
            # takes at most 8 KiB), and 1,000 levels (2 KB) at the 65th level.
            prefix = '{"address": "127.0.0.1:1", "metadata": '
            # The root object is level 1: the 64th "[" is the 65th.
            too_deep = f"1:{len(prefix) + 64}: lists and mappings nested deeper than 64 levels, the limit"
            def too_large(depth: int) -> str:
                return f"the value is {len(prefix) + 2 * depth + 1} bytes, over the limit of 8192 bytes"
            for key, depth, error in (("evil-deep", 1_000, too_deep), ("evil", 10_000, too_large(10_000)),
                                      ("evil-deeper", 100_000, too_large(100_000))):
                deep = prefix + "[" * depth + "]" * depth + "}"
                etcd.put(PREFIX + key, deep)
                wait_until(lambda: not gateway.alive() or f'"key":"{PREFIX}{key}"' in gateway.log_text(),
                           timeout=10, message=f"the {depth}-deep value refused with a log line")
                assert gateway.alive(), gateway.describe()
                line = next(json.loads(l) for l in gateway.log_text().splitlines() if f'"key":"{PREFIX}{key}"' in l)
                assert line["error"] == error, line
            after = time.monotonic()
            time.sleep(1.0)
            assert gateway.alive(), gateway.describe()
            assert set(load.since(after)) == {"j1", "j2"}, load.since(after)
            assert endpoint_addresses(admin) == {f"{HOST}:{ports['j1']}", f"{HOST}:{ports['j2']}"}
            added = time.monotonic()
            etcd.put(PREFIX + "j3", etcd_value(ports["j3"], "j3"))
            load.wait_for("j3", added)
            assert load.failures == [], load.failures[:5]
    finally:
        launch.stop_all()


def test_etcd_keeps_at_most_max_endpoints_keys(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """`max_endpoints: 2` on an etcd source: a third key is ignored with a
    log line (the gateway keeps no more than two); when a kept key goes,
    the waiting one takes its place."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        ports = {rid: start_replica(launch, rid)[1] for rid in ("k1", "k2", "k3")}
        for rid in ("k1", "k2"):
            etcd.put(PREFIX + rid, etcd_value(ports[rid], rid))
        port, admin = free_port(), free_port()
        source = {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}, "max_endpoints": 2}
        gateway = start_gateway(launch, discovery_config(port, admin, source, health=False), port)
        assert endpoint_addresses(admin) == {f"{HOST}:{ports['k1']}", f"{HOST}:{ports['k2']}"}
        etcd.put(PREFIX + "k3", etcd_value(ports["k3"], "k3"))
        wait_until(lambda: "more keys under the prefix than max_endpoints" in gateway.log_text(), timeout=10,
                   message="the third key ignored with a log line")
        assert endpoint_addresses(admin) == {f"{HOST}:{ports['k1']}", f"{HOST}:{ports['k2']}"}
        etcd.delete(PREFIX + "k1")
        wait_until(lambda: endpoint_addresses(admin) == {f"{HOST}:{ports['k2']}", f"{HOST}:{ports['k3']}"}, timeout=10,
                   message="k3 to take k1's place")
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            seen = {stub.Process(mesh_pb2.ProcessRequest(request_id=f"c{i}"), timeout=5).replica_id for i in range(20)}
        assert seen == {"k2", "k3"}, seen
    finally:
        launch.stop_all()


def test_a_file_source_beyond_max_endpoints_is_cut_to_the_first(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """`max_endpoints: 2` on a file of three: the first two in the file's
    order are used, /clusters says one was dropped, and a log line says
    so; a file back within the limit drops none."""
    launch = Launcher(bins, tmp_path)
    try:
        ports = {rid: start_replica(launch, rid)[1] for rid in ("m1", "m2", "m3")}
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(endpoints_yaml(ports))
        port, admin = free_port(), free_port()
        source = {"file": {"path": str(endpoints), "refresh_interval": "100ms"}, "max_endpoints": 2}
        gateway = start_gateway(launch, discovery_config(port, admin, source, health=False), port)
        assert endpoint_addresses(admin) == {f"{HOST}:{ports['m1']}", f"{HOST}:{ports['m2']}"}
        assert mesh_cluster(admin)["discovery"]["dropped_endpoints"] == 1
        assert "more endpoints than max_endpoints" in gateway.log_text()
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            seen = {stub.Process(mesh_pb2.ProcessRequest(request_id=f"c{i}"), timeout=5).replica_id for i in range(20)}
        assert seen == {"m1", "m2"}, seen
        write_atomically(endpoints, endpoints_yaml({"m2": ports["m2"], "m3": ports["m3"]}))
        wait_until(lambda: endpoint_addresses(admin) == {f"{HOST}:{ports['m2']}", f"{HOST}:{ports['m3']}"}, timeout=5,
                   message="the new file applied")
        assert mesh_cluster(admin)["discovery"]["dropped_endpoints"] == 0
    finally:
        launch.stop_all()


def test_discovered_endpoints_that_are_the_gateways_own_addresses_are_refused(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """A discovery file that lists the gateway's own listener (as
    localhost and as an IPv4-mapped IPv6 address) and its admin address
    besides a replica: those are refused with a log line naming the
    listener and admin address (calls sent there would come back in and
    loop), and every call reaches the replica."""
    launch = Launcher(bins, tmp_path)
    try:
        _, replica_port = start_replica(launch, "o1")
        port, admin = free_port(), free_port()
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(to_yaml({"endpoints": [{"address": f"localhost:{port}"}, {"address": f"{HOST}:{replica_port}"},
                                                    {"address": f"[::ffff:{HOST}]:{port}"}, {"address": f"{HOST}:{admin}"}]}))
        gateway = start_gateway(launch, discovery_config(port, admin, {"file": {"path": str(endpoints)}}, health=False), port)
        assert endpoint_addresses(admin) == {f"{HOST}:{replica_port}"}
        refused = mesh_cluster(admin)["discovery"]["refused_own_addresses"]
        assert refused == [f"localhost:{port} (listener 'public' {HOST}:{port})", f"[::ffff:{HOST}]:{port} (listener 'public' {HOST}:{port})",
                           f"{HOST}:{admin} (admin {HOST}:{admin})"], refused
        assert "refusing endpoints that are the gateway's own addresses" in gateway.log_text()
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(20):
                assert stub.Process(mesh_pb2.ProcessRequest(request_id=f"c{i}"), timeout=5).replica_id == "o1"
    finally:
        launch.stop_all()


# What an etcd source reads and holds: a prefix is untrusted input too


def vm_hwm_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), in MiB."""
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def bad_value_lines(log: str) -> list[dict]:
    return [json.loads(l) for l in log.splitlines() if "ignoring a key whose value is not an endpoint" in l]


def test_etcd_prefix_of_72_mb_lists_in_pages_in_bounded_memory(bins, tmp_path):
    """60 values of 1.2 MB under the prefix (72 MB, each within etcd's own
    1.5 MiB request limit, so anyone who can write the prefix can do it)
    before three good keys. The listing used to be one Range answered in
    one message: past the gRPC deframer's 64 MiB it failed on every retry
    and the cluster never got an endpoint. Now it reads pages of at most
    4 MiB (a page over it is asked again in halves, each large value is
    named in the log and stepped over): the three good keys serve, the
    source reports no failure, the gateway's peak memory stays far below
    the prefix's size, and the 60 bad values take at most 20 log lines."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        large = "x" * 1_200_000
        for i in range(60):
            etcd.put_fast(f"{PREFIX}big-{i:02d}", large)
        good = {f"{HOST}:{20_000 + i}" for i in range(3)}
        for i, address in enumerate(sorted(good)):
            etcd.put_fast(f"{PREFIX}good-{i}", json.dumps({"address": address}))
        port, admin = free_port(), free_port()
        gateway = start_gateway(launch, discovery_config(port, admin, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}},
                                                         health=False), port)
        wait_until(lambda: endpoint_addresses(admin) == good, timeout=30, message="the three good keys listed past 72 MB of values")
        discovery = mesh_cluster(admin)["discovery"]
        assert discovery["state"] == "ok" and discovery["failures_total"] == 0, discovery
        peak = vm_hwm_mib(gateway.pid)
        assert peak < 64, f"gateway peak RSS {peak:.0f} MiB while listing a 72 MB prefix"
        lines = bad_value_lines(gateway.log_text())
        assert len(lines) == 20, len(lines)
        assert all(l["error"] == "the value is 1200000 bytes, over the limit of 8192 bytes" for l in lines), lines[0]
        assert "more keys with bad values than the log takes" in gateway.log_text()
        # Still following the prefix: a value written now arrives by the watch.
        etcd.put_fast(f"{PREFIX}good-3", json.dumps({"address": f"{HOST}:20003"}))
        wait_until(lambda: f"{HOST}:20003" in endpoint_addresses(admin), timeout=10, message="a key put after the listing")
    finally:
        launch.stop_all()


def test_etcd_listing_reads_no_more_keys_than_max_endpoints(bins, tmp_path):
    """`max_endpoints: 3` over a prefix of 600 keys of about 1 KB: the
    listing asks etcd for three keys (Range `limit`), not the 600 KB under
    the prefix (measured with etcd's own count of bytes sent to gRPC
    clients), and the log line says how many keys there are, once."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        padding = {"note": "p" * 900}
        for i in range(600):
            etcd.put_fast(f"{PREFIX}k{i:03d}", json.dumps({"address": f"{HOST}:{20_000 + i}", "metadata": padding}))
        sent_before = etcd.metric("etcd_network_client_grpc_sent_bytes_total")
        port, admin = free_port(), free_port()
        source = {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}, "max_endpoints": 3}
        gateway = start_gateway(launch, discovery_config(port, admin, source, health=False), port)
        assert endpoint_addresses(admin) == {f"{HOST}:{20_000 + i}" for i in range(3)}
        sent = etcd.metric("etcd_network_client_grpc_sent_bytes_total") - sent_before
        assert sent < 50_000, f"etcd sent the gateway {sent:.0f} bytes to list 3 keys of about 1 KB"
        warnings = [json.loads(l) for l in gateway.log_text().splitlines() if "more keys under the prefix than max_endpoints" in l]
        assert len(warnings) == 1 and warnings[0]["keys"] == "600" and warnings[0]["max_endpoints"] == "3", warnings
    finally:
        launch.stop_all()


def test_etcd_relisting_after_removals_is_delayed_and_coalesced(bins, tmp_path):
    """`max_endpoints: 3` over 30 keys. A writer deletes the kept keys one
    after another, 20 deletes in 2 s: each delete of a kept key used to
    list the prefix again at once (one small write, one full read). Now a
    freed place is filled by one listing after a delay (1 s, then doubling
    while re-listings follow each other): at most three Range calls for
    the 20 deletes, and the waiting keys still take the places."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        address = {i: f"{HOST}:{20_000 + i}" for i in range(30)}
        for i in range(30):
            etcd.put_fast(f"{PREFIX}k{i:02d}", json.dumps({"address": address[i]}))
        port, admin = free_port(), free_port()
        source = {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}, "max_endpoints": 3}
        gateway = start_gateway(launch, discovery_config(port, admin, source, health=False), port)
        assert endpoint_addresses(admin) == {address[0], address[1], address[2]}
        ranges_before = etcd.metric("grpc_server_started_total", grpc_method="Range")
        for i in range(20):
            assert etcd.delete_fast(f"{PREFIX}k{i:02d}") == 1
            time.sleep(0.1)
        wait_until(lambda: endpoint_addresses(admin) == {address[20], address[21], address[22]}, timeout=15,
                   message="the waiting keys to take the freed places")
        ranges = etcd.metric("grpc_server_started_total", grpc_method="Range") - ranges_before
        assert 1 <= ranges <= 3, f"{ranges:.0f} Range calls for 20 deletes"
        assert gateway.alive()
    finally:
        launch.stop_all()


def test_etcd_a_kept_key_turning_bad_frees_its_place_and_unkept_keys_are_not_parsed(bins, tmp_path):
    """`max_endpoints: 2`, keys k1, k2 kept and k3 waiting. Puts of keys
    that have no place are not parsed (a bad value there is not logged)
    and the "more keys than max_endpoints" warning comes once, not per
    put. When k1's value turns bad, its place is freed and the prefix
    listed again, so k3 takes it."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        address = {rid: f"{HOST}:{20_000 + n}" for n, rid in enumerate(("k1", "k2", "k3"))}
        for rid in ("k1", "k2", "k3"):
            etcd.put_fast(PREFIX + rid, json.dumps({"address": address[rid]}))
        port, admin = free_port(), free_port()
        source = {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}, "max_endpoints": 2}
        gateway = start_gateway(launch, discovery_config(port, admin, source, health=False), port)
        assert endpoint_addresses(admin) == {address["k1"], address["k2"]}
        for n in range(5):
            etcd.put_fast(f"{PREFIX}k3", json.dumps({"address": address["k3"], "metadata": {"n": str(n)}}))
            etcd.put_fast(f"{PREFIX}z-unkept-{n}", "not an endpoint")
        # The watch delivers in order: once k1's change shows, the puts before it were seen.
        etcd.put_fast(PREFIX + "k1", "no longer an endpoint")
        wait_until(lambda: endpoint_addresses(admin) == {address["k2"], address["k3"]}, timeout=10,
                   message="k3 to take the place k1's bad value freed")
        log = gateway.log_text()
        assert [l["key"] for l in bad_value_lines(log)] == [PREFIX + "k1"], bad_value_lines(log)
        assert log.count("more keys under the prefix than max_endpoints") == 1, log
    finally:
        launch.stop_all()


def test_etcd_bad_values_within_places_are_logged_within_a_budget(bins, tmp_path):
    """40 keys with values that are not endpoints, put one after another
    (a writer in a loop): at most 20 error lines a minute and one warning
    that the rest are not logged, instead of a line per put."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        etcd.put_fast(PREFIX + "good", json.dumps({"address": f"{HOST}:20000"}))
        port, admin = free_port(), free_port()
        gateway = start_gateway(launch, discovery_config(port, admin, {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}},
                                                         health=False), port)
        assert endpoint_addresses(admin) == {f"{HOST}:20000"}
        for i in range(40):
            etcd.put_fast(f"{PREFIX}bad-{i:02d}", f"not-an-endpoint-{i}")
        etcd.put_fast(PREFIX + "last", json.dumps({"address": f"{HOST}:20001"}))
        wait_until(lambda: f"{HOST}:20001" in endpoint_addresses(admin), timeout=10, message="the key put after the bad ones")
        log = gateway.log_text()
        assert len(bad_value_lines(log)) == 20, len(bad_value_lines(log))
        assert log.count("more keys with bad values than the log takes") == 1
    finally:
        launch.stop_all()


def test_endpoint_metadata_is_capped_in_etcd_values_and_discovery_files(bins, tmp_path):
    """Labels of one endpoint: at most 32 names and 4 KiB of names and
    values (10,000 etcd keys of 64 KiB of labels each used to be held, per
    event loop, and built into /clusters). An etcd value past either limit
    is refused with a log line naming the key and the limit; a discovery
    file with such an entry is refused at its line (the last endpoints
    stay)."""
    launch = Launcher(bins, tmp_path)
    try:
        etcd = EtcdServer(tmp_path / "etcd", launch.group)
        etcd.start()
        etcd.put_fast(PREFIX + "ok", json.dumps({"address": f"{HOST}:20000", "metadata": {f"k{i}": "v" * 100 for i in range(32)}}))
        etcd.put_fast(PREFIX + "names", json.dumps({"address": f"{HOST}:20001", "metadata": {f"k{i}": "v" for i in range(33)}}))
        etcd.put_fast(PREFIX + "bytes", json.dumps({"address": f"{HOST}:20002", "metadata": {"a": "v" * 2100, "b": "v" * 2100}}))
        endpoints_file = tmp_path / "endpoints.yaml"
        endpoints_file.write_text(to_yaml({"endpoints": [{"address": f"{HOST}:20010"}]}))
        port, admin = free_port(), free_port()
        config = to_yaml({
            "admin": {"address": f"{HOST}:{admin}"},
            "runtime": {"drain_timeout": "3s"},
            "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                           "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
            "clusters": [{"name": "mesh", "discovery": {"etcd": {"endpoints": [etcd.endpoint], "prefix": PREFIX}}},
                         {"name": "files", "discovery": {"file": {"path": str(endpoints_file), "refresh_interval": "100ms"}}}],
        })
        gateway = start_gateway(launch, config, port)
        assert endpoint_addresses(admin) == {f"{HOST}:20000"}
        errors = {l["key"]: l["error"] for l in bad_value_lines(gateway.log_text())}
        assert errors == {PREFIX + "names": "value.metadata: 33 names, over the limit of 32 per endpoint",
                          PREFIX + "bytes": "value.metadata: names and values of 4202 bytes, over the limit of 4096 bytes per endpoint"}, errors
        files = lambda: next(c for c in clusters(admin)["clusters"] if c["name"] == "files")
        assert {e["address"] for e in files()["endpoints"]} == {f"{HOST}:20010"}
        write_atomically(endpoints_file, to_yaml({"endpoints": [{"address": f"{HOST}:20011"},
                                                                {"address": f"{HOST}:20012", "metadata": {f"k{i}": "v" for i in range(40)}}]}))
        wait_until(lambda: files()["discovery"]["consecutive_failures"] > 0, timeout=10, message="the file refused")
        error = files()["discovery"]["last_error"]
        assert error.startswith(f"{endpoints_file}:") and "endpoints[1].metadata: 40 names, over the limit of 32 per endpoint" in error, error
        assert {e["address"] for e in files()["endpoints"]} == {f"{HOST}:20010"}
    finally:
        launch.stop_all()


def request_counts(admin_port: int) -> float:
    """All calls the gateway counted (grpc_requests_total, every series)."""
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("grpc_requests_total{"))


def test_own_addresses_in_any_form_a_dial_takes_are_refused(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """A dial reads `127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1` and `0`
    as numbers and `localhost.` as localhost: a discovery file listing the
    gateway's own listener that way has every one refused (and counted
    on /clusters), and calls reach the replica beside them."""
    launch = Launcher(bins, tmp_path)
    try:
        _, replica_port = start_replica(launch, "n1")
        port, admin = free_port(), free_port()
        forms = ["127.1", "2130706433", "0x7f.1", "0177.0.0.1", "0", "localhost.", "LOCALHOST"]
        endpoints = tmp_path / "endpoints.yaml"
        endpoints.write_text(to_yaml({"endpoints": [{"address": f"{host}:{port}"} for host in forms]
                                      + [{"address": f"{HOST}:{replica_port}"}]}))
        start_gateway(launch, discovery_config(port, admin, {"file": {"path": str(endpoints)}}, health=False), port)
        assert endpoint_addresses(admin) == {f"{HOST}:{replica_port}"}
        discovered = mesh_cluster(admin)["discovery"]
        assert discovered["refused_own_addresses"] == [f"{host}:{port} (listener 'public' {HOST}:{port})" for host in forms], discovered
        assert discovered["refused_own_addresses_total"] == len(forms)
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(10):
                assert stub.Process(mesh_pb2.ProcessRequest(request_id=f"c{i}"), timeout=5).replica_id == "n1"
    finally:
        launch.stop_all()


def test_an_endpoint_that_connects_to_the_gateway_itself_is_refused_and_calls_fail_fast(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """Static endpoints are not checked when the config loads, and a name
    can resolve anywhere: `127.1:PORT` and `localhost:PORT` (PORT the
    gateway's own listener) are refused when the upstream connection
    finds its peer is that listener, like a failed connect. Calls get
    UNAVAILABLE instead of coming back into the gateway and looping until
    their deadline: the gateway counts each call once, and the log says
    which endpoint reached which listener. Merged reflection, which dials
    the cluster itself, leaves it out."""
    launch = Launcher(bins, tmp_path)
    try:
        port, admin = free_port(), free_port()
        config = to_yaml({
            "admin": {"address": f"{HOST}:{admin}"},
            "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                           "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "self"}]}],
            "clusters": [{"name": "self", "endpoints": [{"address": f"127.1:{port}"}, {"address": f"localhost:{port}"}]}],
        })
        gateway = start_gateway(launch, config, port)
        codes = []
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(6):
                try:
                    stub.Process(mesh_pb2.ProcessRequest(request_id=f"c{i}"), timeout=5)
                    codes.append("OK")
                except grpc.RpcError as error:
                    codes.append(error.code().name)
        assert codes == ["UNAVAILABLE"] * 6, codes
        # Six calls from the client, six counted: none came back in.
        assert request_counts(admin) == 6
        # Merged reflection dials the cluster too: it is left out, instead
        # of the gateway asking its own reflection, which asks again.
        from grpc_reflection.v1alpha import reflection_pb2
        with insecure_channel(port) as channel:
            stream = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            request = reflection_pb2.ServerReflectionRequest(list_services="*").SerializeToString()
            answer = reflection_pb2.ServerReflectionResponse.FromString(next(iter(stream(iter([request]), timeout=10))))
        listed = [s.name for s in answer.list_services_response.service]
        assert "mesh.v1.MeshService" not in listed and "grpc.health.v1.Health" in listed, answer
        assert any("reflection: cluster has no reflection" in line and "resolves to the gateway's own listener" in line
                   for line in gateway.log_text().splitlines()), gateway.log_text()[-3000:]
        log = gateway.log_text()
        for endpoint in (f"127.1:{port}", f"localhost:{port}"):
            assert (f"endpoint {endpoint} resolves to the gateway's own listener 'public' {HOST}:{port}: "
                    "refused, it would loop calls through the gateway") in log, log[-3000:]
    finally:
        launch.stop_all()
