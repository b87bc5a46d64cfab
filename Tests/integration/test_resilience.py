"""Resilience plugins through real traffic: Retry (gRFC A6, with backoff and
replay measured at a real upstream), Hedge, the circuit breaker and outlier
detection, against the sample replicas driven by their fault knobs and
against a grpcio upstream that records what it receives."""

from __future__ import annotations

import hashlib
import socket
import statistics
import subprocess
import threading
import time
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from meshkit import RawServer, RecordingUpstream, free_port, gateway_config, insecure_channel, to_yaml, wait_until

PROCESS = "/mesh.v1.MeshService/Process"
COLLECT = "/mesh.v1.MeshService/CollectMetrics"


def start_gateway(launcher, ports, filters, name, timeout=None, **route_fields):
    port = free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": filters, **route_fields}
    if timeout:
        route["timeout"] = timeout
    launcher.gateway(gateway_config(port, clusters={"mesh": ports}, routes=[route]), port, name=name)
    return port


def replica_calls(mesh, rid):
    return mesh.control(rid).GetStats(mesh.pb2.StatsRequest(), timeout=5).calls


def run_calls(stub, pb, n, metadata=(), workers=16):
    """n unary calls over `workers` threads: (ok count, failures by code)."""
    def one(i):
        try:
            stub.Process(pb.ProcessRequest(request_id=str(i)), timeout=10, metadata=metadata)
            return None
        except grpc.RpcError as error:
            return error.code()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(n)))
    failures = [r for r in results if r is not None]
    return n - len(failures), failures


# --------------------------------------------------------------------------
# Retry


def test_retry_masks_a_replica_failing_half_its_calls(mesh, launcher):
    """r1 fails UNAVAILABLE on 50% of its calls. Without Retry about half of
    r1's share of 2,000 calls fail; with Retry (the retry goes to another
    replica) at least 99.9% succeed."""
    pb = mesh.pb2
    ports = [r.port for r in mesh.replicas.values()]
    plain = start_gateway(launcher, ports, [], "gw-noretry")
    retried = start_gateway(launcher, ports, [{"plugin": "retry", "config": {
        "max_attempts": 3, "initial_backoff": "5ms", "max_backoff": "50ms",
        "retryable_status_codes": ["UNAVAILABLE"]}}], "gw-retry")
    mesh.control("r1").SetFaults(pb.FaultConfig(fail_probability=0.5, fail_code=14), timeout=5)
    try:
        with insecure_channel(plain) as ch:
            ok_plain, failed_plain = run_calls(mesh.pb2_grpc.MeshServiceStub(ch), pb, 2000)
        with insecure_channel(retried) as ch:
            ok_retry, failed_retry = run_calls(mesh.pb2_grpc.MeshServiceStub(ch), pb, 2000)
    finally:
        mesh.control("r1").SetFaults(pb.FaultConfig(), timeout=5)
    # Round robin gives r1 a third (667 calls): about half of them fail.
    assert 220 <= len(failed_plain) <= 450, (ok_plain, len(failed_plain))
    assert set(failed_plain) == {grpc.StatusCode.UNAVAILABLE}
    assert ok_retry >= 1998, (ok_retry, failed_retry[:5])


def test_retry_backoff_attempts_and_headers_follow_a6(mesh, launcher):
    """An upstream that always answers UNAVAILABLE, 48 calls: each makes 4
    attempts (no more) and fails with the upstream's status of the last;
    retries carry grpc-previous-rpc-attempts 1, 2, 3; and the gaps before
    retry n follow A6's jittered backoff, uniform in [0, c(n)) with
    c(n) = min(100ms × 2^(n-1), 300ms) = 100, 200, 300 ms (the cap): every
    gap stays below c(n), and over the 48 calls each retry's gaps average
    about c(n)/2 and reach near c(n). A retry without backoff, or one that
    did not grow, fails the lower bounds."""
    import collections
    lock = threading.Lock()
    attempts: dict[bytes, int] = collections.Counter()

    def fail(n, body, context):
        with lock:
            attempts[body] += 1
            k = attempts[body]
        context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {k} refused")
    upstream = RecordingUpstream(fail)
    ceilings = [0.1, 0.2, 0.3]
    calls = 48
    try:
        port = start_gateway(launcher, [upstream.port], [{"plugin": "retry", "config": {
            "max_attempts": 4, "initial_backoff": 0.1, "max_backoff": 0.3, "backoff_multiplier": 2}}], "gw-backoff")
        with insecure_channel(port) as ch:
            call = ch.unary_unary(PROCESS)

            def one(i):
                with pytest.raises(grpc.RpcError) as caught:
                    call(b"\x0a\x02" + f"{i:02d}".encode(), timeout=10)
                return caught.value.code(), caught.value.details()
            with ThreadPoolExecutor(max_workers=8) as pool:
                outcomes = list(pool.map(one, range(calls)))
        assert outcomes == [(grpc.StatusCode.UNAVAILABLE, "attempt 4 refused")] * calls, outcomes
        # The call ended after its 4th attempt: a 5th would be sent within
        # the next backoff (at most 300 ms), so wait that long for none.
        time.sleep(0.4)
        by_call = collections.defaultdict(list)
        for when, metadata, body in upstream.calls:
            by_call[body].append((when, metadata.get("grpc-previous-rpc-attempts")))
        assert len(by_call) == calls and all(len(a) == 4 for a in by_call.values()), {b: len(a) for b, a in by_call.items()}
        gaps: list[list[float]] = [[], [], []]
        for seen in by_call.values():
            assert [previous for _, previous in seen] == [None, "1", "2", "3"], seen
            for n in range(3):
                gaps[n].append(seen[n + 1][0] - seen[n][0])
        for n, (ceiling, sample) in enumerate(zip(ceilings, gaps), start=1):
            # Upper: below the ceiling (plus scheduling slack).
            assert max(sample) < ceiling + 0.05, (n, sample)
            # Lower: the mean of a uniform [0, c) is c/2 (its standard error
            # over 48 samples is 0.042 c, so 0.3 c is almost 5 of them away);
            # the largest of 48 falls below 0.6 c with a chance of 2e-11.
            mean = statistics.mean(sample)
            assert 0.3 * ceiling < mean < 0.7 * ceiling + 0.02, (n, mean, sample)
            assert max(sample) > 0.6 * ceiling, (n, sample)
    finally:
        upstream.stop()


def test_retry_honors_pushback_and_skips_non_retryable_codes(mesh, launcher):
    """grpc-retry-pushback-ms: 300 delays the retry by 300 ms; a status not in
    retryable_status_codes (INVALID_ARGUMENT) is not retried."""
    def pushback(n, body, context):
        if body == b"bad":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad request")
        if n == 1:
            context.set_trailing_metadata([("grpc-retry-pushback-ms", "300")])
            context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        return b"ok"
    upstream = RecordingUpstream(pushback)
    try:
        port = start_gateway(launcher, [upstream.port], [{"plugin": "retry", "config": {
            "max_attempts": 3, "initial_backoff": "10ms"}}], "gw-pushback")
        with insecure_channel(port) as ch:
            call = ch.unary_unary(PROCESS)
            assert call(b"good", timeout=10) == b"ok"
            assert len(upstream.calls) == 2
            gap = upstream.calls[1][0] - upstream.calls[0][0]
            assert 0.28 <= gap < 0.6, gap
            with pytest.raises(grpc.RpcError) as caught:
                call(b"bad", timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert len(upstream.calls) == 3
    finally:
        upstream.stop()


def test_retry_replays_a_client_stream_intact(mesh, launcher):
    """A client-streaming call of 40 messages (160 KiB) whose first attempt
    fails after the whole stream: the retry carries the same bytes, and the
    call succeeds."""
    def flaky(n, body, context):
        if n == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt fails")
        return hashlib.sha256(body).hexdigest().encode()
    upstream = RecordingUpstream(flaky)
    try:
        port = start_gateway(launcher, [upstream.port], [{"plugin": "retry", "config": {
            "max_attempts": 2, "initial_backoff": "10ms"}}], "gw-replay")
        messages = [bytes([i]) * 4096 for i in range(40)]
        with insecure_channel(port) as ch:
            call = ch.stream_unary(COLLECT)
            answer = call(iter(messages), timeout=10)
        assert answer == hashlib.sha256(b"".join(messages)).hexdigest().encode()
        assert len(upstream.calls) == 2
        assert upstream.calls[0][2] == upstream.calls[1][2] == b"".join(messages)
    finally:
        upstream.stop()


def test_a_request_past_the_replay_buffer_is_not_retried(mesh, launcher):
    """With replay_buffer_limit 64 KiB, a 160 KiB client stream commits to
    its first attempt: when that attempt fails, the call fails with its
    status (no retry could resend the bytes)."""
    def flaky(n, body, context):
        if n == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "first attempt fails")
        return b"second"
    upstream = RecordingUpstream(flaky)
    try:
        port = start_gateway(launcher, [upstream.port], [{"plugin": "retry", "config": {
            "max_attempts": 3, "initial_backoff": "10ms"}}], "gw-overflow", replay_buffer_limit=65536)
        with insecure_channel(port) as ch:
            with pytest.raises(grpc.RpcError) as caught:
                ch.stream_unary(COLLECT)(iter([bytes([i]) * 4096 for i in range(40)]), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert caught.value.details() == "first attempt fails"
        assert len(upstream.calls) == 1
    finally:
        upstream.stop()


def test_retry_status_in_trailers_after_headers_is_retried(mesh, launcher):
    """The upstream sends response headers, then UNAVAILABLE in trailers
    without a message (not Trailers-Only): Retry still retries it, since the
    gateway holds the head until the first message."""
    def headers_then_fail(n, body, context):
        context.send_initial_metadata([("x-attempt", str(n))])
        if n == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "after headers")
        return b"ok"
    upstream = RecordingUpstream(headers_then_fail)
    try:
        port = start_gateway(launcher, [upstream.port], [{"plugin": "retry", "config": {
            "max_attempts": 2, "initial_backoff": "10ms"}}], "gw-trailers")
        with insecure_channel(port) as ch:
            response, call = ch.unary_unary(PROCESS).with_call(b"x", timeout=10)
        assert response == b"ok"
        assert dict(call.initial_metadata()).get("x-attempt") == "2"
    finally:
        upstream.stop()


class RefusingUpstream(RawServer):
    """A raw HTTP/2 server (python-h2) that answers the first request with
    RST_STREAM REFUSED_STREAM and every later one with a gRPC OK."""

    def __init__(self):
        self.requests = 0
        super().__init__()

    def serve_connection(self, sock):
        import h2.config
        import h2.connection
        import h2.events
        import h2.exceptions
        conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        while data := sock.recv(65536):
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    self.requests += 1
                    if self.requests == 1:
                        conn.reset_stream(event.stream_id, error_code=7)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    try:
                        conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        conn.send_data(event.stream_id, b"\x00\x00\x00\x00\x02ok")
                        conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                    except h2.exceptions.StreamClosedError:
                        pass
            sock.sendall(conn.data_to_send())


def test_a_refused_stream_is_retried_transparently(mesh, launcher):
    """Without any retry plugin, an upstream's REFUSED_STREAM (nothing was
    processed) is retried once by the gateway, and the call succeeds."""
    upstream = RefusingUpstream()
    try:
        port = start_gateway(launcher, [upstream.port], [], "gw-refused")
        with insecure_channel(port) as ch:
            assert ch.unary_unary(PROCESS)(b"x", timeout=10) == b"ok"
        assert upstream.requests == 2
    finally:
        upstream.stop()


# --------------------------------------------------------------------------
# Hedging


def latencies(stub, pb, n):
    out = []
    for i in range(n):
        started = time.monotonic()
        stub.Process(pb.ProcessRequest(request_id=str(i)), timeout=10)
        out.append(time.monotonic() - started)
    return out


def p99(values):
    return sorted(values)[int(len(values) * 0.99) - 1]


def test_hedging_cuts_the_tail_and_cancels_the_loser(mesh, launcher):
    """r1 adds 300 ms to 20% of its calls. 300 sequential calls without and
    with Hedge (delay 60 ms, 2 attempts): p99 with hedging is at most half of
    p99 without; the slow attempts lost to hedges are cancelled at r1."""
    pb = mesh.pb2
    ports = [r.port for r in mesh.replicas.values()]
    plain = start_gateway(launcher, ports, [], "gw-nohedge")
    hedged = start_gateway(launcher, ports, [{"plugin": "hedge", "config": {
        "max_attempts": 2, "hedging_delay": "60ms", "non_fatal_status_codes": ["UNAVAILABLE"]}}], "gw-hedge")
    mesh.control("r1").SetFaults(pb.FaultConfig(delay_ms=300, delay_probability=0.2), timeout=5)
    try:
        with insecure_channel(plain) as ch:
            without = latencies(mesh.pb2_grpc.MeshServiceStub(ch), pb, 300)
        cancelled_before = mesh.control("r1").GetStats(pb.StatsRequest(), timeout=5).cancelled
        with insecure_channel(hedged) as ch:
            with_hedge = latencies(mesh.pb2_grpc.MeshServiceStub(ch), pb, 300)
        cancelled_after = mesh.control("r1").GetStats(pb.StatsRequest(), timeout=5).cancelled
    finally:
        mesh.control("r1").SetFaults(pb.FaultConfig(), timeout=5)
    ratio = p99(with_hedge) / p99(without)
    print(f"p99 without hedging {p99(without) * 1000:.0f} ms, with {p99(with_hedge) * 1000:.0f} ms, ratio {ratio:.2f}; "
          f"medians {statistics.median(without) * 1000:.1f} / {statistics.median(with_hedge) * 1000:.1f} ms")
    assert p99(without) >= 0.3
    assert ratio < 0.5, (p99(without), p99(with_hedge))
    assert cancelled_after - cancelled_before >= 5, (cancelled_before, cancelled_after)


def test_hedged_client_stream_past_the_replay_buffer_commits_to_one_attempt(launcher):
    """Two hedged attempts of a client stream are both open when the request
    outgrows the 64 KiB replay buffer: the call commits to one of them and
    cancels the other at once (gRFC A6's commit point), instead of feeding
    both upstreams to the end; the call still succeeds with every byte."""
    received = []
    lock = threading.Lock()

    def collect(iterator, context):
        entry = {"messages": 0, "bytes": b""}
        with lock:
            received.append(entry)
        try:
            for message in iterator:
                entry["messages"] += 1
                entry["bytes"] += message
        except Exception:  # the gateway cancelled this attempt
            pass
        return hashlib.sha256(entry["bytes"]).hexdigest().encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "mesh.v1.MeshService", {"CollectMetrics": grpc.stream_unary_rpc_method_handler(collect)})])
    upstream_port = free_port()
    server.add_insecure_port(f"127.0.0.1:{upstream_port}")
    server.start()
    try:
        port = start_gateway(launcher, [upstream_port], [{"plugin": "hedge", "config": {
            "max_attempts": 2, "hedging_delay": "50ms"}}], "gw-hedge-overflow", replay_buffer_limit=65536)
        messages = [bytes([i]) * 4096 for i in range(40)]

        def stream():
            yield from messages[:4]
            # The hedge opens (after 50 ms) and gets the first 16 KiB replayed.
            wait_until(lambda: len(received) == 2 and all(entry["messages"] == 4 for entry in received), timeout=5,
                       message="both attempts open with the first 4 messages")
            yield from messages[4:]
        with insecure_channel(port) as ch:
            answer = ch.stream_unary(COLLECT)(stream(), timeout=10)
        assert answer == hashlib.sha256(b"".join(messages)).hexdigest().encode()
        wait_until(lambda: len(received) == 2, timeout=5, message="both attempts at the upstream")
        counts = sorted(entry["messages"] for entry in received)
        assert counts[1] == 40 and counts[0] < 30, counts
    finally:
        server.stop(0)


# --------------------------------------------------------------------------
# Circuit breaker


def test_circuit_breaker_sheds_load_and_recovers(mesh, launcher):
    """max_requests 4 on a replica answering after 400 ms: of 16 concurrent
    calls, 4 go through and the rest get UNAVAILABLE naming the breaker at
    once; afterwards calls pass again."""
    pb = mesh.pb2
    port = start_gateway(launcher, [mesh.replicas["r2"].port], [{"plugin": "circuit_breaker", "config": {
        "max_requests": 4, "max_pending_requests": 16}}], "gw-breaker")
    with insecure_channel(port) as ch:
        stub = mesh.pb2_grpc.MeshServiceStub(ch)
        stub.Process(pb.ProcessRequest(request_id="warm"), timeout=5)
        barrier = threading.Barrier(16)

        def one(i):
            barrier.wait()
            started = time.monotonic()
            try:
                stub.Process(pb.ProcessRequest(request_id=str(i)), timeout=10, metadata=[("x-mesh-delay-ms", "400")])
                return ("ok", time.monotonic() - started, "")
            except grpc.RpcError as error:
                return (error.code(), time.monotonic() - started, error.details())
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(one, range(16)))
        passed = [r for r in results if r[0] == "ok"]
        shed = [r for r in results if r[0] == grpc.StatusCode.UNAVAILABLE]
        assert len(passed) == 4 and len(shed) == 12, results
        assert all("circuit breaker open" in r[2] and "max_requests" in r[2] for r in shed)
        assert all(r[1] < 0.3 for r in shed), "overflow is answered at once"
        ok, failed = run_calls(stub, pb, 20, workers=4)
        assert ok == 20, failed


# --------------------------------------------------------------------------
# Outlier detection


def test_outlier_detection_ejects_and_readmits(mesh, launcher):
    """r3 fails every call. Failure-percentage ejection (interval 500 ms)
    takes it out within two intervals of the first failure; then 60 calls
    all succeed and none reaches r3; the ejection lasts the 2 s
    base_ejection_time (not less, and not much more: the gateway's own log
    times both ends), after which r3 (healed) gets calls again."""
    import json
    pb = mesh.pb2
    ports = [r.port for r in mesh.replicas.values()]
    r3 = f"127.0.0.1:{mesh.replicas['r3'].port}"
    port = free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
        {"plugin": "outlier_detection", "config": {
            "interval": "500ms", "base_ejection_time": "2s", "max_ejection_percent": 50,
            "failure_percentage_ejection": {"threshold": 50, "minimum_hosts": 3, "request_volume": 5}}}]}
    gateway = launcher.gateway(gateway_config(port, clusters={"mesh": ports}, routes=[route]), port, name="gw-outlier")

    def event(msg: str):
        """The gateway's log line `msg` about r3, or None."""
        for line in gateway.proc.log_text().splitlines():
            if line.startswith("{") and f'"msg":"{msg}"' in line:
                entry = json.loads(line)
                if entry.get("endpoint") == r3:
                    return entry
        return None
    mesh.control("r3").SetFaults(pb.FaultConfig(fail_probability=1.0, fail_code=14), timeout=5)
    try:
        with insecure_channel(port) as ch:
            stub = mesh.pb2_grpc.MeshServiceStub(ch)
            failing_since = time.time()
            while not event("endpoint ejected"):
                assert time.time() - failing_since < 5, "r3 not ejected within 5 s"
                run_calls(stub, pb, 12, workers=4)
            ejected = event("endpoint ejected")
            # Two intervals, and the time a scan takes to be logged.
            assert ejected["ts"] - failing_since < 2 * 0.5 + 0.2, (ejected, failing_since)
            assert ejected["duration_ms"] == "2000", ejected
            before = replica_calls(mesh, "r3")
            ok, failed = run_calls(stub, pb, 60, workers=4)
            assert ok == 60, failed
            assert replica_calls(mesh, "r3") == before
            mesh.control("r3").SetFaults(pb.FaultConfig(), timeout=5)
            ended = wait_until(lambda: event("endpoint ejection ended"), timeout=5, interval=0.05,
                               message="the ejection of r3 to end")
            lasted = ended["ts"] - ejected["ts"]
            assert 2.0 - 0.002 <= lasted < 2.0 + 0.2, lasted  # the log's times are in ms
            before = replica_calls(mesh, "r3")
            ok, failed = run_calls(stub, pb, 60, workers=4)
            assert ok == 60, failed
            assert replica_calls(mesh, "r3") > before
    finally:
        mesh.control("r3").SetFaults(pb.FaultConfig(), timeout=5)


# --------------------------------------------------------------------------
# Config refusals


@pytest.mark.parametrize("filters, message", [
    ([{"plugin": "retry"}, {"plugin": "hedge"}], "retry and hedging cannot share a chain"),
    ([{"plugin": "retry", "config": {"max_attempts": 9}}], "max_attempts must be a whole number from 2 to 5"),
    ([{"plugin": "retry", "config": {"retryable_status_codes": ["SOMETIMES"]}}], "'SOMETIMES' is not a gRPC status code"),
    ([{"plugin": "hedge", "config": {"hedging_delay": "soon"}}], "hedging_delay must be a duration"),
    ([{"plugin": "circuit_breaker", "config": {"max_request": 3}}], "unknown key 'max_request'"),
    ([{"plugin": "outlier_detection"}], "enable at least one of"),
])
def test_resilience_configs_are_validated(bins, tmp_path, filters, message):
    config = gateway_config(free_port(), clusters={"mesh": [free_port()]},
                            routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": filters}])
    path = tmp_path / "meshgate.yaml"
    path.write_text(config)
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert "meshgate.yaml:" in result.stderr
