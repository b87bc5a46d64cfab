"""gRPC through the gateway with grpcio: the four call patterns, load
balancing, large messages, concurrency, statuses, cancellation, deadlines,
routing misses, dead upstreams, flow control and graceful shutdown."""

from __future__ import annotations

import collections
import os
import signal
import time

import grpc
import pytest

from meshkit import (
    free_port,
    gateway_config,
    grpc_frame,
    grpc_messages,
    h2_request,
    insecure_channel,
    parse_grpc_timeout,
    port_accepts,
    wait_until,
)

REPLICAS = {"r1", "r2", "r3"}
T = 10.0  # default per-call timeout, seconds
MiB = 1024 * 1024


def rpc_error(fn, *args, **kwargs) -> grpc.RpcError:
    """Runs a call that must fail and returns its RpcError."""
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------
# The four patterns


def test_unary_round_robin_over_replicas(mesh, stub):
    """30 sequential unary calls are answered correctly, and round robin over
    three equal endpoints sends exactly 10 to each replica."""
    pb = mesh.pb2
    seen = collections.Counter()
    for i in range(30):
        response, call = stub.Process.with_call(
            pb.ProcessRequest(request_id=f"rr-{i}", data=f"d{i}"), timeout=T)
        assert response.request_id == f"rr-{i}"
        assert response.result == f"processed: d{i}"
        assert response.replica_id in REPLICAS
        assert ("x-mesh-replica", response.replica_id) in call.initial_metadata()
        seen[response.replica_id] += 1
    assert seen == {"r1": 10, "r2": 10, "r3": 10}


def test_server_streaming(mesh, stub):
    """StreamEvents yields `count` events with cycling types, in order, from one
    replica per call; three calls land on three different replicas."""
    pb = mesh.pb2
    replicas = set()
    for n in range(3):
        request = pb.StreamRequest(stream_id=f"s{n}", event_types=["a", "b", "c"],
                                   count=7, payload_size=16)
        events = list(stub.StreamEvents(request, timeout=T))
        assert [e.sequence for e in events] == list(range(7))
        assert [e.event_type for e in events] == ["a", "b", "c", "a", "b", "c", "a"]
        assert all(len(e.payload) == 16 for e in events)
        assert all(e.stream_id == f"s{n}" for e in events)
        call_replicas = {e.replica_id for e in events}
        assert len(call_replicas) == 1 and call_replicas <= REPLICAS
        replicas |= call_replicas
    assert replicas == REPLICAS


def test_server_streaming_defaults(mesh, stub):
    """An empty StreamRequest gives the documented defaults: 10 events of type
    "event"."""
    events = list(stub.StreamEvents(mesh.pb2.StreamRequest(), timeout=T))
    assert [e.sequence for e in events] == list(range(10))
    assert {e.event_type for e in events} == {"event"}


def test_client_streaming_100_messages(mesh, stub):
    """CollectMetrics over 100 streamed metrics returns the right count, sum and
    average; three calls land on three different replicas."""
    pb = mesh.pb2
    replicas = set()
    for _ in range(3):
        metrics = (pb.Metric(metric_name="latency", value=float(v)) for v in range(1, 101))
        summary = stub.CollectMetrics(metrics, timeout=T)
        assert summary.count == 100
        assert summary.sum == pytest.approx(5050.0)
        assert summary.average == pytest.approx(50.5)
        replicas.add(summary.replica_id)
    assert replicas == REPLICAS


def test_bidi_streaming_100_messages(mesh, stub):
    """Chat answers each of 100 messages once, in order, from one replica; three
    calls land on three different replicas."""
    pb = mesh.pb2
    replicas = set()
    for n in range(3):
        outgoing = (pb.ChatMessage(user_id=f"u{n}", message=f"m{i}", sequence=i)
                    for i in range(100))
        replies = list(stub.Chat(outgoing, timeout=T))
        assert [r.message for r in replies] == [f"echo: m{i}" for i in range(100)]
        assert [r.sequence for r in replies] == list(range(100))
        assert {r.user_id for r in replies} == {f"u{n}"}
        call_replicas = {r.replica_id for r in replies}
        assert len(call_replicas) == 1
        replicas |= call_replicas
    assert replicas == REPLICAS


# --------------------------------------------------------------------------
# Size and concurrency


def test_4mib_unary_payload_echoed(mesh, stub):
    """A 4 MiB request payload crosses the gateway both ways unchanged."""
    payload = os.urandom(4 * MiB)
    response = stub.Process(mesh.pb2.ProcessRequest(request_id="big", data="x", payload=payload),
                            timeout=30)
    assert response.request_id == "big"
    assert len(response.payload) == len(payload)
    assert response.payload == payload


def test_4mib_server_stream_events(mesh, stub):
    """Server-streamed events of 4 MiB each arrive whole."""
    request = mesh.pb2.StreamRequest(stream_id="big", count=2, payload_size=4 * MiB)
    events = list(stub.StreamEvents(request, timeout=30))
    assert [e.sequence for e in events] == [0, 1]
    assert all(len(e.payload) == 4 * MiB for e in events)


def test_1000_concurrent_unary_calls(mesh, stub):
    """1,000 unary calls in flight at once on one channel all succeed with their
    own answers, spread over all replicas."""
    pb = mesh.pb2
    futures = [stub.Process.future(pb.ProcessRequest(request_id=str(i), data=f"c{i}"),
                                   timeout=60)
               for i in range(1000)]
    per_replica = collections.Counter()
    for i, future in enumerate(futures):
        response = future.result()  # bounded by the call's own 60 s timeout
        assert future.code() == grpc.StatusCode.OK
        assert response.request_id == str(i)
        assert response.result == f"processed: c{i}"
        per_replica[response.replica_id] += 1
    assert set(per_replica) == REPLICAS
    assert sum(per_replica.values()) == 1000


# --------------------------------------------------------------------------
# Metadata and statuses


def test_ok_status_and_initial_metadata_relayed(mesh, stub):
    """A unary and a streaming call end with status OK, and the replica's
    initial metadata (x-mesh-replica) reaches the client."""
    pb = mesh.pb2
    response, call = stub.Process.with_call(pb.ProcessRequest(request_id="t", data="t"),
                                            timeout=T)
    assert call.code() == grpc.StatusCode.OK
    assert dict(call.initial_metadata()).get("x-mesh-replica") == response.replica_id

    stream = stub.StreamEvents(pb.StreamRequest(count=3), timeout=T)
    events = list(stream)
    assert len(events) == 3
    assert stream.code() == grpc.StatusCode.OK
    assert dict(stream.initial_metadata()).get("x-mesh-replica") == events[0].replica_id


def test_trailers_only_error_relayed(mesh, stub):
    """An upstream Trailers-Only error (PERMISSION_DENIED) reaches the client with
    its code and message."""
    error = rpc_error(stub.Process, mesh.pb2.ProcessRequest(request_id="e", data="e"),
                      metadata=[("x-mesh-fail-code", "7")], timeout=T)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "injected" in (error.details() or "")


def test_unknown_method_on_routed_service_is_unimplemented(mesh, gateway_channel):
    """A method the upstream service does not have comes back UNIMPLEMENTED."""
    pb = mesh.pb2
    method = gateway_channel.unary_unary(
        "/mesh.v1.MeshService/NoSuchMethod",
        request_serializer=pb.ProcessRequest.SerializeToString,
        response_deserializer=pb.ProcessResponse.FromString)
    error = rpc_error(method, pb.ProcessRequest(request_id="u"), timeout=T)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("path", ["/mesh.v1.NoSuchService/Process",
                                  "/mesh.v1.SampleControl/GetStats"])
def test_unrouted_service_is_unimplemented(mesh, gateway_channel, path):
    """A service no route matches gets UNIMPLEMENTED from the gateway itself
    (SampleControl exists on the replicas but is not routed)."""
    pb = mesh.pb2
    method = gateway_channel.unary_unary(
        path, request_serializer=pb.StatsRequest.SerializeToString,
        response_deserializer=pb.Stats.FromString)
    error = rpc_error(method, pb.StatsRequest(), timeout=T)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


def test_all_endpoints_down_is_unavailable_quickly(mesh, launcher):
    """A cluster whose endpoints are all closed ports yields UNAVAILABLE in
    well under 5 s."""
    port = free_port()
    dead = [free_port(), free_port()]  # nobody listens on these
    config = gateway_config(port, clusters={"dead": dead},
                            routes=[{"match": {"service": "mesh.v1.MeshService"},
                                     "cluster": "dead"}])
    launcher.gateway(config, port, name="gw-dead")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        started = time.monotonic()
        error = rpc_error(stub.Process, mesh.pb2.ProcessRequest(request_id="d"), timeout=T)
        elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert elapsed < 5.0


# --------------------------------------------------------------------------
# Cancellation and deadlines


def test_client_cancel_reaches_upstream(mesh, gateway_channel):
    """Cancelling a server stream mid-way resets the upstream call: a replica
    counts one more cancelled call within 5 s."""
    pb = mesh.pb2
    baseline = mesh.total("cancelled")
    stub = mesh.pb2_grpc.MeshServiceStub(gateway_channel)
    call = stub.StreamEvents(pb.StreamRequest(stream_id="cancel", count=1000, interval_ms=50),
                             timeout=120)
    first, second = next(call), next(call)
    assert (first.sequence, second.sequence) == (0, 1)
    call.cancel()
    assert call.code() == grpc.StatusCode.CANCELLED
    mesh.wait_total_above("cancelled", baseline, timeout=5.0)


def test_deadline_exceeded_and_upstream_cancelled(mesh, stub):
    """A 0.3 s deadline on a call the replica delays by 2 s ends in
    DEADLINE_EXCEEDED at about 0.3 s, and the replica sees the call reset."""
    baseline = mesh.total("cancelled")
    started = time.monotonic()
    error = rpc_error(stub.Process, mesh.pb2.ProcessRequest(request_id="dl", data="x"),
                      metadata=[("x-mesh-delay-ms", "2000")], timeout=0.3)
    elapsed = time.monotonic() - started
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.25 <= elapsed < 1.0
    mesh.wait_total_above("cancelled", baseline, timeout=5.0)


def _process_without_deadline(stub, request, metadata, bound_s=10.0):
    """A unary call that sends no grpc-timeout; the test still waits at most
    `bound_s` for it. Returns (future, seconds taken)."""
    started = time.monotonic()
    future = stub.Process.future(request, metadata=metadata)
    try:
        future.result(timeout=bound_s)
    except grpc.FutureTimeoutError:
        future.cancel()
        pytest.fail(f"call without deadline still running after {bound_s}s")
    except grpc.RpcError:
        pass
    return future, time.monotonic() - started


def test_route_default_timeout(mesh, stub):
    """The first route (x-route-timeout: short) gives calls without a client
    deadline a 200 ms deadline: a 1 s delayed call fails DEADLINE_EXCEEDED
    quickly, while the same call on the plain route succeeds."""
    pb = mesh.pb2
    short = [("x-route-timeout", "short"), ("x-mesh-delay-ms", "1000")]
    future, elapsed = _process_without_deadline(stub, pb.ProcessRequest(request_id="rt"), short)
    assert future.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.15 <= elapsed < 0.9

    plain = [("x-mesh-delay-ms", "1000")]
    future, elapsed = _process_without_deadline(stub, pb.ProcessRequest(request_id="rt2"), plain)
    assert future.code() == grpc.StatusCode.OK
    assert elapsed >= 0.9


def test_route_default_timeout_yields_to_client_deadline(mesh, stub):
    """A client deadline replaces the route's default: a 1 s delayed call with a
    5 s client deadline succeeds on the 200 ms route."""
    metadata = [("x-route-timeout", "short"), ("x-mesh-delay-ms", "1000")]
    response = stub.Process(mesh.pb2.ProcessRequest(request_id="rt3", data="y"),
                            metadata=metadata, timeout=5)
    assert response.result == "processed: y"


def test_route_default_timeout_sent_upstream(mesh, stub):
    """The route's 200 ms default deadline is passed upstream as grpc-timeout."""
    metadata = [("x-route-timeout", "short"), ("x-mesh-echo-headers", "1")]
    future, _ = _process_without_deadline(stub, mesh.pb2.ProcessRequest(request_id="rt4"),
                                          metadata)
    assert future.code() == grpc.StatusCode.OK
    headers = future.result().request_headers
    assert "grpc-timeout" in headers
    assert 0 < parse_grpc_timeout(headers["grpc-timeout"]) <= 200_000_000


def test_grpc_timeout_rewritten_for_upstream(mesh, stub):
    """With a grpcio client and a 10 s deadline, the upstream's grpc-timeout is
    just under the client's: more than 9 s, and at most 10 s plus the 1%
    grpc-core may add when it encodes the deadline (it sends e.g. `10100m`)."""
    response = stub.Process(mesh.pb2.ProcessRequest(request_id="gt"),
                            metadata=[("x-mesh-echo-headers", "1")], timeout=10)
    value = response.request_headers.get("grpc-timeout")
    assert value, f"upstream saw no grpc-timeout; headers: {dict(response.request_headers)}"
    assert 9_000_000_000 < parse_grpc_timeout(value) <= 10_100_000_000


@pytest.mark.parametrize("sent, sent_ns, max_loss_ns", [
    ("1H", 3_600_000_000_000, 1_000_000_000), ("2M", 120_000_000_000, 1_000_000_000),
    ("10S", 10_000_000_000, 1_000_000_000), ("10000m", 10_000_000_000, 1_000_000_000),
    ("10000000u", 10_000_000_000, 1_000_000_000), ("99999999n", 99_999_999, 99_999_999),
])
def test_grpc_timeout_rewritten_exactly(mesh, sent, sent_ns, max_loss_ns):
    """A raw HTTP/2 request with an exact grpc-timeout in each unit (H M S m u n):
    the upstream sees the remaining time, never more than the client sent and
    less than `max_loss_ns` below it. (What each sent value means is written
    out here, so the helper that reads the upstream's value is checked by
    the gateway's own answers, not by a test of its own.)"""
    assert parse_grpc_timeout(sent) == sent_ns
    request = mesh.pb2.ProcessRequest(request_id="raw", data="t")
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", mesh.address),
               (":path", "/mesh.v1.MeshService/Process"),
               ("content-type", "application/grpc"), ("te", "trailers"),
               ("grpc-timeout", sent), ("x-mesh-echo-headers", "1")]
    reply = h2_request(mesh.port, headers, grpc_frame(request.SerializeToString()), timeout=10)
    assert reply.header("grpc-status") == "0", reply.blocks
    messages = grpc_messages(reply.data)
    assert len(messages) == 1
    seen = mesh.pb2.ProcessResponse.FromString(messages[0]).request_headers.get("grpc-timeout")
    assert seen, "the upstream got no grpc-timeout"
    assert sent_ns - max_loss_ns < parse_grpc_timeout(seen) <= sent_ns, (sent, seen)


# --------------------------------------------------------------------------
# Flow control and shutdown


def test_slow_reader_gets_every_event(mesh, stub):
    """200 events of 64 KiB (12.5 MiB, far above the HTTP/2 windows) read by a
    client that stalls 0.5 s after the first one all arrive, in order, whole."""
    request = mesh.pb2.StreamRequest(stream_id="slow", count=200, payload_size=64 * 1024)
    call = stub.StreamEvents(request, timeout=60)
    events = [next(call)]
    time.sleep(0.5)
    events.extend(call)
    assert call.code() == grpc.StatusCode.OK
    assert [e.sequence for e in events] == list(range(200))
    assert all(len(e.payload) == 64 * 1024 for e in events)
    assert len({e.replica_id for e in events}) == 1


def test_sigterm_drains_in_flight_calls(mesh, launcher):
    """On SIGTERM a gateway stops accepting connections, lets a 1.5 s call in
    flight finish with OK, and exits 0 within drain_timeout + 5 s."""
    pb = mesh.pb2
    drain_timeout_s = 5
    port = free_port()
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                            routes=[{"match": {"service": "mesh.v1.MeshService"},
                                     "cluster": "mesh"}],
                            drain_timeout=f"{drain_timeout_s}s")
    gateway = launcher.gateway(config, port, name="gw-drain")

    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        stub.Process(pb.ProcessRequest(request_id="warm"), timeout=T)  # connection is up
        calls_before = mesh.total("calls")
        future = stub.Process.future(pb.ProcessRequest(request_id="drain", data="late"),
                                     metadata=[("x-mesh-delay-ms", "1500")], timeout=15)
        mesh.wait_total_above("calls", calls_before, timeout=5.0)  # it reached a replica

        gateway.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: not port_accepts(port), timeout=1.0,
                   message="the gateway to refuse new connections after SIGTERM")
        assert not future.done(), "the listener should close before the drain ends"

        response = future.result(timeout=15)
        assert future.code() == grpc.StatusCode.OK
        assert response.result == "processed: late"

    assert gateway.proc.wait(timeout=drain_timeout_s + 5) == 0
    assert not port_accepts(port)


def test_a_reloaded_drain_timeout_applies_to_the_drain(mesh, launcher):
    """drain_timeout is read from the generation current at SIGTERM: started
    with 30 s and reloaded (SIGHUP) to 1 s, the gateway cuts a 20 s call
    after about 1 s of drain and exits, instead of waiting for it. (Before
    one owner held the generations, the drain used the first config's
    value while the reload reported success.)"""
    pb = mesh.pb2
    port = free_port()
    routes = [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]
    replicas = [r.port for r in mesh.replicas.values()]
    gateway = launcher.gateway(gateway_config(port, clusters={"mesh": replicas}, routes=routes, drain_timeout="30s"),
                               port, name="gw-redrain")
    gateway.config_path.write_text(gateway_config(port, clusters={"mesh": replicas}, routes=routes, drain_timeout="1s"))
    gateway.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "generation 2 loaded" in gateway.proc.log_text(), timeout=5, message="the reload")

    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        calls_before = mesh.total("calls")
        future = stub.Process.future(pb.ProcessRequest(request_id="long", data="x"),
                                     metadata=[("x-mesh-delay-ms", "20000")], timeout=30)
        mesh.wait_total_above("calls", calls_before, timeout=5.0)
        started = time.monotonic()
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(timeout=10) == 0
        took = time.monotonic() - started
        # 0.8 s of health and watch grace, the 1 s drain, then the close.
        assert took < 5, f"the drain took {took:.1f} s: the reloaded 1 s drain_timeout was not used"
        with pytest.raises(grpc.RpcError) as cut:
            future.result(timeout=5)
        assert cut.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL)
    draining = [line for line in gateway.proc.log_text().splitlines() if '"msg":"draining"' in line]
    assert draining and '"drain_timeout_ms":"1000"' in draining[0], draining


def test_idle_connections_are_closed_after_the_listener_idle_timeout(mesh, launcher):
    """Listener `idle_timeout` 500 ms: a call that runs longer than that is
    not cut (its connection has a stream); once the connection has no stream
    for 500 ms the gateway sends GOAWAY and closes it, and the client's next
    call simply opens a new connection."""
    pb = mesh.pb2
    port = free_port()
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                            routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}])
    config = config.replace(f"address: 127.0.0.1:{port}\n", f"address: 127.0.0.1:{port}\n    idle_timeout: 500ms\n", 1)
    assert "idle_timeout: 500ms" in config
    gw = launcher.gateway(config, port, name="gw-idle")

    def idle_closes() -> int:
        return gw.proc.log_text().count('"msg":"downstream connection idle: closing"')
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        reply = stub.Process(pb.ProcessRequest(request_id="slow", data="s"), metadata=[("x-mesh-delay-ms", "1200")], timeout=T)
        assert reply.result == "processed: s"
        assert idle_closes() == 0
        wait_until(idle_closes, timeout=5, message="the idle connection to be closed")
        assert stub.Process(pb.ProcessRequest(request_id="after", data="a"), timeout=T).result == "processed: a"
    # A connection that never sends a byte is idle from its accept.
    import socket
    silent = socket.create_connection(("127.0.0.1", port), timeout=5)
    started = time.monotonic()
    assert silent.recv(1) == b""
    assert 0.3 <= time.monotonic() - started <= 3, time.monotonic() - started
    silent.close()


def test_listener_keepalive_closes_a_client_that_stopped_answering(mesh, launcher):
    """Listener `keepalive` (PING every 200 ms, 300 ms for the ACK): a raw
    HTTP/2 client starts a 5 s call and then never reads again, like a client
    whose host froze. Its TCP connection stays up, but no PING ACK comes, so
    the gateway closes the connection within a second and the upstream call
    is cancelled instead of running on. A grpcio client on the same listener,
    which answers PINGs, keeps a 1.5 s call."""
    import socket
    import h2.config
    import h2.connection
    from meshkit import to_yaml
    pb = mesh.pb2
    replica = mesh.replicas["r1"]
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"127.0.0.1:{port}", "keepalive": {"interval": "200ms", "timeout": "300ms"},
                          "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
           "clusters": [{"name": "mesh", "endpoints": [{"address": f"127.0.0.1:{replica.port}"}]}]}
    gw = launcher.gateway(to_yaml(doc), port, name="gw-client-keepalive")

    with insecure_channel(port) as channel:
        reply = mesh.pb2_grpc.MeshServiceStub(channel).Process(
            pb.ProcessRequest(request_id="kept", data="k"), metadata=[("x-mesh-delay-ms", "1500")], timeout=T)
        assert reply.result == "processed: k"
    assert "downstream keepalive timed out" not in gw.proc.log_text()

    def cancelled() -> int:
        return mesh.control("r1").GetStats(pb.StatsRequest(), timeout=5).cancelled
    before = cancelled()
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        stream = conn.get_next_available_stream_id()
        conn.send_headers(stream, [(":method", "POST"), (":scheme", "http"), (":path", "/mesh.v1.MeshService/Process"),
                                   (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"), ("te", "trailers"),
                                   ("x-mesh-delay-ms", "5000")])
        conn.send_data(stream, grpc_frame(pb.ProcessRequest(request_id="frozen").SerializeToString()), end_stream=True)
        sock.sendall(conn.data_to_send())
        started = time.monotonic()
        wait_until(lambda: "downstream keepalive timed out" in gw.proc.log_text(), timeout=5,
                   message="the gateway to give up on the silent client")
        assert time.monotonic() - started < 3
        wait_until(lambda: cancelled() > before, timeout=5, message="the upstream call to be cancelled")
