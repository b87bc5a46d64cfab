"""gRPC-Web on a listener (`grpc_web: true`), through the gateway to sample
replicas, with an independent client written from gRPC's PROTOCOL-WEB.md
(grpc_web_client.py): unary and server streaming, binary and base64 text,
over HTTP/1.1 (chunked, keep-alive) and HTTP/2; statuses from the gateway
and from upstreams (Trailers-Only); CORS (`cors:` allowed origins, max
age); ordinary gRPC on the same listener; and a real browser (headless
Chromium, grpc_web_browser_scenario.py) calling cross-origin with fetch()."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import grpc
import pytest

from grpc_web_client import Http1Connection, call_http1, call_http2, encode_body
from meshkit import RawServer, addr, free_port, insecure_channel, parse_grpc_timeout, port_accepts, rss_kib, to_yaml, wait_until

HERE = Path(__file__).resolve().parent
PROCESS = "/mesh.v1.MeshService/Process"
STREAM = "/mesh.v1.MeshService/StreamEvents"
REPLICAS = {"w1", "w2"}
ORIGIN = "http://127.0.0.1:8123"  # the one origin the `web` listener allows
OTHER_ORIGIN = "http://127.0.0.1:8124"
CALLS = {"http1": call_http1, "http2": call_http2}
T = 10.0


@dataclass
class WebGateway:
    port: int  # grpc_web, cors for ORIGIN with max_age 10m
    nocors_port: int  # grpc_web, no cors block
    any_port: int  # grpc_web, cors for "*" with the default max_age
    pb2: ModuleType
    pb2_grpc: ModuleType


@pytest.fixture(scope="module")
def web(bins, mesh_pb2, mesh_pb2_grpc, tmp_path_factory):
    """Two replicas (w1, w2) behind one gateway with three gRPC-Web listeners."""
    from conftest import Launcher
    launcher = Launcher(bins, tmp_path_factory.mktemp("grpc_web"))
    try:
        replicas = [launcher.replica(rid) for rid in sorted(REPLICAS)]
        port, nocors_port, any_port = free_port(), free_port(), free_port()
        routes = [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]
        config = {
            "runtime": {"drain_timeout": "1s"},
            "listeners": [
                {"name": "web", "address": addr(port), "grpc_web": True,
                 "cors": {"allowed_origins": [ORIGIN], "max_age": "10m"}, "routes": routes},
                {"name": "web-nocors", "address": addr(nocors_port), "grpc_web": True, "routes": routes},
                {"name": "web-any", "address": addr(any_port), "grpc_web": True,
                 "cors": {"allowed_origins": ["*"]}, "routes": routes},
            ],
            "clusters": [{"name": "mesh", "endpoints": [{"address": addr(r.port)} for r in replicas]}],
        }
        gateway = launcher.gateway(to_yaml(config), port, name="gw-web")
        for other in (nocors_port, any_port):
            wait_until(lambda: port_accepts(other), timeout=10, message=f"listener on {other}")
        # Startup probe with ordinary gRPC, so that a broken gRPC-Web path
        # fails the tests below one by one rather than this fixture.
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)

            def proxying() -> bool:
                try:
                    stub.Process(mesh_pb2.ProcessRequest(request_id="warmup"), timeout=2)
                    return True
                except grpc.RpcError:
                    return False

            wait_until(proxying, timeout=20, interval=0.2, message=f"a gRPC call through the gateway\n{gateway.proc.describe()}")
        yield WebGateway(port, nocors_port, any_port, mesh_pb2, mesh_pb2_grpc)
    finally:
        launcher.stop_all()


# --------------------------------------------------------------------------
# Helpers


def expected_content_type(text: bool) -> str:
    return "application/grpc-web-text+proto" if text else "application/grpc-web+proto"


def assert_grpc_web_answer(resp, text: bool, transport: str) -> None:
    """What every gRPC-Web answer must be, whatever its status."""
    assert resp.http_status == 200, (resp.http_status, resp.headers, resp.body[:200])
    assert resp.content_type() == expected_content_type(text), resp.headers
    assert resp.status is not None, f"no grpc-status in headers or a trailer frame: {resp.headers} {resp.body[:200]!r}"
    assert all(name == name.lower() for name in resp.trailers), resp.trailers
    if transport == "http1":
        assert resp.chunked or resp.body == b"", "an HTTP/1.1 body must be chunked"
    else:
        assert not resp.http_trailers, f"HTTP/2 trailers are invisible to browsers: {resp.http_trailers}"


def assert_ok(resp, text: bool, transport: str) -> None:
    """A successful call: status 0 in the trailer frame that ends the body."""
    assert_grpc_web_answer(resp, text, transport)
    assert (resp.status, resp.message) == (0, ""), (resp.status, resp.message)
    assert resp.status_source == "trailer-frame", (resp.status_source, resp.headers)
    assert "grpc-status" in resp.trailers, resp.trailers


def comma_tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}


def preflight(port: int, origin: str, request_headers: str = "content-type,x-grpc-web,x-user-agent,grpc-timeout"):
    conn = Http1Connection(port)
    try:
        return conn.request("OPTIONS", PROCESS, [("origin", origin), ("access-control-request-method", "POST"),
                                                 ("access-control-request-headers", request_headers)])
    finally:
        conn.close()


# --------------------------------------------------------------------------
# Unary and server streaming


@pytest.mark.parametrize("transport, content_type", [
    ("http1", "application/grpc-web"),
    ("http1", "application/grpc-web-text"),
    ("http2", "application/grpc-web+proto"),
    ("http2", "application/grpc-web-text+proto"),
])
def test_unary_process(web, transport, content_type):
    """Process answers one ProcessResponse (echoing id, data and a payload of
    every byte value) and status 0 in a trailer frame, for each content type
    and HTTP version; a text request gets a text answer."""
    text = "-text" in content_type
    pb = web.pb2
    request = pb.ProcessRequest(request_id=f"u-{transport}-{content_type}", data="hello web",
                                payload=bytes(range(256)) * 4)
    resp = CALLS[transport](web.port, PROCESS, [request.SerializeToString()], text=text,
                            content_type=content_type, timeout=T)
    assert_ok(resp, text, transport)
    assert len(resp.messages) == 1, resp.messages
    reply = pb.ProcessResponse.FromString(resp.messages[0])
    assert reply.request_id == request.request_id
    assert reply.result == "processed: hello web"
    assert reply.replica_id in REPLICAS
    assert reply.payload == request.payload


@pytest.mark.parametrize("transport, text", [("http1", True), ("http2", False)])
def test_server_streaming(web, transport, text):
    """StreamEvents: all 25 events, in order, from one replica, then status 0."""
    pb = web.pb2
    request = pb.StreamRequest(stream_id=f"s-{transport}", event_types=["a", "b", "c"], count=25, payload_size=100)
    resp = CALLS[transport](web.port, STREAM, [request.SerializeToString()], text=text, timeout=T)
    assert_ok(resp, text, transport)
    events = [pb.Event.FromString(m) for m in resp.messages]
    assert [e.sequence for e in events] == list(range(25))
    assert [e.event_type for e in events] == (["a", "b", "c"] * 9)[:25]
    assert all(e.stream_id == f"s-{transport}" and len(e.payload) == 100 for e in events)
    replicas = {e.replica_id for e in events}
    assert len(replicas) == 1 and replicas <= REPLICAS, replicas


@pytest.mark.parametrize("transport, text", [("http1", True), ("http2", False)])
def test_server_streaming_arrives_incrementally(web, transport, text):
    """Events sent 300 ms apart reach the client as they are sent, not all
    at the end: the first is complete well before the last."""
    pb = web.pb2
    request = pb.StreamRequest(stream_id="slow", count=4, interval_ms=300)
    resp = CALLS[transport](web.port, STREAM, [request.SerializeToString()], text=text, timeout=T)
    assert_ok(resp, text, transport)
    assert [pb.Event.FromString(m).sequence for m in resp.messages] == [0, 1, 2, 3]
    times = [t - resp.started for t in resp.message_times]
    assert times[-1] - times[0] >= 0.45, f"events arrived at {times} s (sent 0.3 s apart)"


def test_http1_keep_alive_carries_several_calls(web):
    """Three calls (binary, text, streaming) on one HTTP/1.1 connection."""
    pb = web.pb2
    conn = Http1Connection(web.port, timeout=T)
    try:
        first = conn.call(PROCESS, [pb.ProcessRequest(request_id="k1", data="one").SerializeToString()])
        assert_ok(first, False, "http1")
        sock = conn.sock
        assert sock is not None and first.headers.get("connection", "").lower() != "close", first.headers
        second = conn.call(PROCESS, [pb.ProcessRequest(request_id="k2", data="two").SerializeToString()], text=True)
        assert conn.sock is sock, "the gateway closed the connection after the first call"
        assert_ok(second, True, "http1")
        third = conn.call(STREAM, [pb.StreamRequest(stream_id="k3", count=3).SerializeToString()])
        assert conn.sock is sock, "the gateway closed the connection after the second call"
        assert_ok(third, False, "http1")
    finally:
        conn.close()
    assert pb.ProcessResponse.FromString(first.messages[0]).result == "processed: one"
    assert pb.ProcessResponse.FromString(second.messages[0]).result == "processed: two"
    assert [pb.Event.FromString(m).sequence for m in third.messages] == [0, 1, 2]


def test_upstream_gets_native_grpc(web):
    """The replica sees an ordinary gRPC request: content-type application/grpc
    (not grpc-web), and the gRPC-Web request's grpc-timeout as its deadline."""
    pb = web.pb2
    request = pb.ProcessRequest(request_id="native", data="x")
    resp = call_http1(web.port, PROCESS, [request.SerializeToString()],
                      headers=[("x-mesh-echo-headers", "1"), ("grpc-timeout", "5S")], timeout=T)
    assert_ok(resp, False, "http1")
    seen = dict(pb.ProcessResponse.FromString(resp.messages[0]).request_headers)
    assert re.fullmatch(r"application/grpc(\+proto)?", seen.get("content-type", "")), seen
    assert "grpc-timeout" in seen, seen
    assert 4_000_000_000 < parse_grpc_timeout(seen["grpc-timeout"]) <= 5_000_000_000, seen


# --------------------------------------------------------------------------
# Statuses


@pytest.mark.parametrize("transport, text", [("http1", False), ("http2", True)])
@pytest.mark.parametrize("path, named", [
    ("/mesh.v1.NoSuchService/Process", "NoSuchService"),  # no route: the gateway answers
    ("/mesh.v1.MeshService/NoSuchMethod", "NoSuchMethod"),  # routed: the replica answers
])
def test_unknown_method_is_unimplemented(web, path, named, transport, text):
    """UNIMPLEMENTED (12) with a message naming the method, as a gRPC-Web
    status (HTTP headers of a Trailers-Only answer, or a trailer frame)."""
    request = web.pb2.ProcessRequest(request_id="nope").SerializeToString()
    resp = CALLS[transport](web.port, path, [request], text=text, timeout=T)
    assert_grpc_web_answer(resp, text, transport)
    assert resp.status == 12, (resp.status, resp.message, resp.headers, resp.trailers)
    assert named in resp.message, resp.message
    assert resp.messages == []


@pytest.mark.parametrize("transport, text", [("http1", True), ("http2", False)])
def test_upstream_error_status(web, transport, text):
    """A replica's Trailers-Only PERMISSION_DENIED (x-mesh-fail-code: 7)
    reaches the gRPC-Web client with its code and message."""
    request = web.pb2.ProcessRequest(request_id="fail").SerializeToString()
    resp = CALLS[transport](web.port, PROCESS, [request], text=text,
                            headers=[("x-mesh-fail-code", "7")], timeout=T)
    assert_grpc_web_answer(resp, text, transport)
    assert resp.status == 7, (resp.status, resp.message, resp.headers, resp.trailers)
    assert "injected failure by replica" in resp.message, resp.message
    assert resp.messages == []


# --------------------------------------------------------------------------
# CORS


def test_cors_preflight_allowed(web):
    """An allowed origin's preflight: 204, that origin, POST, the gRPC-Web
    request headers, and max_age 10m as 600 s."""
    r = preflight(web.port, ORIGIN)
    assert r.status == 204, (r.status, r.headers, r.body)
    assert r.headers.get("access-control-allow-origin") == ORIGIN, r.headers
    assert "post" in comma_tokens(r.headers.get("access-control-allow-methods", "")), r.headers
    allowed = comma_tokens(r.headers.get("access-control-allow-headers", ""))
    assert {"content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"} <= allowed, r.headers
    assert r.headers.get("access-control-max-age") == "600", r.headers
    assert r.body == b""


def test_cors_preflight_any_origin(web):
    """allowed_origins ["*"] admits any origin; max_age defaults to 24 h."""
    r = preflight(web.any_port, "https://anywhere.example")
    assert r.status == 204, (r.status, r.headers, r.body)
    assert r.headers.get("access-control-allow-origin") in ("*", "https://anywhere.example"), r.headers
    assert "post" in comma_tokens(r.headers.get("access-control-allow-methods", "")), r.headers
    assert r.headers.get("access-control-max-age") == "86400", r.headers


@pytest.mark.parametrize("listener, origin", [("port", OTHER_ORIGIN), ("nocors_port", ORIGIN)])
def test_cors_preflight_refused(web, listener, origin):
    """An origin not in allowed_origins, or a listener without `cors`: 403
    and no access-control-allow-origin."""
    r = preflight(getattr(web, listener), origin)
    assert r.status == 403, (r.status, r.headers, r.body)
    assert "access-control-allow-origin" not in r.headers, r.headers


@pytest.mark.parametrize("path, extra", [
    (PROCESS, []),  # status in the trailer frame
    (PROCESS, [("x-mesh-fail-code", "7")]),  # an upstream's Trailers-Only
    ("/mesh.v1.NoSuchService/Process", []),  # the gateway's own refusal
])
def test_cors_headers_on_answers_to_an_allowed_origin(web, path, extra):
    """Every answer to an allowed origin's POST, errors included, lets the
    page read it: access-control-allow-origin and exposed grpc-status and
    grpc-message (a page can read a Trailers-Only status only so)."""
    request = web.pb2.ProcessRequest(request_id="cors").SerializeToString()
    resp = call_http1(web.port, path, [request], headers=[("origin", ORIGIN), *extra], timeout=T)
    assert_grpc_web_answer(resp, False, "http1")
    assert resp.headers.get("access-control-allow-origin") == ORIGIN, resp.headers
    exposed = comma_tokens(resp.headers.get("access-control-expose-headers", ""))
    assert {"grpc-status", "grpc-message"} <= exposed, resp.headers


def test_no_cors_headers_for_other_origins_or_without_cors(web):
    """No access-control-allow-origin for an origin not allowed, nor on a
    listener without `cors` (where the call itself still works)."""
    request = web.pb2.ProcessRequest(request_id="nocors").SerializeToString()
    resp = call_http1(web.nocors_port, PROCESS, [request], headers=[("origin", ORIGIN)], timeout=T)
    assert_ok(resp, False, "http1")
    assert not any(name.startswith("access-control-") for name in resp.headers), resp.headers
    conn = Http1Connection(web.port, timeout=T)
    try:
        other = conn.request("POST", PROCESS, [("origin", OTHER_ORIGIN), ("content-type", "application/grpc-web+proto"),
                                               ("x-grpc-web", "1")], body=encode_body([request], text=False))
    finally:
        conn.close()
    assert "access-control-allow-origin" not in other.headers, other.headers


# --------------------------------------------------------------------------
# Ordinary gRPC on the same listener


def test_grpcio_on_the_grpc_web_listener(web):
    """grpcio still works on a grpc_web listener: unary (with the replica's
    initial metadata), server streaming and an upstream error status."""
    pb = web.pb2
    with insecure_channel(web.port) as channel:
        stub = web.pb2_grpc.MeshServiceStub(channel)
        reply, call = stub.Process.with_call(pb.ProcessRequest(request_id="g", data="grpc"), timeout=T)
        assert (reply.request_id, reply.result) == ("g", "processed: grpc")
        assert dict(call.initial_metadata()).get("x-mesh-replica") == reply.replica_id
        events = list(stub.StreamEvents(pb.StreamRequest(count=5), timeout=T))
        assert [e.sequence for e in events] == list(range(5))
        with pytest.raises(grpc.RpcError) as info:
            stub.Process(pb.ProcessRequest(request_id="e"), metadata=[("x-mesh-fail-code", "7")], timeout=T)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --------------------------------------------------------------------------
# A browser


def test_chromium_calls_cross_origin_with_fetch(bins, tmp_path):
    """Headless Chromium (in its own network namespace) loads a page from
    another origin whose script calls Process through the gateway with
    fetch(), once as grpc-web-text and once as binary grpc-web+proto
    (preflighted: CORS), decodes frames and trailer by hand, and writes
    what it got into the DOM."""
    # scripts/test.sh installs both (util-linux is Essential in Debian):
    # a missing one is a failure, never a skip.
    assert shutil.which("unshare"), "unshare is missing (util-linux)"
    assert Path("/usr/bin/chromium").exists(), "/usr/bin/chromium is missing: run scripts/setup.sh"
    result = subprocess.run(["unshare", "-n", sys.executable, str(HERE / "grpc_web_browser_scenario.py"),
                             str(bins.meshgate), str(bins.mesh_sample), str(tmp_path)],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    dom = (tmp_path / "dom.html").read_text()
    log = (tmp_path / "chromium.log").read_text()
    # The page's console (CORS refusals show there), else the log's end.
    chromium_log = "\n".join(line for line in log.splitlines() if ":CONSOLE" in line)[-3000:] or log[-2000:]
    assert 'data-done="1"' in dom, dom[-2000:] + chromium_log

    def result_of(mode: str) -> dict:
        m = re.search(rf'<pre id="{mode}">(.*?)</pre>', dom, re.S)
        assert m, f"no #{mode} in the DOM: {dom[-2000:]}"
        return json.loads(html.unescape(m.group(1)))

    for mode, content_type in (("text", "application/grpc-web-text+proto"), ("binary", "application/grpc-web+proto")):
        got = result_of(mode)
        assert "error" not in got, (mode, got, chromium_log)
        assert got["httpStatus"] == 200, got
        assert got["contentType"].split(";")[0].strip() == content_type, got
        assert (got["grpcStatus"], got["grpcMessage"]) == (0, ""), got
        assert got["messages"] == [{"requestId": f"browser-{mode}",
                                    "result": f"processed: hello from chromium ({mode})",
                                    "replicaId": "b1"}], got
    pages = (tmp_path / "page-server.log").read_text()
    assert "GET /index.html" in pages, pages


# --------------------------------------------------------------------------
# Flow control and the drain over HTTP/1.1


@pytest.mark.parametrize("text", [False, True])
def test_large_bodies_over_http1_pass_through_its_flow_control(web, text):
    """A 3 MiB request (4 MiB as base64) and its 3 MiB echo over HTTP/1.1
    pass whole; nothing stalls. (That the gateway stops reading a stalled
    call's body is test_http1_stops_reading_past_1_mib_the_upstream_has_not_taken.)"""
    pb = web.pb2
    request = pb.ProcessRequest(request_id="big", data="d", payload=bytes(range(256)) * (3 * 4096))
    resp = call_http1(web.port, PROCESS, [request.SerializeToString()], text=text, timeout=30)
    assert_ok(resp, text, "http1")
    reply = pb.ProcessResponse.FromString(resp.messages[0])
    assert reply.payload == request.payload


def test_http1_stops_reading_past_1_mib_the_upstream_has_not_taken(bins, mesh_pb2, tmp_path):
    """A 48 MiB gRPC-Web request over HTTP/1.1 to an upstream that takes
    nothing (no window credit beyond its first 64 KiB): the gateway stops
    reading the socket, so the client's writes block long before the end,
    the gateway's memory stays far below the body (it holds at most the
    call's 1 MiB window), and the upstream got no more than its window.
    When the upstream starts reading, the gateway reads again and the whole
    body arrives."""
    import http.client
    import select
    import socket
    from conftest import Launcher
    from grpc_web_client import BINARY, GrpcWebResponse, _BodyParser
    from slow_upstream import SlowReadingUpstream

    def echo_size(body: bytes) -> bytes:
        from meshkit import grpc_messages
        request = mesh_pb2.ProcessRequest.FromString(grpc_messages(body)[0])
        return mesh_pb2.ProcessResponse(request_id=request.request_id, result=str(len(request.payload))).SerializeToString()
    upstream = SlowReadingUpstream(echo_size)
    launcher = Launcher(bins, tmp_path)
    try:
        port = free_port()
        config = {"listeners": [{"name": "web", "address": addr(port), "grpc_web": True,
                                 "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "slow"}]}],
                  "clusters": [{"name": "slow", "endpoints": [{"address": addr(upstream.port)}]}]}
        gateway = launcher.gateway(to_yaml(config), port, name="gw-web-stall")
        request = mesh_pb2.ProcessRequest(request_id="stall", payload=b"p" * (48 << 20))
        body = encode_body([request.SerializeToString()], False)
        rss_before = rss_kib(gateway.proc.pid)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.connect(("127.0.0.1", port))
        sock.sendall((f"POST {PROCESS} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: {BINARY}\r\n"
                      f"x-grpc-web: 1\r\ncontent-length: {len(body)}\r\n\r\n").encode())
        sock.setblocking(False)
        sent = 0
        while sent < len(body):
            if not select.select([], [sock], [], 2.0)[1]:
                break  # no room for 2 s: nobody reads the socket
            try:
                sent += sock.send(body[sent:sent + 65536])
            except BlockingIOError:
                pass
        grown_kib = rss_kib(gateway.proc.pid) - rss_before
        # The call's 1 MiB window plus what the two sockets' kernel buffers
        # hold (measured: 2.4 MiB in all), far from the 48 MiB.
        assert sent < 8 << 20, f"the gateway read {sent >> 20} MiB of a call whose upstream took none"
        assert upstream.received <= 65535, upstream.received
        assert grown_kib < 8 * 1024, f"the gateway grew by {grown_kib >> 10} MiB"
        upstream.reading.set()
        sock.setblocking(True)
        sock.settimeout(30)
        sock.sendall(body[sent:])
        raw = http.client.HTTPResponse(sock)
        raw.begin()
        resp = GrpcWebResponse(raw.status, {k.lower(): v for k, v in raw.getheaders()}, False)
        parser = _BodyParser(resp)
        parser.feed(raw.read())
        resp = parser.finish()
        sock.close()
        assert resp.status == 0, resp
        reply = mesh_pb2.ProcessResponse.FromString(resp.messages[0])
        assert (reply.request_id, reply.result) == ("stall", str(48 << 20)), reply
        assert upstream.received == len(grpc_frame_of(request))
    finally:
        upstream.stop()
        launcher.stop_all()


def grpc_frame_of(message) -> bytes:
    from meshkit import grpc_frame
    return grpc_frame(message.SerializeToString())


def test_sigterm_lets_an_http1_stream_finish_then_exits(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """An HTTP/1.1 gRPC-Web stream in flight when the gateway gets SIGTERM
    runs to its end (the drain waits for HTTP/1.1 exchanges as for HTTP/2
    streams), then the gateway exits 0."""
    import signal
    import threading
    from conftest import Launcher
    launcher = Launcher(bins, tmp_path)
    try:
        replica = launcher.replica("d1")
        port = free_port()
        config = {"runtime": {"drain_timeout": "10s"},
                  "listeners": [{"name": "web", "address": addr(port), "grpc_web": True,
                                 "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
                  "clusters": [{"name": "mesh", "endpoints": [{"address": addr(replica.port)}]}]}
        gateway = launcher.gateway(to_yaml(config), port, name="gw-web-drain")
        result = {}
        request = mesh_pb2.StreamRequest(stream_id="drain", count=6, interval_ms=300)
        conn = Http1Connection(port, timeout=15)
        caller = threading.Thread(target=lambda: result.setdefault("resp", conn.call(STREAM, [request.SerializeToString()], text=True)))
        caller.start()
        # The stream is under way: the replica has started it (its 6 events
        # come 300 ms apart, so it is far from done).
        control = mesh_pb2_grpc.SampleControlStub(insecure_channel(replica.port))
        wait_until(lambda: control.GetStats(mesh_pb2.StatsRequest(), timeout=5).calls_by_method.get("StreamEvents", 0) == 1,
                   timeout=10, message="the stream to reach the replica")
        gateway.proc.send_signal(signal.SIGTERM)
        caller.join(15)
        conn.close()
        resp = result["resp"]
        assert_ok(resp, True, "http1")
        assert [mesh_pb2.Event.FromString(m).sequence for m in resp.messages] == list(range(6))
        assert gateway.proc.wait(15) == 0, gateway.proc.tail()
        assert '"msg":"draining"' in gateway.proc.log_text()
    finally:
        launcher.stop_all()


def test_idle_http1_connections_are_closed_at_the_idle_timeout(bins, mesh_pb2, tmp_path):
    """The listener's idle_timeout applies to HTTP/1.1 gRPC-Web connections
    as to HTTP/2 ones: after a call, a connection left silent for 1 s is
    closed, and so is one that never completes a request head."""
    import socket
    from conftest import Launcher
    launcher = Launcher(bins, tmp_path)
    try:
        replica = launcher.replica("i1")
        port = free_port()
        config = {"listeners": [{"name": "web", "address": addr(port), "grpc_web": True, "idle_timeout": "1s",
                                 "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
                  "clusters": [{"name": "mesh", "endpoints": [{"address": addr(replica.port)}]}]}
        launcher.gateway(to_yaml(config), port, name="gw-web-idle")
        conn = Http1Connection(port, timeout=5)
        resp = conn.call(PROCESS, [mesh_pb2.ProcessRequest(request_id="idle").SerializeToString()])
        assert_ok(resp, False, "http1")
        sock = conn.sock
        sock.settimeout(3)
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the gateway
        assert 0.7 <= time.monotonic() - started <= 2.5
        conn.close()
        partial = socket.create_connection(("127.0.0.1", port), timeout=3)
        partial.sendall(b"POST /mesh.v1.MeshService/Process HTTP/1.1\r\nhost: x\r\n")  # head never completed
        started = time.monotonic()
        assert partial.recv(1) == b""
        assert 0.7 <= time.monotonic() - started <= 2.5
        partial.close()
        # An answer given before the request's body ended (no route): the
        # rest of the body is awaited for the idle timeout, not forever.
        stalled = socket.create_connection(("127.0.0.1", port), timeout=3)
        stalled.sendall(b"POST /no.Such/Method HTTP/1.1\r\nhost: x\r\ncontent-type: application/grpc-web\r\n"
                        b"content-length: 100\r\n\r\n" + b"\x00" * 10)
        answer = stalled.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and b"grpc-status: 12" in answer, answer
        started = time.monotonic()
        while stalled.recv(4096):
            pass
        assert 0.7 <= time.monotonic() - started <= 2.5
        stalled.close()
        # The same for a request the HTTP/1.1 side refuses itself (not gRPC-Web: 415).
        refused = socket.create_connection(("127.0.0.1", port), timeout=3)
        refused.sendall(b"POST /a.B/C HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
        assert refused.recv(4096).startswith(b"HTTP/1.1 415")
        started = time.monotonic()
        while refused.recv(4096):
            pass
        assert 0.7 <= time.monotonic() - started <= 2.5
        refused.close()
    finally:
        launcher.stop_all()


# --------------------------------------------------------------------------
# An upstream's content-length


class ContentLengthUpstream(RawServer):
    """A raw HTTP/2 gRPC server (python-h2) whose answers carry a correct
    `content-length` for their gRPC body (7 bytes: one message "ok"), as
    some servers and proxies send."""

    def serve_connection(self, sock):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        body = b"\x00\x00\x00\x00\x02ok"
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    try:
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc"),
                                                            ("content-length", str(len(body)))])
                        conn.send_data(event.stream_id, body)
                        conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                    except h2.exceptions.StreamClosedError:
                        pass
            sock.sendall(conn.data_to_send())


def test_the_upstreams_content_length_is_not_passed_on(bins, tmp_path):
    """The upstream's content-length counts its gRPC body; the web body is
    longer (the trailer frame; base64 for text). The gateway drops it:
    over HTTP/1.1 the answer is chunked and ends with its status (a client
    trusting the length stopped before it), over HTTP/2 the client gets
    the whole stream (it refused a body longer than the length), and a
    second call on the same HTTP/1.1 connection is not confused by bytes
    left over from the first."""
    from conftest import Launcher
    upstream = ContentLengthUpstream()
    launcher = Launcher(bins, tmp_path)
    try:
        port = free_port()
        config = {"listeners": [{"name": "web", "address": addr(port), "grpc_web": True,
                                 "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "raw"}]}],
                  "clusters": [{"name": "raw", "endpoints": [{"address": addr(upstream.port)}]}]}
        launcher.gateway(to_yaml(config), port, name="gw-web-length")
        for transport, call in CALLS.items():
            for text in (False, True):
                resp = call(port, PROCESS, [b"request"], text=text, timeout=T)
                assert_ok(resp, text, transport)
                assert "content-length" not in resp.headers, (transport, text, resp.headers)
                assert resp.messages == [b"ok"], (transport, text, resp.messages)
        conn = Http1Connection(port)
        try:
            for text in (False, True, False):
                resp = conn.call(PROCESS, [b"request"], text=text)
                assert_ok(resp, text, "http1")
                assert resp.messages == [b"ok"], resp.messages
        finally:
            conn.close()
    finally:
        launcher.stop_all()
        upstream.stop()
