"""Upstream connection handling: multiplexing under the upstream's
SETTINGS_MAX_CONCURRENT_STREAMS, extra connections when full, reconnecting
after an endpoint comes back, and the status a client gets when an upstream
connection dies mid-call."""

from __future__ import annotations

import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from meshkit import free_port, gateway_config, insecure_channel, to_yaml, wait_until

ROUTES = [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]


def test_streams_multiplexed_within_upstream_limit(mesh, launcher):
    """An upstream allowing 10 concurrent streams per connection gets 60
    concurrent slow calls (one client connection, so one event loop) over
    multiplexed connections: at least the 6 that 60 calls need, at most the
    pool's cap of 8 per event loop (max_connections_per_endpoint), all calls
    at once (one 400 ms wave, not several), and every call succeeds."""
    pb = mesh.pb2
    replica = launcher.replica("narrow", max_concurrent_streams=10)
    port = free_port()
    launcher.gateway(gateway_config(port, clusters={"mesh": [replica.port]}, routes=ROUTES), port, name="gw-mux")
    direct = insecure_channel(replica.port)
    control = mesh.pb2_grpc.SampleControlStub(direct)
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        stub.Process(pb.ProcessRequest(request_id="warm"), timeout=5)  # the client's connection is up
        # Connections the replica accepted so far: the launcher's port probe,
        # this control channel and the gateway's first (the warm-up call's).
        before = control.GetStats(pb.StatsRequest(), timeout=5).connections
        started = time.monotonic()
        futures = [stub.Process.future(pb.ProcessRequest(request_id=str(i), data="m"),
                                       metadata=[("x-mesh-delay-ms", "400")], timeout=20)
                   for i in range(60)]
        results = [f.result() for f in futures]
        elapsed = time.monotonic() - started
    assert all(r.result == "processed: m" for r in results)
    stats = control.GetStats(pb.StatsRequest(), timeout=5)
    direct.close()
    assert stats.calls == 61
    gateway_connections = stats.connections - before + 1
    # 60 calls / 10 per connection -> at least 6 connections when all run at
    # once; the pool's default cap is 8 per event loop; never one per call.
    assert 6 <= gateway_connections <= 8, (before, stats.connections)
    # One wave of 400 ms (calls waiting for a second wave would take 800).
    assert elapsed < 0.75, elapsed


def test_endpoint_back_after_backoff(mesh, launcher):
    """An endpoint that was down (UNAVAILABLE) serves again once it is back,
    after the reconnect backoff (about 1 s), without restarting the gateway."""
    pb = mesh.pb2
    replica_port = free_port()
    port = free_port()
    gateway = launcher.gateway(gateway_config(port, clusters={"mesh": [replica_port]}, routes=ROUTES), port, name="gw-back")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        try:
            stub.Process(pb.ProcessRequest(request_id="down"), timeout=5)
            raise AssertionError("a call to a dead endpoint succeeded")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE
            # The client learns that no upstream is reachable; which one
            # and why is the operator's (the log), not the client's.
            assert "reachable" in error.details() and str(replica_port) not in error.details(), error.details()
        assert f'"endpoint":"127.0.0.1:{replica_port}"' in gateway.proc.log_text().replace(" ", "")
        launcher.replica("late", port=replica_port)

        def serves() -> bool:
            try:
                return stub.Process(pb.ProcessRequest(request_id="up", data="u"), timeout=2).replica_id == "late"
            except grpc.RpcError:
                return False
        wait_until(serves, timeout=10, interval=0.2, message="the gateway to reconnect to the endpoint")


def test_upstream_death_mid_stream_is_unavailable(mesh, launcher):
    """Killing the upstream during a server stream ends the client's call
    with UNAVAILABLE naming the lost connection; the gateway keeps serving."""
    pb = mesh.pb2
    doomed = launcher.replica("doomed")
    survivor = launcher.replica("survivor")
    port = free_port()
    launcher.gateway(gateway_config(port, clusters={"mesh": [doomed.port, survivor.port]}, routes=ROUTES),
                     port, name="gw-death")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        # Round robin: find a stream that landed on `doomed`.
        for _ in range(4):
            call = stub.StreamEvents(pb.StreamRequest(stream_id="s", count=1000, interval_ms=20), timeout=20)
            first = next(call)
            if first.replica_id == "doomed":
                break
            call.cancel()
        assert first.replica_id == "doomed"
        doomed.proc.popen.kill()
        try:
            for _ in call:
                pass
            raise AssertionError("the stream ended normally although its upstream died")
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.UNAVAILABLE, error
            assert "lost" in error.details(), error.details()
        # Later calls go to the survivor.
        for i in range(3):
            assert stub.Process(pb.ProcessRequest(request_id=str(i)), timeout=5).replica_id == "survivor"


def test_silent_upstream_fails_after_connect_timeout(mesh, launcher):
    """An upstream that accepts TCP but never speaks HTTP/2 is a failed
    connect after `connect_timeout`: the call gets UNAVAILABLE, the log
    says why."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        port = free_port()
        config = gateway_config(port, clusters={"mesh": [silent.getsockname()[1]]}, routes=ROUTES)
        config = config.replace("  - name: mesh\n", "  - name: mesh\n    connect_timeout: 300ms\n")
        assert "connect_timeout: 300ms" in config
        gateway = launcher.gateway(config, port, name="gw-silent")
        with insecure_channel(port) as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)
            started = time.monotonic()
            try:
                stub.Process(mesh.pb2.ProcessRequest(request_id="s"), timeout=10)
                raise AssertionError("a call to a silent upstream succeeded")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error
                assert "reachable" in error.details(), error.details()
            failure = [line for line in gateway.proc.log_text().splitlines() if "upstream connect failed" in line]
            assert failure and "SETTINGS" in failure[0], failure
            assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_keepalive_closes_a_connection_to_a_frozen_upstream(mesh, launcher):
    """Cluster `keepalive` (PING every 200 ms, 300 ms for the ACK): a replica
    frozen with SIGSTOP still has its TCP connection (the kernel ACKs), but
    answers no PING, so the gateway closes the connection and the call on it
    fails UNAVAILABLE in about half a second instead of waiting out its 10 s
    deadline. Without keepalive the same call waits for the deadline."""
    import os
    import signal
    pb = mesh.pb2
    frozen = launcher.replica("frozen")
    ports, gateways = {}, {}
    for name, keepalive in (("ka", {"interval": "200ms", "timeout": "300ms"}), ("plain", None)):
        port = free_port()
        cluster = {"name": "mesh", "endpoints": [{"address": f"127.0.0.1:{frozen.port}"}]}
        if keepalive:
            cluster["keepalive"] = keepalive
        doc = {"listeners": [{"name": "public", "address": f"127.0.0.1:{port}", "routes": ROUTES}], "clusters": [cluster]}
        ports[name] = port
        gateways[name] = launcher.gateway(to_yaml(doc), port, name=f"gw-keepalive-{name}")
    channels = {name: insecure_channel(port) for name, port in ports.items()}
    try:
        stubs = {name: mesh.pb2_grpc.MeshServiceStub(ch) for name, ch in channels.items()}
        for stub in stubs.values():
            assert stub.Process(pb.ProcessRequest(request_id="warm"), timeout=5).replica_id == "frozen"
        time.sleep(0.5)  # a few PINGs go back and forth while the replica runs
        os.kill(frozen.proc.pid, signal.SIGSTOP)

        def stopped() -> bool:
            # SIGSTOP is delivered asynchronously: every thread must be
            # stopped before a call may count on it (a CI run once saw the
            # replica answer just after kill() returned).
            tasks = Path(f"/proc/{frozen.proc.pid}/task")
            return all(Path(t, "stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t") for t in tasks.iterdir())
        wait_until(stopped, timeout=5, interval=0.01, message="the replica stopped")
        try:
            took = {}
            for name in ("ka", "plain"):
                started = time.monotonic()
                with pytest.raises(grpc.RpcError) as caught:
                    stubs[name].Process(pb.ProcessRequest(request_id="stuck"), timeout=3 if name == "plain" else 10)
                took[name] = (time.monotonic() - started, caught.value.code())
        finally:
            os.kill(frozen.proc.pid, signal.SIGCONT)
        assert took["ka"][1] == grpc.StatusCode.UNAVAILABLE and took["ka"][0] < 2.0, took
        assert took["plain"][1] == grpc.StatusCode.DEADLINE_EXCEEDED, took
        assert "upstream keepalive timed out" in gateways["ka"].proc.log_text()
    finally:
        for ch in channels.values():
            ch.close()
