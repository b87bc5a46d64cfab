"""gRPC-Web error paths (README "Traffic features", gRPC-Web), with the
client written from PROTOCOL-WEB.md (grpc_web_client.py) over HTTP/1.1
and HTTP/2: a malformed text body (INVALID_ARGUMENT), a deadline from the
web request's grpc-timeout (DEADLINE_EXCEEDED), an unreachable cluster
(UNAVAILABLE), a request message over the route's limit
(RESOURCE_EXHAUSTED), an upstream error after messages (the status in
the trailer frame that ends the body), and the gateway's own health
service, which is not offered over gRPC-Web (UNIMPLEMENTED). Every answer
must still be a well-formed gRPC-Web answer."""

from __future__ import annotations

import time
from concurrent import futures

import grpc
import pytest

from grpc_web_client import GrpcWebResponse, Http1Connection, _BodyParser, _request_headers, call_http1, call_http2
from meshkit import addr, free_port, h2_request, to_yaml, wait_until, port_accepts

PROCESS = "/mesh.v1.MeshService/Process"
STREAM = "/mesh.v1.MeshService/StreamEvents"
CALLS = {"http1": call_http1, "http2": call_http2}
T = 10.0


class MidStreamFailure:
    """A grpcio upstream whose StreamEvents sends two events, then ends
    with DATA_LOSS "lost after two"."""

    def __init__(self, pb2):
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))

        def stream_events(request, context):
            for i in range(2):
                yield pb2.Event(stream_id=request.stream_id, sequence=i, replica_id="mid").SerializeToString()
            context.abort(grpc.StatusCode.DATA_LOSS, "lost after two")
        handler = grpc.unary_stream_rpc_method_handler(stream_events, request_deserializer=pb2.StreamRequest.FromString)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("mesh.v1.MeshService",
                                                                                  {"StreamEvents": handler})])
        self.server.add_insecure_port(addr(self.port))
        self.server.start()


@pytest.fixture(scope="module")
def web(bins, mesh_pb2, tmp_path_factory):
    from conftest import Launcher
    launch = Launcher(bins, tmp_path_factory.mktemp("grpc_web_errors"))
    mid = MidStreamFailure(mesh_pb2)
    try:
        replica = launch.replica("we1")
        port = free_port()
        config = {
            "runtime": {"drain_timeout": "1s"},
            "listeners": [{"name": "web", "address": addr(port), "grpc_web": True, "routes": [
                {"match": {"method": STREAM}, "cluster": "mid"},
                {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "max_request_message_bytes": 1024},
                {"match": {"service": "dead.v1.Dead"}, "cluster": "dead"},
            ]}],
            "clusters": [{"name": "mesh", "endpoints": [{"address": addr(replica.port)}]},
                         {"name": "mid", "endpoints": [{"address": addr(mid.port)}]},
                         {"name": "dead", "connect_timeout": "500ms", "endpoints": [{"address": addr(free_port())}]}],
        }
        launch.gateway(to_yaml(config), port, name="gw-web-errors")
        ok = lambda: call_http1(port, PROCESS, [mesh_pb2.ProcessRequest(request_id="w").SerializeToString()], timeout=3).status == 0
        wait_until(ok, timeout=15, interval=0.2, message="a gRPC-Web call through the gateway")
        yield port
    finally:
        mid.server.stop(0)
        launch.stop_all()


def assert_web_status(resp: GrpcWebResponse, code: int, text: bool) -> None:
    assert resp.http_status == 200, (resp.http_status, resp.headers, resp.body[:200])
    expected = "application/grpc-web-text+proto" if text else "application/grpc-web+proto"
    assert resp.content_type() == expected, resp.headers
    assert resp.status == code, (resp.status, resp.message, resp.headers, resp.trailers)


def malformed_over_http1(conn: Http1Connection):
    headers = _request_headers("application/grpc-web-text", True, [])
    raw = conn._send("POST", PROCESS, headers, b"!!!! this is not base64 ****")
    resp = GrpcWebResponse(raw.status, {k.lower(): v for k, v in raw.getheaders()}, True)
    parser = _BodyParser(resp)
    while chunk := raw.read1(65536):
        parser.feed(chunk)
    return parser.finish()


def test_a_malformed_text_body_is_invalid_argument_over_http1(web):
    """A grpc-web-text body that is not base64: INVALID_ARGUMENT (3), as a
    gRPC-Web answer."""
    conn = Http1Connection(web, timeout=T)
    try:
        resp = malformed_over_http1(conn)
    finally:
        conn.close()
    assert_web_status(resp, 3, text=True)
    assert "base64" in resp.message, resp.message
    assert resp.messages == []


def test_http1_keep_alive_survives_a_malformed_text_body_or_is_closed_openly(web):
    """README: gRPC-Web over HTTP/1.1 keeps connections alive. After the
    malformed body's answer, the connection either carries the next call
    or the answer said `Connection: close`."""
    conn = Http1Connection(web, timeout=T)
    try:
        resp = malformed_over_http1(conn)
        assert resp.status == 3, resp
        if resp.headers.get("connection", "").lower() == "close":
            return
        again = conn.call(PROCESS, [b"\x0a\x01k"], text=True)
        assert again.status == 0, (again.status, again.message)
    finally:
        conn.close()


def test_a_malformed_text_body_is_invalid_argument_over_http2(web):
    resp = h2_request(web, [(":method", "POST"), (":scheme", "http"), (":authority", addr(web)), (":path", PROCESS),
                            ("content-type", "application/grpc-web-text"), ("x-grpc-web", "1")],
                      b"!!!! this is not base64 ****", timeout=T)
    assert resp.ended == "end_stream", resp
    assert resp.blocks and resp.blocks[0].get(":status") == "200", resp.blocks
    status = resp.header("grpc-status")
    if status is None:  # the status may be in the (base64) trailer frame of the body
        import base64
        decoded = base64.b64decode(resp.data)
        assert decoded[0] == 0x80, decoded[:20]
        status = decoded[5:].decode().split("grpc-status:")[1].split("\r\n")[0].strip()
    assert status == "3", (resp.blocks, resp.data[:200])


@pytest.mark.parametrize("transport, text", [("http1", True), ("http2", False)])
def test_the_web_requests_grpc_timeout_is_enforced(web, mesh_pb2, transport, text):
    """grpc-timeout 300m on a call the replica delays 3 s: DEADLINE_EXCEEDED
    (4) within well under the delay."""
    request = mesh_pb2.ProcessRequest(request_id="late").SerializeToString()
    started = time.monotonic()
    resp = CALLS[transport](web, PROCESS, [request], text=text, timeout=T,
                            headers=[("grpc-timeout", "300m"), ("x-mesh-delay-ms", "3000")])
    elapsed = time.monotonic() - started
    assert_web_status(resp, 4, text)
    assert 0.25 <= elapsed < 1.5, elapsed


@pytest.mark.parametrize("transport, text", [("http1", False), ("http2", True)])
def test_an_unreachable_cluster_is_unavailable(web, transport, text):
    """A route to a cluster whose only endpoint refuses connections:
    UNAVAILABLE (14), with a message that names no address."""
    resp = CALLS[transport](web, "/dead.v1.Dead/Call", [b""], text=text, timeout=T)
    assert_web_status(resp, 14, text)
    assert "127.0.0.1" not in resp.message, resp.message


@pytest.mark.parametrize("transport, text", [("http1", True), ("http2", False)])
def test_a_request_message_over_the_route_limit_is_resource_exhausted(web, mesh_pb2, transport, text):
    """max_request_message_bytes 1024 on the route: a 4 KiB request message
    sent as gRPC-Web ends RESOURCE_EXHAUSTED (8) naming the limit; a small
    one passes."""
    big = mesh_pb2.ProcessRequest(request_id="big", payload=b"x" * 4096).SerializeToString()
    resp = CALLS[transport](web, PROCESS, [big], text=text, timeout=T)
    assert_web_status(resp, 8, text)
    assert "max_request_message_bytes" in resp.message, resp.message
    small = CALLS[transport](web, PROCESS, [mesh_pb2.ProcessRequest(request_id="s").SerializeToString()], text=text, timeout=T)
    assert_web_status(small, 0, text)


@pytest.mark.parametrize("transport, text", [("http1", False), ("http1", True), ("http2", False), ("http2", True)])
def test_an_upstream_error_after_messages_ends_the_body_with_its_status(web, mesh_pb2, transport, text):
    """Two events, then DATA_LOSS from the upstream: both events arrive, and
    the status (15, "lost after two") is in the trailer frame that ends the
    body, not in headers (which went out with the first event)."""
    request = mesh_pb2.StreamRequest(stream_id="mid", count=5).SerializeToString()
    resp = CALLS[transport](web, STREAM, [request], text=text, timeout=T)
    assert_web_status(resp, 15, text)
    assert resp.status_source == "trailer-frame", (resp.status_source, resp.headers)
    assert resp.message == "lost after two", resp.message
    assert [mesh_pb2.Event.FromString(m).sequence for m in resp.messages] == [0, 1]


@pytest.mark.parametrize("transport", ["http1", "http2"])
def test_the_gateways_own_health_service_is_not_offered_over_grpc_web(web, transport):
    """README: the gateway's own grpc.health.v1 is not offered over gRPC-Web:
    UNIMPLEMENTED (12), not a health answer."""
    resp = CALLS[transport](web, "/grpc.health.v1.Health/Check", [b""], timeout=T)
    assert_web_status(resp, 12, False)
    assert resp.messages == []
