"""The balancer plugins through real traffic: least connections (also with
power of two choices), uniform random, and consistent hashing with the
1/N remapping property when an endpoint leaves."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from meshkit import free_port, gateway_config, insecure_channel


def gateway_with(mesh, launcher, balancer: dict, ports=None, name="gw-lb"):
    port = free_port()
    ports = ports or [r.port for r in mesh.replicas.values()]
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [balancer]}
    launcher.gateway(gateway_config(port, clusters={"mesh": ports}, routes=[route]), port, name=name)
    return port


@pytest.mark.parametrize("balancer", [{"plugin": "least_conn"}, {"plugin": "least_conn", "config": {"choices": 2}}])
def test_least_conn_avoids_a_busy_replica(mesh, launcher, balancer):
    """r1 answers after 400 ms, r2 and r3 at once. With 8 calls kept in flight
    on one connection, least connections sends r1 far fewer than its round
    robin third of 90 calls (r1 stays busy, the others free up)."""
    pb = mesh.pb2
    port = gateway_with(mesh, launcher, balancer, name="gw-leastconn")
    mesh.control("r1").SetFaults(pb.FaultConfig(delay_ms=400), timeout=5)
    try:
        with insecure_channel(port) as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)

            def one(i):
                return stub.Process(pb.ProcessRequest(request_id=str(i)), timeout=10).replica_id
            with ThreadPoolExecutor(max_workers=8) as pool:
                counts = collections.Counter(pool.map(one, range(90)))
    finally:
        mesh.control("r1").SetFaults(pb.FaultConfig(), timeout=5)
    assert sum(counts.values()) == 90
    assert counts["r1"] < 15, counts
    assert counts["r2"] > 30 and counts["r3"] > 30, counts


def test_random_spreads_uniformly(mesh, launcher):
    """300 calls land on every replica, each within 60..140 (expected 100)."""
    port = gateway_with(mesh, launcher, {"plugin": "random"}, name="gw-random")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        counts = collections.Counter(stub.Process(mesh.pb2.ProcessRequest(request_id=str(i)), timeout=5).replica_id
                                     for i in range(300))
    assert set(counts) == {"r1", "r2", "r3"}
    assert all(60 <= c <= 140 for c in counts.values()), counts


def key_map(mesh, port: int, keys: list[str]) -> dict[str, str]:
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        futures = {k: stub.Process.future(mesh.pb2.ProcessRequest(request_id=k), metadata=[("x-user", k)], timeout=30)
                   for k in keys}
        return {k: f.result().replica_id for k, f in futures.items()}


def test_consistent_hash_is_sticky_and_remaps_one_nth(mesh, launcher):
    """Each of 1,000 keys maps to the same replica every time; with r3
    removed, only r3's keys move (about a third), the others stay put."""
    hashing = {"plugin": "consistent_hash", "config": {"header": "x-user"}}
    ports = [r.port for r in mesh.replicas.values()]
    three = gateway_with(mesh, launcher, hashing, ports=ports, name="gw-hash3")
    two = gateway_with(mesh, launcher, hashing, ports=ports[:2], name="gw-hash2")
    keys = [f"user-{i}" for i in range(1000)]
    first = key_map(mesh, three, keys)
    again = key_map(mesh, three, keys[:200])
    assert all(first[k] == again[k] for k in again), "a key moved without a membership change"
    counts = collections.Counter(first.values())
    assert set(counts) == {"r1", "r2", "r3"} and min(counts.values()) > 150, counts
    after = key_map(mesh, two, keys)
    moved = [k for k in keys if first[k] != after[k]]
    assert all(first[k] == "r3" for k in moved), "a key not owned by the removed replica moved"
    assert all(after[k] == first[k] for k in keys if first[k] != "r3")
    assert len(moved) == counts["r3"] and len(moved) / len(keys) < 0.45, len(moved)


def test_consistent_hash_without_the_header_still_serves(mesh, launcher):
    """Calls without the hashed header get some replica (random), never an error."""
    port = gateway_with(mesh, launcher, {"plugin": "consistent_hash", "config": {"header": "x-user"}}, name="gw-hash-nohdr")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        seen = {stub.Process(mesh.pb2.ProcessRequest(request_id=str(i)), timeout=5).replica_id for i in range(30)}
    assert len(seen) >= 2
