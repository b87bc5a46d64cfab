"""Command-line and runtime switches no other test reaches: `--log-level`
(README "Logs"), `meshgate status` exit code 1 for a gateway that answers
but is not ready (README "Commands": 0 ready, 1 not ready, 2 no answer),
and `runtime.metrics: false` (no request counters on /metrics; a reload
may turn them on)."""

from __future__ import annotations

import json
import signal
import subprocess

import grpc
import pytest

from conftest import Launcher
from coverkit import admin_get, config_doc, mesh_route, metric_sum, post_reload
from meshkit import HOST, addr, free_port, insecure_channel, to_yaml, wait_until


def run_cli(bins, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(bins.meshgate), *args], capture_output=True, text=True, timeout=timeout)


def run_ready_gateway(launch: Launcher, bins, tmp_path, name: str, *args: str, env: dict | None = None):
    """`meshgate run` on a config whose one cluster's endpoint refuses
    connections, with an admin port; returns (proc, port, admin) once
    /ready answers 200."""
    port, admin = free_port(), free_port()
    path = tmp_path / f"{name}.yaml"
    path.write_text(to_yaml(config_doc(port, admin, {"mesh": [free_port()]}, [mesh_route()])))
    proc = launch.group.start(name, [str(bins.meshgate), "run", "--config", str(path), *args], port=port, env=env)
    wait_until(lambda: admin_get(admin, "/ready")[0] == 200, timeout=10, message="the gateway ready")
    return proc, port, admin


# --------------------------------------------------------------------------
# --log-level


def levels_logged(text: str) -> dict[str, set[str]]:
    """level -> the messages logged at it (JSON lines only)."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "level" in entry:
            out.setdefault(entry["level"], set()).add(entry.get("msg", ""))
    return out


@pytest.mark.parametrize("level, present, absent", [
    ("debug", {"debug", "info", "warning"}, set()),
    ("info", {"info", "warning"}, {"debug"}),
    ("warning", {"warning"}, {"debug", "info"}),
    ("error", set(), {"debug", "info", "warning"}),
])
def test_log_level_sets_the_lowest_level_logged(bins, mesh_pb2, mesh_pb2_grpc, tmp_path, level, present, absent):
    """The same events at every level: an admin request with a foreign Host
    (debug: "admin: request refused"), startup (info: "meshgate started"),
    a call to a cluster whose endpoint refuses connections (warning:
    "upstream connect failed"). After the gateway has exited, its log holds
    exactly the levels at or above --log-level."""
    launch = Launcher(bins, tmp_path)
    try:
        proc, port, admin = run_ready_gateway(launch, bins, tmp_path, f"gw-log-{level}", "--log-level", level)
        import http.client
        conn = http.client.HTTPConnection(HOST, admin, timeout=5)
        conn.request("GET", "/clusters", headers={"Host": "rebinding.example"})
        assert conn.getresponse().status == 403
        conn.close()
        with insecure_channel(port) as ch:
            with pytest.raises(grpc.RpcError) as caught:
                mesh_pb2_grpc.MeshServiceStub(ch).Process(mesh_pb2.ProcessRequest(request_id="x"), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        logged = levels_logged(proc.log_text())
    finally:
        launch.stop_all()
    expected_messages = {"debug": "admin: request refused", "info": "meshgate started", "warning": "upstream connect failed"}
    for lv in present:
        assert expected_messages[lv] in logged.get(lv, set()), (lv, logged)
    for lv in absent:
        assert lv not in logged, (lv, logged)


# --------------------------------------------------------------------------
# status exit codes


def test_status_exits_1_while_the_gateway_is_not_ready(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """`meshgate status` exits 0 on a ready gateway; after SIGTERM, while a
    stream keeps it draining (drain_timeout 10 s) and /ready says 503, it
    exits 1 and says so; once the gateway is gone it exits 2."""
    launch = Launcher(bins, tmp_path)
    try:
        replica = launch.replica("st1")
        port, admin = free_port(), free_port()
        doc = config_doc(port, admin, {"mesh": [replica.port]}, [mesh_route()], runtime={"drain_timeout": "10s"})
        gw = launch.gateway(to_yaml(doc), port, name="gw-status")
        target = ["--admin", addr(admin)]
        ready = run_cli(bins, "status", *target)
        assert ready.returncode == 0, ready
        with insecure_channel(port) as ch:
            stream = mesh_pb2_grpc.MeshServiceStub(ch).StreamEvents(
                mesh_pb2.StreamRequest(stream_id="drain", count=100, interval_ms=100), timeout=20)
            assert next(stream).sequence == 0
            gw.proc.send_signal(signal.SIGTERM)
            wait_until(lambda: admin_get(admin, "/ready")[0] == 503, timeout=5, message="/ready 503 while draining")
            draining = run_cli(bins, "status", *target)
            assert draining.returncode == 1, draining
            first = draining.stdout.splitlines()[0] if draining.stdout else ""
            assert first.lower().endswith("not ready"), draining.stdout
            stream.cancel()
        assert gw.proc.wait(timeout=15) == 0
        gone = run_cli(bins, "status", *target)
        assert gone.returncode == 2, gone
    finally:
        launch.stop_all()


# --------------------------------------------------------------------------
# runtime.metrics


def test_metrics_false_keeps_no_request_counters_and_a_reload_turns_them_on(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """runtime.metrics: false: 5 calls leave no grpc_requests_total and no
    grpc_request_duration_seconds samples on /metrics (the gateway's other
    metrics stay). Reloaded with metrics: true, the next 5 calls count."""
    launch = Launcher(bins, tmp_path)
    try:
        replica = launch.replica("mt1")
        port, admin = free_port(), free_port()
        doc = config_doc(port, admin, {"mesh": [replica.port]}, [mesh_route()], runtime={"metrics": False})
        gw = launch.gateway(to_yaml(doc), port, name="gw-metrics-off")

        def five_calls():
            with insecure_channel(port) as ch:
                stub = mesh_pb2_grpc.MeshServiceStub(ch)
                for i in range(5):
                    stub.Process(mesh_pb2.ProcessRequest(request_id=f"m{i}"), timeout=5)
        five_calls()
        status, text = admin_get(admin, "/metrics")
        assert status == 200 and "meshgate_config_generation" in text, text[:300]
        request_lines = [l for l in text.splitlines()
                         if l.startswith(("grpc_requests_total{", "grpc_request_duration_seconds_count{"))]
        assert all(l.endswith(" 0") for l in request_lines), request_lines

        doc["runtime"]["metrics"] = True
        gw.config_path.write_text(to_yaml(doc))
        assert post_reload(admin)[0] == 200
        five_calls()
        assert metric_sum(admin, "grpc_requests_total", method="Process", code="OK") == 5
    finally:
        launch.stop_all()


# --------------------------------------------------------------------------
# glibc's per-thread malloc cache (docs/operations.md "Memory allocator")


@pytest.mark.parametrize("env,expected", [
    ({}, "glibc.malloc.tcache_count=1024"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=1024"),
    ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=9"}, "glibc.malloc.tcache_count=9"),
    ({"MESHGATE_MALLOC_TUNING": "off"}, None),
])
def test_run_sets_the_malloc_cache_unless_told_otherwise(bins, tmp_path, env, expected):
    """`meshgate run` executes itself again with glibc.malloc.tcache_count
    set (the same pid serves), appended to other tunables; an operator's own
    tcache_count, or MESHGATE_MALLOC_TUNING=off, is left alone. The gateway
    serves either way."""
    import os
    launch = Launcher(bins, tmp_path)
    try:
        base = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "MESHGATE_MALLOC_TUNING")}
        proc, _, _ = run_ready_gateway(launch, bins, tmp_path, "gw-malloc", env={**base, **env})
        # The value the process runs with, as it logs it (/proc/PID/environ
        # would show GLIBC_TUNABLES cut at its first ':' once glibc parsed it).
        logged = [json.loads(line) for line in proc.log_text().splitlines() if '"memory allocator"' in line]
        assert len(logged) == 1, proc.log_text()[-2000:]
        assert logged[0]["GLIBC_TUNABLES"] == (expected or "(unset)"), logged
        # Executed again in place: the pid the test started serves, with the same arguments.
        assert open(f"/proc/{proc.pid}/cmdline", "rb").read().split(b"\0")[:2] == [str(bins.meshgate).encode(), b"run"]
    finally:
        launch.stop_all()
