"""End-to-end HTTP/2 flow control through the gateway, seen from a raw
HTTP/2 client (the `h2` package) that controls its own receive window."""

from __future__ import annotations

import socket
import time

import grpc

from meshkit import HOST, free_port, gateway_config, grpc_frame, wait_until
from slow_upstream import SlowReadingUpstream, collect_metrics

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_unread_stream_is_backpressured_not_buffered(mesh):
    """A client asks for a 64 MiB server stream and never opens its window
    past the initial 64 KiB. The gateway must stall the upstream instead of
    buffering the stream: its memory grows by far less than 64 MiB, and the
    client receives no more than its window. When the client goes away the
    upstream call is cancelled."""
    import h2.config
    import h2.connection
    import h2.events

    pb = mesh.pb2
    gateway_pid = mesh.gateway.proc.pid
    rss_before = rss_bytes(gateway_pid)
    cancelled_before = mesh.total("cancelled")

    request = pb.StreamRequest(stream_id="unread", count=1024, payload_size=64 * 1024)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    received = 0
    sock = socket.create_connection((HOST, mesh.port), timeout=5)
    try:
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [
            (":method", "POST"), (":scheme", "http"), (":authority", f"{HOST}:{mesh.port}"),
            (":path", "/mesh.v1.MeshService/StreamEvents"),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ])
        conn.send_data(stream_id, grpc_frame(request.SerializeToString()), end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(1 << 20)
            except socket.timeout:
                continue
            assert chunk, "the gateway closed the connection"
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.DataReceived):
                    received += event.flow_controlled_length  # never acknowledged
                assert not isinstance(event, h2.events.StreamReset), event
            pending = conn.data_to_send()
            if pending:
                sock.sendall(pending)
        grown = rss_bytes(gateway_pid) - rss_before
        assert 0 < received <= 65535, received
        assert grown < 24 * MiB, f"gateway memory grew by {grown / MiB:.1f} MiB for an unread stream"
    finally:
        sock.close()

    deadline = time.monotonic() + 5
    while mesh.total("cancelled") <= cancelled_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mesh.total("cancelled") > cancelled_before, "the upstream stream was not cancelled"

    # The gateway is still healthy for everybody else.
    with grpc.insecure_channel(f"{HOST}:{mesh.port}") as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        assert stub.Process(pb.ProcessRequest(request_id="after", data="x"), timeout=5).result == "processed: x"


def test_slow_upload_is_backpressured(mesh, launcher):
    """A client-streaming upload far larger than every window (32 MiB of
    metrics) to an upstream that reads nothing at first: the client can
    send only what the windows hold (the gateway's 1 MiB stream window and
    the upstream's 64 KiB; docs/limits.md) and then waits; the gateway
    holds no more than that. When the upstream starts reading, the upload
    completes intact: the gateway forwards it as the upstream reads,
    without a stall or a loss."""
    import threading
    pb = mesh.pb2
    count = 32 * 1024
    upstream = SlowReadingUpstream(lambda body: collect_metrics(pb, body))
    port = free_port()
    gateway = launcher.gateway(gateway_config(port, clusters={"slow": [upstream.port]},
                                              routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "slow"}]),
                               port, name="gw-slow-upload")
    yielded = [0]  # bytes handed to grpcio, gRPC framing included
    value_sum = 0.0

    def metrics():
        nonlocal value_sum
        for i in range(count):
            value_sum += i
            metric = pb.Metric(metric_name="m" * 1000, value=float(i))
            yielded[0] += 5 + metric.ByteSize()
            yield metric

    result: dict = {}
    try:
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)
            rss_before = rss_bytes(gateway.proc.pid)
            caller = threading.Thread(target=lambda: result.setdefault("summary", stub.CollectMetrics(metrics(), timeout=60)),
                                      daemon=True)
            caller.start()
            # The client is held back: what it has handed over stops growing.
            wait_until(lambda: upstream.received >= 60 * 1024, timeout=10, message="the upstream's window filled")
            stable = 0
            previous = -1
            deadline = time.monotonic() + 10
            while stable < 10:  # unchanged for 10 polls of 0.1 s
                assert time.monotonic() < deadline, f"the client kept sending: {yielded[0]} bytes"
                stable = stable + 1 if yielded[0] == previous else 0
                previous = yielded[0]
                time.sleep(0.1)
            held_back = yielded[0]
            # The gateway's 1 MiB stream window (the upstream's 64 KiB come
            # out of it: no credit goes back until the upstream takes bytes)
            # and the message grpcio is writing; measured: 1 MiB + 959 bytes.
            assert held_back < 1 * MiB + 64 * 1024, f"the client handed over {held_back} bytes to a stalled upstream"
            assert upstream.received <= 65535, upstream.received
            grown = rss_bytes(gateway.proc.pid) - rss_before
            assert grown < 8 * MiB, f"gateway memory grew by {grown / MiB:.1f} MiB"
            upstream.reading.set()
            caller.join(timeout=60)
        summary = result["summary"]
        assert (summary.count, summary.sum, summary.replica_id) == (count, value_sum, "slow")
        assert upstream.received == yielded[0]
    finally:
        upstream.stop()
