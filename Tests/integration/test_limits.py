"""Limits a route sets on what passes through it: gRPC message sizes each
way (`max_request_message_bytes`, `max_response_message_bytes`), answered
with RESOURCE_EXHAUSTED naming the limit, as a gRPC server or client
would; calls within them are untouched."""

from __future__ import annotations

import grpc
import pytest

from meshkit import free_port, gateway_config, insecure_channel


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
