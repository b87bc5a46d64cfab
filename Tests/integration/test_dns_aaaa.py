"""DNS discovery of AAAA records (README "Service discovery": `dns` takes
A/AAAA of a name, `family: any, v4 or v6`), against dnsmasq as in
test_discovery.py: one name with an A record (127.0.0.1) and an AAAA
record (::1), a replica listening on each address at the same port."""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import pytest

from conftest import Launcher
from discovery_servers import Dnsmasq, dns_answers
from meshkit import HOST, free_port, insecure_channel, to_yaml, wait_until


def discovered(admin_port: int) -> set[str]:
    with urllib.request.urlopen(f"http://{HOST}:{admin_port}/clusters", timeout=5) as response:
        clusters = json.loads(response.read())["clusters"]
    return {e["address"] for c in clusters if c["name"] == "mesh" for e in c["endpoints"]}


@pytest.mark.parametrize("family, addresses, replicas", [
    ("v6", {"[::1]"}, {"v6"}),
    ("any", {"127.0.0.1", "[::1]"}, {"v4", "v6"}),
    ("v4", {"127.0.0.1"}, {"v4"}),  # the control: the same name without its AAAA record
])
def test_aaaa_records_become_endpoints(bins, mesh_pb2, mesh_pb2_grpc, tmp_path, family, addresses, replicas):
    launch = Launcher(bins, tmp_path)
    try:
        replica_port = free_port()
        for rid, host in (("v4", "127.0.0.1"), ("v6", "::1")):
            argv = [str(bins.mesh_sample), "--host", host, "--port", str(replica_port), "--replica-id", rid]
            proc = launch.group.start(f"replica-{rid}", argv)
            wait_until(lambda: '"listening"' in proc.log_text(), timeout=10, message=f"replica {rid} listening")
        dns = Dnsmasq(tmp_path / "dnsmasq", launch.group)
        dns.set_hosts({"mesh.test": ["127.0.0.1", "::1"]})
        dns.start()
        assert dns_answers(dns.port, "mesh.test", "AAAA"), "dnsmasq serves the AAAA record"
        port, admin = free_port(), free_port()
        doc = {
            "admin": {"address": f"{HOST}:{admin}"},
            "runtime": {"drain_timeout": "2s"},
            "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                           "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
            "clusters": [{"name": "mesh", "discovery": {"dns": {
                "name": "mesh.test", "port": replica_port, "resolver": dns.address, "family": family,
                "refresh_interval": "5s", "timeout": "500ms"}}}],
        }
        launch.gateway(to_yaml(doc), port, name=f"gw-dns-{family}")
        want = {f"{a}:{replica_port}" for a in addresses}
        wait_until(lambda: discovered(admin) == want, timeout=10, interval=0.1,
                   message=f"endpoints {want} (family {family})")
        with insecure_channel(port) as ch:
            stub = mesh_pb2_grpc.MeshServiceStub(ch)
            answered = Counter(stub.Process(mesh_pb2.ProcessRequest(request_id=f"d{i}"), timeout=5).replica_id
                               for i in range(20))
        assert set(answered) == replicas, answered
    finally:
        launch.stop_all()
