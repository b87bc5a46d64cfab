"""Limits a route sets on what passes through it: gRPC message sizes each
way (`max_request_message_bytes`, `max_response_message_bytes`), answered
with RESOURCE_EXHAUSTED naming the limit, as a gRPC server or client
would; calls within them are untouched."""

from __future__ import annotations

import grpc
import pytest

from meshkit import free_port, gateway_config, insecure_channel, read_until_close


@pytest.fixture
def limited(mesh, launcher):
    port = free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
             "max_request_message_bytes": 1000, "max_response_message_bytes": 600}
    launcher.gateway(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route]),
                     port, name="gw-limits")
    with insecure_channel(port) as channel:
        yield mesh.pb2_grpc.MeshServiceStub(channel), mesh.pb2


def test_messages_within_the_limits_pass(limited):
    stub, pb2 = limited
    assert stub.Process(pb2.ProcessRequest(request_id="small", data="x" * 400), timeout=5).result == "processed: " + "x" * 400
    events = list(stub.StreamEvents(pb2.StreamRequest(count=5, interval_ms=1), timeout=5))
    assert [e.sequence for e in events] == list(range(5))


def test_a_request_message_over_the_limit_is_resource_exhausted(limited):
    stub, pb2 = limited
    request = pb2.ProcessRequest(request_id="big", data="x" * 2000)
    with pytest.raises(grpc.RpcError) as info:
        stub.Process(request, timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    size = len(request.SerializeToString())
    assert info.value.details() == f"request message of {size} bytes exceeds the route's max_request_message_bytes (1000)"
    # The connection is fine afterwards.
    assert stub.Process(pb2.ProcessRequest(request_id="after", data="y"), timeout=5).result == "processed: y"


def test_a_response_message_over_the_limit_is_resource_exhausted(limited):
    stub, pb2 = limited
    with pytest.raises(grpc.RpcError) as info:
        stub.Process(pb2.ProcessRequest(request_id="echo", data="z" * 800), timeout=5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "response message of" in info.value.details()
    assert info.value.details().endswith("exceeds the route's max_response_message_bytes (600)")
    assert stub.Process(pb2.ProcessRequest(request_id="after", data="y"), timeout=5).result == "processed: y"


def listener_refusals(admin: int) -> dict[str, float]:
    """meshgate_listener_connections_refused_total by listener."""
    import re
    import urllib.request
    from meshkit import HOST
    with urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {m.group(1): float(m.group(2))
            for m in re.finditer(r'^meshgate_listener_connections_refused_total\{listener="([^"]*)"\} (\S+)$', text, re.M)}


def test_a_listener_at_max_connections_closes_new_connections(mesh, launcher):
    """max_connections: 2. Two clients are served; a third connection is
    closed at once without a SETTINGS frame, and
    meshgate_listener_connections_refused_total counts every connection
    so closed, per listener; once one of the two leaves, a new client is
    served again."""
    import socket
    import time
    from meshkit import HOST, to_yaml
    import yaml
    port, admin = free_port(), free_port()
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]))
    doc["listeners"][0]["max_connections"] = 2
    doc["listeners"].append({"name": "other", "address": f"{HOST}:{free_port()}", "routes": []})
    doc["admin"] = {"address": f"{HOST}:{admin}"}
    launcher.gateway(to_yaml(doc), port, name="gw-max-connections")
    refused_seen = 0
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

    def open_h2() -> tuple[socket.socket, bytes, bool]:
        """Connects and sends the preface: (socket, what came within 2 s, closed?)."""
        sock = socket.create_connection((HOST, port), timeout=5)
        try:
            sock.sendall(preface)
        except (BrokenPipeError, ConnectionResetError):
            return sock, b"", True
        data, closed = read_until_close(sock, 2, done=lambda d: len(d) >= 9)
        return sock, data, closed

    # The launcher's readiness probe was a connection too: its slot frees
    # once the gateway has seen it close, so the first two may need a retry.
    held, deadline = [], time.monotonic() + 5
    while len(held) < 2:
        sock, data, closed = open_h2()
        if closed:
            refused_seen += 1
            sock.close()
            assert time.monotonic() < deadline, "two connections were never served"
            time.sleep(0.1)
            continue
        assert data[3] == 0x4, f"no SETTINGS first: {data[:20]!r}"
        held.append(sock)
    first, second = held
    third, data3, closed3 = open_h2()
    third.close()
    assert closed3 and data3 == b"", f"the third connection was served: {data3[:20]!r}"
    refused_seen += 1
    assert listener_refusals(admin) == {"public": refused_seen, "other": 0}
    first.close()
    deadline = time.monotonic() + 5
    while True:
        fourth, data4, closed4 = open_h2()
        fourth.close()
        if closed4:
            refused_seen += 1
        if not closed4 and data4[:9] and data4[3] == 0x4:
            break
        assert time.monotonic() < deadline, "no connection served after one of the two left"
        time.sleep(0.1)
    second.close()
    assert listener_refusals(admin) == {"public": refused_seen, "other": 0}
