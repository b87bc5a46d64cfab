"""Resilience limits no other test reaches, through real traffic:
the upstream pool's `max_connections_per_endpoint`, the circuit breaker's
`max_pending_requests` and `max_retries`, the retry plugin's
`retry_throttling` (gRFC A6 token bucket), and outlier detection's
`success_rate_ejection` and `max_ejection_time` (gRFC A50)."""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from coverkit import PROCESS, admin_json, config_doc, mesh_route, metric_sum
from meshkit import RecordingUpstream, free_port, insecure_channel, to_yaml, wait_until


def start(launcher, clusters, routes, name, runtime=None, cluster_extra=None, admin=True):
    port = free_port()
    admin_port = free_port() if admin else None
    doc = config_doc(port, admin_port, clusters, routes, runtime=runtime, cluster_extra=cluster_extra)
    launcher.gateway(to_yaml(doc), port, name=name)
    return port, admin_port


def concurrent_calls(port, pb, pb_grpc, n, metadata=(), timeout=15):
    """n Process calls released together (each on its own thread, one
    channel): [(outcome, seconds, details, replica)]."""
    barrier = threading.Barrier(n)
    with insecure_channel(port) as ch:
        stub = pb_grpc.MeshServiceStub(ch)
        stub.Process(pb.ProcessRequest(request_id="warm"), timeout=10)  # the channel is connected

        def one(i):
            barrier.wait()
            started = time.monotonic()
            try:
                reply = stub.Process(pb.ProcessRequest(request_id=str(i)), timeout=timeout, metadata=metadata)
                return ("ok", time.monotonic() - started, "", reply.replica_id)
            except grpc.RpcError as error:
                return (error.code(), time.monotonic() - started, error.details(), "")
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))


# --------------------------------------------------------------------------
# Upstream pool


def test_max_connections_per_endpoint_is_reached_and_calls_wait(launcher, mesh_pb2, mesh_pb2_grpc):
    """A replica allowing 1 stream per connection, a cluster with
    max_connections_per_endpoint 2 on one event loop: 6 concurrent calls of
    600 ms open exactly 2 connections to it (the replica counts them), all
    6 succeed, and they run in 3 waves (≥ 1.6 s), not at once."""
    pb = mesh_pb2
    replica = launcher.replica("pool1", max_concurrent_streams=1)
    with insecure_channel(replica.port) as control_channel:
        control = mesh_pb2_grpc.SampleControlStub(control_channel)
        before = control.GetStats(pb.StatsRequest(), timeout=5).connections
        port, _ = start(launcher, {"mesh": [replica.port]}, [mesh_route()], "gw-pool-cap",
                        runtime={"event_loops": 1}, cluster_extra={"mesh": {"max_connections_per_endpoint": 2}},
                        admin=False)
        started = time.monotonic()
        results = concurrent_calls(port, pb, mesh_pb2_grpc, 6, metadata=[("x-mesh-delay-ms", "600")])
        elapsed = time.monotonic() - started
        opened = control.GetStats(pb.StatsRequest(), timeout=5).connections - before
    assert [r[0] for r in results] == ["ok"] * 6, results
    assert opened == 2, f"the gateway opened {opened} connections to the replica (max_connections_per_endpoint 2)"
    assert elapsed >= 1.6, f"6 calls over 2 one-stream connections took {elapsed:.2f}s: they did not wait"


# --------------------------------------------------------------------------
# Circuit breaker


def test_circuit_breaker_max_pending_requests(launcher, mesh_pb2, mesh_pb2_grpc):
    """One upstream stream at a time (a 1-stream replica, one connection on
    one loop) and max_pending_requests 2: of 6 concurrent 800 ms calls, one
    runs, two wait for the stream and succeed later, three are refused at
    once with UNAVAILABLE naming max_pending_requests; the overflow is
    counted under limit="max_pending_requests"."""
    pb = mesh_pb2
    replica = launcher.replica("pend1", max_concurrent_streams=1)
    port, admin = start(launcher, {"mesh": [replica.port]},
                        [mesh_route(filters=[{"plugin": "circuit_breaker", "config": {
                            "max_requests": 100, "max_pending_requests": 2}}])],
                        "gw-pending", runtime={"event_loops": 1},
                        cluster_extra={"mesh": {"max_connections_per_endpoint": 1}})
    results = concurrent_calls(port, pb, mesh_pb2_grpc, 6, metadata=[("x-mesh-delay-ms", "800")])
    passed = [r for r in results if r[0] == "ok"]
    refused = [r for r in results if r[0] == grpc.StatusCode.UNAVAILABLE]
    assert len(passed) == 3 and len(refused) == 3, results
    assert all("max_pending_requests" in r[2] for r in refused), refused
    assert all(r[1] < 0.5 for r in refused), f"overflow must be answered at once: {refused}"
    assert sorted(r[1] for r in passed)[-1] >= 2.2, f"the waiting calls ran one after another: {passed}"
    assert metric_sum(admin, "meshgate_breaker_overflows_total", limit="max_pending_requests") == 3


def test_circuit_breaker_max_retries(launcher):
    """An upstream that always answers UNAVAILABLE, a retry filter allowing 3
    attempts: with the breaker's max_retries 3 each call makes 3 attempts;
    with max_retries 0 it makes 1 (the retry is not made, the call ends with
    the attempt's status) and the overflow is counted."""
    def fail(n, body, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, f"attempt {n} refused")
    upstream = RecordingUpstream(fail)
    try:
        retry = {"plugin": "retry", "config": {"max_attempts": 3, "initial_backoff": "5ms", "max_backoff": "10ms"}}
        attempts = {}
        for limit in (3, 0):
            before = len(upstream.calls)
            port, admin = start(launcher, {"mesh": [upstream.port]},
                                [mesh_route(filters=[retry, {"plugin": "circuit_breaker", "config": {"max_retries": limit}}])],
                                f"gw-max-retries-{limit}")
            with insecure_channel(port) as ch:
                for _ in range(2):
                    with pytest.raises(grpc.RpcError) as caught:
                        ch.unary_unary(PROCESS)(b"\x0a\x01x", timeout=10)
                    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            attempts[limit] = len(upstream.calls) - before
            overflows = metric_sum(admin, "meshgate_breaker_overflows_total", limit="max_retries")
            assert overflows == (2 if limit == 0 else 0), (limit, overflows)
        assert attempts == {3: 6, 0: 2}, attempts
    finally:
        upstream.stop()


# --------------------------------------------------------------------------
# Retry throttling


def test_retry_throttling_stops_retries_and_successes_restore_them(launcher):
    """retry_throttling {max_tokens 10, token_ratio 0.1} (gRFC A6): each
    failed attempt takes a token, each success gives 0.1, retries are made
    while more than half (5) are left. Against an upstream failing every
    call, 6 calls (max_attempts 2) make 2+2+1+1+1+1 = 8 attempts (12
    without throttling); after 60 successes (tokens 2 → 8) a failing call
    is retried again."""
    failing = threading.Event()
    failing.set()

    def behaviour(n, body, context):
        if failing.is_set():
            context.abort(grpc.StatusCode.UNAVAILABLE, "down")
        return b""
    upstream = RecordingUpstream(behaviour)
    try:
        port, _ = start(launcher, {"mesh": [upstream.port]}, [mesh_route(filters=[{"plugin": "retry", "config": {
            "max_attempts": 2, "initial_backoff": "5ms", "max_backoff": "10ms",
            "retry_throttling": {"max_tokens": 10, "token_ratio": 0.1}}}])], "gw-throttle", admin=False)
        with insecure_channel(port) as ch:
            call = ch.unary_unary(PROCESS)
            per_call = []
            for _ in range(6):
                before = len(upstream.calls)
                with pytest.raises(grpc.RpcError):
                    call(b"", timeout=10)
                per_call.append(len(upstream.calls) - before)
            assert per_call == [2, 2, 1, 1, 1, 1], per_call
            failing.clear()
            for _ in range(60):
                call(b"", timeout=10)
            failing.set()
            before = len(upstream.calls)
            with pytest.raises(grpc.RpcError):
                call(b"", timeout=10)
            assert len(upstream.calls) - before == 2, "tokens refilled by successes allow a retry again"
    finally:
        upstream.stop()


# --------------------------------------------------------------------------
# Outlier detection


def endpoint_states(admin: int) -> dict[str, dict]:
    cluster = next(c for c in admin_json(admin, "/clusters")["clusters"] if c["name"] == "mesh")
    return {e["address"]: e for e in cluster["endpoints"]}


def test_success_rate_ejection_ejects_the_outlier(launcher, mesh_pb2, mesh_pb2_grpc):
    """Three replicas, o3 failing every call; success_rate_ejection only
    (stdev_factor 1000 = 1.0, minimum_hosts 3, request_volume 10, interval
    300 ms): success rates 1, 1, 0 put o3 below mean − 1·stdev, so it is
    ejected (shown by /clusters) and then takes no calls while the others
    serve every call."""
    pb = mesh_pb2
    replicas = [launcher.replica("o1"), launcher.replica("o2"),
                launcher.replica("o3", "--fail-probability", "1.0", "--fail-code", "14")]
    port, admin = start(launcher, {"mesh": [r.port for r in replicas]}, [mesh_route(filters=[{
        "plugin": "outlier_detection", "config": {
            "interval": "300ms", "base_ejection_time": "60s", "max_ejection_percent": 50,
            "success_rate_ejection": {"stdev_factor": 1000, "minimum_hosts": 3, "request_volume": 10}}}])],
        "gw-success-rate")
    bad = f"127.0.0.1:{replicas[2].port}"
    with insecure_channel(port) as ch:
        stub = mesh_pb2_grpc.MeshServiceStub(ch)

        def ejected() -> bool:
            for i in range(15):
                try:
                    stub.Process(pb.ProcessRequest(request_id=f"sr{i}"), timeout=5)
                except grpc.RpcError:
                    pass
            return bool(endpoint_states(admin)[bad].get("ejected"))
        wait_until(ejected, timeout=10, interval=0.05, message="the failing replica to be ejected by success rate")
        states = endpoint_states(admin)
        assert [a for a, e in states.items() if e.get("ejected")] == [bad], states
        answered = [stub.Process(pb.ProcessRequest(request_id=f"after{i}"), timeout=5).replica_id for i in range(30)]
    assert set(answered) == {"o1", "o2"}, answered


def test_max_ejection_time_caps_repeated_ejections(launcher, mesh_pb2, mesh_pb2_grpc):
    """consecutive_failures 3, base_ejection_time 300 ms, max_ejection_time
    400 ms (interval 60 s, so the multiplier never decays in the test): an
    always-failing endpoint beside two good replicas is ejected again and
    again, for 300 ms, then 400 ms each time instead of 600, 900, 1200 ms.
    The gaps between the bursts of calls it receives show it."""
    def fail(n, body, context):
        context.abort(grpc.StatusCode.UNAVAILABLE, "always")
    bad = RecordingUpstream(fail)
    try:
        good = [launcher.replica("m1"), launcher.replica("m2")]
        port, _ = start(launcher, {"mesh": [good[0].port, good[1].port, bad.port]}, [mesh_route(filters=[{
            "plugin": "outlier_detection", "config": {
                "interval": "60s", "consecutive_failures": 3, "base_ejection_time": "300ms",
                "max_ejection_time": "400ms", "max_ejection_percent": 50}}])], "gw-max-ejection", admin=False)
        stop = threading.Event()

        def load():
            with insecure_channel(port) as ch:
                call = ch.unary_unary(PROCESS)
                while not stop.is_set():
                    try:
                        call(b"", timeout=5)
                    except grpc.RpcError:
                        pass

        def gaps() -> list[float]:
            with bad.lock:
                times = [c[0] for c in bad.calls]
            return [b - a for a, b in zip(times, times[1:]) if b - a > 0.15]
        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(gaps()) >= 5, timeout=15, interval=0.05, message="five ejections of the failing endpoint")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        seen = gaps()[:5]
        assert 0.25 <= seen[0] <= 0.45, f"the first ejection lasts base_ejection_time: {seen}"
        for gap in seen[1:]:
            assert 0.35 <= gap <= 0.55, f"later ejections last max_ejection_time (400 ms), not base × n: {seen}"
    finally:
        bad.stop()
