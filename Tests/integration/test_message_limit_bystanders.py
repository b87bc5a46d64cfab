"""A call refused for its request message size (route
`max_request_message_bytes`) must lose only itself (README "Limits":
"Past a limit the gateway refuses that stream ... and the connection's
other streams go on"). Found while covering gRPC-Web error paths: here a
bystander stream shares the refused call's upstream connection (one event
loop, one connection per endpoint) to a mesh-sample replica."""

from __future__ import annotations

import grpc
import pytest

from coverkit import PROCESS, config_doc, mesh_route
from grpc_web_client import call_http1
from meshkit import free_port, insecure_channel, to_yaml

@pytest.mark.parametrize("client", ["grpc", "grpc-web"])
def test_a_request_over_the_message_limit_leaves_other_calls_on_its_upstream_connection(
        launcher, mesh_pb2, mesh_pb2_grpc, client):
    pb = mesh_pb2
    replica = launcher.replica("lb1")
    port = free_port()
    doc = config_doc(port, None, {"mesh": [replica.port]}, [mesh_route(max_request_message_bytes=1024)],
                     runtime={"event_loops": 1}, listener={"grpc_web": True},
                     cluster_extra={"mesh": {"max_connections_per_endpoint": 1}})
    launcher.gateway(to_yaml(doc), port, name="gw-limit-bystander")
    with insecure_channel(port) as ch:
        stub = mesh_pb2_grpc.MeshServiceStub(ch)
        stub.Process(pb.ProcessRequest(request_id="warm"), timeout=10)
        bystander = stub.StreamEvents(pb.StreamRequest(stream_id="by", count=8, interval_ms=100), timeout=10)
        assert next(bystander).sequence == 0
        big = pb.ProcessRequest(request_id="big", payload=b"x" * 4096)
        if client == "grpc":
            with pytest.raises(grpc.RpcError) as caught:
                stub.Process(big, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        else:
            resp = call_http1(port, PROCESS, [big.SerializeToString()], timeout=10)
            assert resp.status == 8, (resp.status, resp.message)
        rest = [event.sequence for event in bystander]
    assert rest == list(range(1, 8)), rest
