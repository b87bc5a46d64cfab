"""Tracing: the Tracing plugin's spans reach a real OTLP/HTTP receiver
(started here, decoding with the official opentelemetry-proto package),
a retried call shows as one server span with sibling client spans, the
upstream sees each attempt's own `traceparent`, and the access log lines
carry the same trace id."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from meshkit import HOST, RawServer, RecordingUpstream, free_port, insecure_channel, to_yaml, wait_until

PROCESS = "/mesh.v1.MeshService/Process"
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class OTLPReceiver:
    """POST /v1/traces with application/x-protobuf, as an OTel collector takes it."""

    def __init__(self):
        self.spans = []
        self.requests = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver.lock:
                    receiver.requests += 1
                    for resource_spans in request.resource_spans:
                        service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}.get("service.name")
                        for scope in resource_spans.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append((service, span))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer((HOST, self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1/traces"

    def trace(self, trace_id: str) -> list:
        with self.lock:
            return [s for _, s in self.spans if s.trace_id.hex() == trace_id]

    def stop(self):
        self.server.shutdown()


def attrs(span) -> dict:
    out = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind) if kind else None
    return out


@pytest.fixture
def receiver():
    r = OTLPReceiver()
    yield r
    r.stop()


def tracing_gateway(launcher, upstream_port: int, collector: str, ratio: float = 1.0, admin: int | None = None, **settings):
    port = free_port()
    filters = [
        {"plugin": "tracing", "config": {"collector": collector, "sampling_ratio": ratio, "flush_interval": "100ms",
                                         "service_name": "meshgate-test", **settings}},
        {"plugin": "retry", "config": {"max_attempts": 3, "initial_backoff": "5ms", "max_backoff": "10ms"}},
    ]
    doc = {"runtime": {"access_log": True},
           "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": filters}]}],
           "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{upstream_port}"}]}]}
    if admin is not None:
        doc["admin"] = {"address": f"{HOST}:{admin}"}
    return launcher.gateway(to_yaml(doc), port, name="gw-tracing")


def access_lines(gateway) -> list[dict]:
    lines = []
    for text in gateway.proc.log_text().splitlines():
        if text.startswith("{") and '"msg":"rpc"' in text:
            lines.append(json.loads(text))
    return lines


def test_retried_call_is_one_trace_with_sibling_attempts(launcher, receiver):
    def two_failures(n, body, context):
        if n <= 2:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {n} refused")
        return b""
    upstream = RecordingUpstream(two_failures)
    try:
        gateway = tracing_gateway(launcher, upstream.port, receiver.url)
        with insecure_channel(gateway.port) as channel:
            channel.unary_unary(PROCESS)(b"\x0a\x01x", timeout=10,
                                         metadata=[("traceparent", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"), ("tracestate", "vendor=1")])
        spans = wait_until(lambda: len(receiver.trace(CLIENT_TRACE)) == 4 and receiver.trace(CLIENT_TRACE), timeout=10,
                           message="1 server + 3 client spans at the receiver")
        server = [s for s in spans if s.kind == s.SPAN_KIND_SERVER]
        clients = sorted((s for s in spans if s.kind == s.SPAN_KIND_CLIENT), key=lambda s: attrs(s)["meshgate.attempt"])
        assert len(server) == 1 and len(clients) == 3, spans
        server = server[0]
        # The gateway's span continues the client's trace; the attempts are its children, siblings of each other.
        assert server.parent_span_id.hex() == CLIENT_SPAN
        assert all(c.parent_span_id == server.span_id for c in clients)
        assert len({c.span_id for c in clients} | {server.span_id}) == 4
        assert server.name == "mesh.v1.MeshService/Process" and server.trace_state == "vendor=1"
        a = attrs(server)
        assert a["rpc.system"] == "grpc" and a["rpc.service"] == "mesh.v1.MeshService" and a["rpc.method"] == "Process"
        assert a["rpc.grpc.status_code"] == 0 and a["meshgate.attempts"] == 3
        assert [attrs(c)["rpc.grpc.status_code"] for c in clients] == [14, 14, 0]
        assert [c.status.code for c in clients] == [2, 2, 0]  # ERROR, ERROR, UNSET
        assert attrs(clients[0])["server.address"] == HOST and attrs(clients[0])["server.port"] == upstream.port
        assert server.start_time_unix_nano <= clients[0].start_time_unix_nano
        assert clients[-1].end_time_unix_nano <= server.end_time_unix_nano

        # Each attempt arrived with its own span as parent, same trace, sampled.
        seen = [c[1]["traceparent"] for c in upstream.calls]
        assert seen == [f"00-{CLIENT_TRACE}-{c.span_id.hex()}-01" for c in clients], seen
        assert all(c[1].get("tracestate") == "vendor=1" for c in upstream.calls)

        # The access log line of the call names the same trace and the server span.
        line = wait_until(lambda: access_lines(gateway), timeout=5, message="the access log line")[-1]
        assert line["trace_id"] == CLIENT_TRACE and line["span_id"] == server.span_id.hex(), line
        assert line["status"] == "OK" and line["attempts"] == 3 and line["service"] == "mesh.v1.MeshService"
        assert line["upstream"] == f"{HOST}:{upstream.port}" and line["cluster"] == "mesh"
        # The line's duration is the call's, which the server span measures too.
        span_ms = (server.end_time_unix_nano - server.start_time_unix_nano) / 1e6
        assert 0 < line["duration_ms"] and abs(line["duration_ms"] - span_ms) < 50, (line["duration_ms"], span_ms)
    finally:
        upstream.stop()


def test_new_traces_and_sampling_ratio(launcher, receiver):
    """Without an incoming traceparent the gateway starts traces; with a
    ratio of 0 nothing is exported but context still propagates (flag 00)."""
    upstream = RecordingUpstream(lambda n, body, context: b"")
    try:
        sampled = tracing_gateway(launcher, upstream.port, receiver.url, ratio=1.0)
        with insecure_channel(sampled.port) as channel:
            for _ in range(5):
                channel.unary_unary(PROCESS)(b"", timeout=5)
        wait_until(lambda: len(receiver.spans) >= 10, timeout=10, message="10 spans of 5 new traces")
        with receiver.lock:
            traces = {s.trace_id.hex() for _, s in receiver.spans}
            services = {svc for svc, _ in receiver.spans}
        assert len(traces) == 5 and services == {"meshgate-test"}
        ids = [line["trace_id"] for line in access_lines(sampled)]
        assert set(ids) == traces

        before = len(receiver.spans)
        unsampled = tracing_gateway(launcher, upstream.port, receiver.url, ratio=0.0)
        with insecure_channel(unsampled.port) as channel:
            for _ in range(5):
                channel.unary_unary(PROCESS)(b"", timeout=5)
        time.sleep(0.5)
        assert len(receiver.spans) == before
        headers = [c[1]["traceparent"] for c in upstream.calls[-5:]]
        assert len(upstream.calls) == 10 and all(h.startswith("00-") and h.endswith("-00") for h in headers), headers
        lines = wait_until(lambda: len(access_lines(unsampled)) == 5 and access_lines(unsampled), timeout=5,
                           message="5 access log lines of the unsampled gateway")
        assert [line["trace_sampled"] for line in lines] == ["false"] * 5, lines
    finally:
        upstream.stop()


class SilentCollector:
    """A TCP listener on 127.0.0.1 that accepts connections and then never
    reads from them nor answers: a collector that hangs (a closed port
    would refuse at once and prove nothing about waiting)."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[float] = []
        self.held = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.append(time.monotonic())

    def stop(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_dead_collector_never_slows_calls(launcher):
    """A collector that accepts the connection and never answers: while the
    exporter is stuck on it (export_timeout 2 s), 50 calls each finish
    quickly; the export then fails at its timeout, is logged and counted."""
    upstream = RecordingUpstream(lambda n, body, context: b"")
    collector = SilentCollector()
    admin = free_port()
    try:
        gateway = tracing_gateway(launcher, upstream.port, f"http://{HOST}:{collector.port}/v1/traces",
                                  export_timeout="2s", admin=admin)
        with insecure_channel(gateway.port) as channel:
            channel.unary_unary(PROCESS)(b"", timeout=5)
            # The first batch (flush_interval 100 ms) is now waiting on the silent collector.
            wait_until(lambda: collector.accepted, timeout=5, message="the exporter to connect to the collector")
            stuck_since = collector.accepted[0]
            slowest = 0.0
            for _ in range(50):
                started = time.monotonic()
                channel.unary_unary(PROCESS)(b"", timeout=5)
                slowest = max(slowest, time.monotonic() - started)
            # Every call ran while the export was still waiting on the collector.
            assert time.monotonic() - stuck_since < 2.0, "the calls did not overlap the stuck export"
            assert "OTLP export" not in gateway.proc.log_text()
            assert slowest < 0.5, f"a call took {slowest:.3f}s while the collector hung"
        wait_until(lambda: "OTLP export" in gateway.proc.log_text(), timeout=10, message="the export failure to be logged")
        # It failed at its export timeout, not before: the collector hung, it did not refuse.
        assert time.monotonic() - stuck_since >= 1.9
        failed = lambda: sum(float(line.rsplit(" ", 1)[1]) for line in
                             urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=5).read().decode().splitlines()
                             if line.startswith("meshgate_tracing_spans_failed_total"))
        assert wait_until(failed, timeout=5, message="meshgate_tracing_spans_failed_total to count the lost spans") >= 2
    finally:
        collector.stop()
        upstream.stop()


def test_the_clients_sampling_flag_can_be_overruled(launcher, receiver):
    """`trust_client_sampling: false`: the client's trace is continued
    (same trace id, its span as the parent) but the gateway decides on
    sampling itself: with a ratio of 0 a client asking for sampling (-01)
    is not traced or exported and the upstream gets -00; with a ratio of 1
    a client asking not to be (-00) is traced, exported and passed -01.
    The default follows the client, as OpenTelemetry's parent-based
    sampler does."""
    upstream = RecordingUpstream(lambda n, body, context: b"")
    asked = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    declined = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
    try:
        never = tracing_gateway(launcher, upstream.port, receiver.url, ratio=0.0, trust_client_sampling=False)
        with insecure_channel(never.port) as channel:
            for _ in range(3):
                channel.unary_unary(PROCESS)(b"", timeout=5, metadata=[("traceparent", asked)])
        seen = [c[1]["traceparent"] for c in upstream.calls[-3:]]
        assert len(upstream.calls) == 3 and all(h.startswith(f"00-{CLIENT_TRACE}-") and h.endswith("-00") for h in seen), seen
        lines = wait_until(lambda: len(access_lines(never)) == 3 and access_lines(never), timeout=5,
                           message="3 access log lines of the gateway that never samples")
        assert [(line["trace_sampled"], line["trace_id"]) for line in lines] == [("false", CLIENT_TRACE)] * 3, lines
        time.sleep(0.5)
        assert receiver.trace(CLIENT_TRACE) == [], receiver.trace(CLIENT_TRACE)

        always = tracing_gateway(launcher, upstream.port, receiver.url, ratio=1.0, trust_client_sampling=False)
        with insecure_channel(always.port) as channel:
            channel.unary_unary(PROCESS)(b"", timeout=5, metadata=[("traceparent", declined)])
        assert upstream.calls[-1][1]["traceparent"].endswith("-01"), upstream.calls[-1][1]
        spans = wait_until(lambda: len(receiver.trace(CLIENT_TRACE)) == 2 and receiver.trace(CLIENT_TRACE), timeout=10,
                           message="the server and client span of the overruled call")
        server = next(s for s in spans if s.kind == s.SPAN_KIND_SERVER)
        assert server.parent_span_id.hex() == CLIENT_SPAN

        trusting = tracing_gateway(launcher, upstream.port, receiver.url, ratio=0.0)
        with insecure_channel(trusting.port) as channel:
            channel.unary_unary(PROCESS)(b"", timeout=5, metadata=[("traceparent", asked)])
        assert upstream.calls[-1][1]["traceparent"].endswith("-01"), upstream.calls[-1][1]
    finally:
        upstream.stop()


class HeaderRecordingUpstream(RawServer):
    """A raw HTTP/2 gRPC server (python-h2) that keeps each request head as
    decoded, field by field with its HPACK representation (hpack's
    NeverIndexedHeaderTuple for a field sent "never indexed"), and answers
    an empty message with grpc-status 0."""

    def __init__(self):
        self.heads: list[list] = []
        super().__init__()

    def serve_connection(self, sock):
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    self.heads.append(list(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                    conn.send_data(event.stream_id, b"\x00\x00\x00\x00\x00")
                    conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
            sock.sendall(conn.data_to_send())


def test_per_request_fields_stay_out_of_the_hpack_table(launcher):
    """traceparent (new for every call) and grpc-timeout (a deadline) reach
    the upstream as literals never indexed: in HPACK's dynamic table they
    would push out the fields that repeat. Those repeating fields are still
    indexed, and sent as one-byte references from the second call on."""
    from hpack import NeverIndexedHeaderTuple
    upstream = HeaderRecordingUpstream()
    try:
        gateway = tracing_gateway(launcher, upstream.port, f"http://{HOST}:9/v1/traces", ratio=0.0)
        with insecure_channel(gateway.port) as channel:
            for _ in range(3):
                channel.unary_unary(PROCESS)(b"", timeout=5)
        assert len(upstream.heads) == 3, upstream.heads
        for head in upstream.heads:
            kinds = {str(name): isinstance(field, NeverIndexedHeaderTuple) for field in head for name in [field[0]]}
            assert kinds.get("traceparent") is True, kinds
            assert kinds.get("grpc-timeout") is True, kinds
            assert kinds.get("content-type") is False and kinds.get("te") is False, kinds
        # Three different trace ids: the policy is not hiding a repeated value.
        assert len({dict(head)["traceparent"] for head in upstream.heads}) == 3
    finally:
        upstream.stop()
