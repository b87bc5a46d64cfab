"""gRPC-Web through the gateway with a client not written here: sonora's
(PyPI `sonora`, an independent WSGI/ASGI gRPC-Web implementation whose
client speaks HTTP/1.1 through urllib3). The official grpc-web client is
JavaScript on npm (`grpc-web` with `protoc-gen-grpc-web`), which this
workplace cannot install: only Debian and PyPI are reachable, and Debian
packages no gRPC-Web client. Headless Chromium's fetch() (test_grpc_web.py)
is the browser side.

sonora declares urllib3<2 but works with urllib3 2.x; install it with
`pip install --no-deps sonora` so that the other tools keep their urllib3."""

from __future__ import annotations

import grpc
import pytest

from meshkit import addr, free_port, insecure_channel, to_yaml, wait_until

# scripts/setup.sh installs sonora; its absence is a failure, not a skip.
import sonora.client as sonora_client


@pytest.fixture
def web_port(launcher, mesh_pb2, mesh_pb2_grpc):
    replica = launcher.replica("so1")
    port = free_port()
    config = {"runtime": {"drain_timeout": "1s"},
              "listeners": [{"name": "web", "address": addr(port), "grpc_web": True,
                             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
              "clusters": [{"name": "mesh", "endpoints": [{"address": addr(replica.port)}]}]}
    launcher.gateway(to_yaml(config), port, name="gw-sonora")
    with insecure_channel(port) as ch:
        stub = mesh_pb2_grpc.MeshServiceStub(ch)
        wait_until(lambda: stub.Process(mesh_pb2.ProcessRequest(request_id="w"), timeout=5), timeout=10,
                   message="the gateway proxying")
    return port


def test_sonoras_client_calls_unary_streaming_and_gets_errors(web_port, mesh_pb2):
    """Unary (with a 64 KiB payload echoed), server streaming (20 events in
    order) and an upstream's PERMISSION_DENIED, all through sonora's
    client; the gateway's own UNIMPLEMENTED for an unrouted service too."""
    pb = mesh_pb2
    with sonora_client.insecure_web_channel(f"http://{addr(web_port)}") as channel:
        process = channel.unary_unary("/mesh.v1.MeshService/Process", request_serializer=pb.ProcessRequest.SerializeToString,
                                      response_deserializer=pb.ProcessResponse.FromString)
        events = channel.unary_stream("/mesh.v1.MeshService/StreamEvents", request_serializer=pb.StreamRequest.SerializeToString,
                                      response_deserializer=pb.Event.FromString)
        payload = bytes(range(256)) * 256
        reply = process(pb.ProcessRequest(request_id="s1", data="sonora", payload=payload), timeout=10)
        assert (reply.result, reply.replica_id, reply.payload) == ("processed: sonora", "so1", payload)
        assert [e.sequence for e in events(pb.StreamRequest(stream_id="so", count=20), timeout=10)] == list(range(20))
        with pytest.raises(grpc.RpcError) as denied:
            process(pb.ProcessRequest(request_id="f"), metadata=[("x-mesh-fail-code", "7")], timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "injected failure" in denied.value.details()
        unrouted = channel.unary_unary("/nobody.v1.Nothing/Call", request_serializer=lambda b: b,
                                       response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as missing:
            unrouted(b"", timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED
