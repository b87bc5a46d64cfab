"""Prometheus metrics at the admin address: the exposition passes the real
`promtool check metrics`, the numbers follow real traffic, and a real
Prometheus server scrapes the gateway (`up == 1`, a counter that moved)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc
import pytest

from conftest import Launcher
from meshkit import HOST, free_port, insecure_channel, to_yaml, wait_until

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def samples(text: str, name: str) -> dict[str, float]:
    """{label text: value} of every sample of metric `name`."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


@pytest.fixture
def metered(bins, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """Two replicas behind a gateway with retries, one of them a file-discovered cluster."""
    launch = Launcher(bins, tmp_path)
    r1 = launch.replica("m1")
    r2 = launch.replica("m2", "--fail-probability", "0.3", "--fail-code", "14")
    endpoints = tmp_path / "endpoints.yaml"
    endpoints.write_text(to_yaml({"endpoints": [{"address": f"{HOST}:{r1.port}"}, {"address": f"{HOST}:{r2.port}"}]}))
    port, admin = free_port(), free_port()
    retry = {"plugin": "retry", "config": {"max_attempts": 3, "initial_backoff": "1ms", "max_backoff": "5ms",
                                            "retryable_status_codes": ["UNAVAILABLE"]}}
    doc = {
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
            {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [retry]}]}],
        "clusters": [{"name": "mesh", "discovery": {"file": {"path": str(endpoints)}}}],
    }
    launch.gateway(to_yaml(doc), port, name="gw-metrics")
    yield port, admin, launch
    launch.stop_all()


def test_metrics_follow_traffic_and_pass_promtool(metered, mesh_pb2, mesh_pb2_grpc):
    port, admin, _ = metered
    url = f"http://{HOST}:{admin}/metrics"
    with insecure_channel(port) as channel:
        stub = mesh_pb2_grpc.MeshServiceStub(channel)
        ok = 0
        for i in range(200):
            try:
                stub.Process(mesh_pb2.ProcessRequest(request_id=str(i)), timeout=5)
                ok += 1
            except grpc.RpcError:
                pass
        with pytest.raises(grpc.RpcError) as info:
            channel.unary_unary("/mesh.v1.MeshService/Nope")(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    text = fetch(url)
    requests = samples(text, "grpc_requests_total")
    key = 'cluster="mesh",code="OK",method="Process",service="mesh.v1.MeshService"'
    assert requests["{" + key + "}"] == ok, requests
    # A method nobody serves takes no series of its own (a flood of junk
    # names would fill the budget).
    assert requests['{cluster="mesh",code="UNIMPLEMENTED",method="other",service="other"}'] == 1, requests
    assert not any('method="Nope"' in k for k in requests), requests
    count = samples(text, "grpc_request_duration_seconds_count")
    assert count['{cluster="mesh",method="Process",service="mesh.v1.MeshService"}'] == 200
    inf = samples(text, "grpc_request_duration_seconds_bucket")
    assert inf['{cluster="mesh",le="+Inf",method="Process",service="mesh.v1.MeshService"}'] == 200
    attempts = samples(text, "meshgate_upstream_attempts_total")
    assert attempts['{cluster="mesh",kind="first"}'] == 201
    assert attempts['{cluster="mesh",kind="retry"}'] > 10, attempts  # m2 fails 30 % with UNAVAILABLE
    results = samples(text, "meshgate_upstream_attempt_results_total")
    assert any("UNAVAILABLE" in k for k in results), results
    assert samples(text, "grpc_endpoint_health") and all(v == 1 for v in samples(text, "grpc_endpoint_health").values())
    assert samples(text, "meshgate_discovery_endpoints") == {'{cluster="mesh",source="file ' + str(metered[2].work_dir / "endpoints.yaml") + '"}': 2}
    # The test's channel is closed: its connection leaves the gauge (one
    # open now and then, one fewer once it is gone).
    with insecure_channel(port) as channel:
        mesh_pb2_grpc.MeshServiceStub(channel).Process(mesh_pb2.ProcessRequest(request_id="c"), timeout=5)
        open_now = samples(fetch(url), "grpc_active_connections")[""]
        assert open_now >= 1
    wait_until(lambda: samples(fetch(url), "grpc_active_connections")[""] == open_now - 1, timeout=5,
               message="the closed connection to leave grpc_active_connections")

    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_real_prometheus_scrapes_the_gateway(metered, mesh_pb2, mesh_pb2_grpc, tmp_path):
    port, admin, launch = metered
    prom_port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(to_yaml({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "meshgate", "static_configs": [{"targets": [f"{HOST}:{admin}"]}]}],
    }))
    launch.group.start("prometheus", [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                      f"--web.listen-address={HOST}:{prom_port}"], port=prom_port)

    def ready() -> bool:
        # Prometheus listens before its TSDB is open and answers 503 until then.
        try:
            return fetch(f"http://{HOST}:{prom_port}/-/ready") != ""
        except (urllib.error.URLError, ConnectionError):
            return False
    wait_until(ready, timeout=30, interval=0.2, message="Prometheus to be ready (/-/ready)")

    def query(expr: str) -> list:
        body = fetch(f"http://{HOST}:{prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        return json.loads(body)["data"]["result"]

    wait_until(lambda: [r for r in query('up{job="meshgate"}') if r["value"][1] == "1"], timeout=30, interval=0.5,
               message="Prometheus to scrape the gateway (up == 1)")
    wait_until(lambda: query("meshgate_config_generation"), timeout=10, interval=0.5, message="a first sample")
    with insecure_channel(port) as channel:
        stub = mesh_pb2_grpc.MeshServiceStub(channel)
        for i in range(50):
            try:
                stub.Process(mesh_pb2.ProcessRequest(request_id=str(i)), timeout=5)
            except grpc.RpcError:
                pass

    def moved() -> bool:
        result = query('sum(grpc_requests_total{service="mesh.v1.MeshService"})')
        return bool(result) and float(result[0]["value"][1]) >= 50
    wait_until(moved, timeout=15, interval=0.5, message="Prometheus to see the request counter move")
    assert query('grpc_endpoint_health{cluster="mesh"}')


def test_plugin_counters_reach_metrics(launcher, mesh_pb2, mesh_pb2_grpc):
    """Plugins' own counters (ABI 1.1): the circuit breaker's overflows and
    the tracing exporter's lost spans show on /metrics and pass promtool."""
    from concurrent.futures import ThreadPoolExecutor
    slow = launcher.replica("slow", "--delay-ms", "300")
    port, admin = free_port(), free_port()
    dead = f"http://{HOST}:{free_port()}/v1/traces"
    filters = [{"plugin": "tracing", "config": {"collector": dead, "flush_interval": "100ms", "export_timeout": "200ms"}},
               {"plugin": "circuit_breaker", "config": {"max_requests": 1}}]
    doc = {"admin": {"address": f"{HOST}:{admin}"},
           "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
               {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": filters}]}],
           "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{slow.port}"}]}]}
    launcher.gateway(to_yaml(doc), port, name="gw-plugin-counters")
    with insecure_channel(port) as channel:
        stub = mesh_pb2_grpc.MeshServiceStub(channel)

        def one(i):
            try:
                stub.Process(mesh_pb2.ProcessRequest(request_id=str(i)), timeout=5)
                return "ok"
            except grpc.RpcError as error:
                return error.code().name
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = list(pool.map(one, range(8)))
    refused = outcomes.count("UNAVAILABLE")
    assert refused >= 5 and outcomes.count("ok") >= 1, outcomes
    url = f"http://{HOST}:{admin}/metrics"

    def counted():
        text = fetch(url)
        failed = samples(text, "meshgate_tracing_spans_failed_total").get('{service="meshgate"}', 0)
        return text if failed >= 1 else None
    text = wait_until(counted, timeout=10, message="the tracing exporter's failures on /metrics")
    overflows = samples(text, "meshgate_breaker_overflows_total")
    assert overflows['{cluster="mesh",limit="max_requests"}'] == refused, overflows
    assert overflows['{cluster="mesh",limit="max_retries"}'] == 0
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr


def request_series(text: str) -> dict[tuple[str, str], float]:
    """{(service, method): calls} from grpc_requests_total."""
    out: dict[tuple[str, str], float] = {}
    for labels, value in samples(text, "grpc_requests_total").items():
        service = re.search(r'service="((?:[^"\\]|\\.)*)"', labels).group(1)
        method = re.search(r'method="((?:[^"\\]|\\.)*)"', labels).group(1)
        out[(service, method)] = out.get((service, method), 0) + value
    return out


def flood(port: int, paths: list[str], window: int = 200, connections: int = 1, expect_ok: bool = False) -> None:
    """Calls every path once (UNIMPLEMENTED from a replica; OK from a
    `CatchAllUpstream` with `expect_ok`), `window` at a time, spread over
    `connections` connections (which the gateway spreads over its event
    loops)."""
    channels = [insecure_channel(port) for _ in range(connections)]
    try:
        for start in range(0, len(paths), window):
            futures = [channels[i % connections].unary_unary(p).future(b"", timeout=10)
                       for i, p in enumerate(paths[start:start + window], start)]
            for future in futures:
                try:
                    future.result()
                    assert expect_ok, "a replica answered a method it does not have"
                except grpc.RpcError as error:
                    assert not expect_ok and error.code() == grpc.StatusCode.UNIMPLEMENTED, (error.code(), error.details())
    finally:
        for channel in channels:
            channel.close()


class CatchAllUpstream:
    """An independent grpcio server that answers every method of every
    service OK with an empty message: each name is a real method here."""

    def __init__(self):
        from concurrent import futures

        class Everything(grpc.GenericRpcHandler):
            def service(self, details):
                return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers([Everything()])
        self.port = free_port()
        self.server.add_insecure_port(f"{HOST}:{self.port}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)


def test_a_flood_of_method_names_keeps_metrics_bounded(bins, launcher):
    """The method label comes from the client's :path. 5,000 names nobody
    serves, sent to a routed service, and one 300-byte name: /metrics keeps
    at most runtime.max_metric_series (default 1,000) series for all event
    loops together (names that end UNIMPLEMENTED take none), counts the
    rest as service="other",method="other", leaves the long name out,
    stays bounded in size and passes promtool."""
    replica = launcher.replica("m1")
    port, admin = free_port(), free_port()
    launcher.gateway(to_yaml({
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
            {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{replica.port}"}]}]}), port, name="gw-flood")
    long_name = "L" * 300
    # Over four connections, so every event loop sees new names: the cap is
    # for the loops together.
    flood(port, [f"/mesh.v1.MeshService/{long_name}"] + [f"/mesh.v1.MeshService/Unknown{i:05d}" for i in range(5000)], connections=4)
    text = fetch(f"http://{HOST}:{admin}/metrics")
    series = request_series(text)
    assert len(series) <= 1001, len(series)
    assert series[("other", "other")] >= 4001, series.get(("other", "other"))
    assert sum(series.values()) == 5001
    assert series == {("other", "other"): 5001}, len(series)
    assert long_name not in text
    assert samples(text, "meshgate_metric_series")[""] <= 1001
    # About 2.5 KB per series at most (its codes, 16 buckets, sum, count).
    assert len(text) < 1001 * 2600 + 20_000, len(text)
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]


def test_idle_series_expire_and_make_room(bins, launcher):
    """With runtime.max_metric_series 10 and metric_series_idle_timeout 1s,
    an upstream that serves every name: 20 names make 10 series and
    `other`; a second later with no calls they are gone, and a new name
    gets its own series again."""
    upstream = CatchAllUpstream()
    try:
        port, admin = free_port(), free_port()
        launcher.gateway(to_yaml({
            "runtime": {"max_metric_series": 10, "metric_series_idle_timeout": "1s"},
            "admin": {"address": f"{HOST}:{admin}"},
            "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
                {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
            "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{upstream.port}"}]}]}), port, name="gw-expiry")
        url = f"http://{HOST}:{admin}/metrics"
        flood(port, [f"/mesh.v1.MeshService/First{i}" for i in range(20)], window=1, expect_ok=True)
        series = request_series(fetch(url))
        assert len(series) == 11 and series[("other", "other")] == 10, series
        wait_until(lambda: not request_series(fetch(url)), timeout=10, interval=0.3, message="the idle series to expire")
        assert samples(fetch(url), "meshgate_metric_series")[""] == 0
        flood(port, ["/mesh.v1.MeshService/Later"], expect_ok=True)
        assert request_series(fetch(url)) == {("mesh.v1.MeshService", "Later"): 1}
    finally:
        upstream.stop()


def test_junk_method_names_leave_room_for_real_methods(bins, launcher, mesh_pb2, mesh_pb2_grpc):
    """With runtime.max_metric_series 10: 200 names the replica does not
    serve (UNIMPLEMENTED), called again and again as an attacker would to
    keep them from expiring, take no place; Process, called after them,
    gets its own series. Junk calls a client cuts short itself (a 1 ms
    deadline, ending before the UNIMPLEMENTED) take none either."""
    replica = launcher.replica("m1")
    port, admin = free_port(), free_port()
    launcher.gateway(to_yaml({
        "runtime": {"max_metric_series": 10},
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
            {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{replica.port}"}]}]}), port, name="gw-junk")
    url = f"http://{HOST}:{admin}/metrics"
    junk = [f"/mesh.v1.MeshService/Junk{i:03d}" for i in range(200)]
    flood(port, junk + junk, connections=2)
    with insecure_channel(port) as channel:
        stub = mesh_pb2_grpc.MeshServiceStub(channel)
        for i in range(20):
            with pytest.raises(grpc.RpcError) as cut:
                channel.unary_unary(f"/mesh.v1.MeshService/Cut{i}")(b"", timeout=0.001)
            assert cut.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED), cut.value
        for i in range(3):
            stub.Process(mesh_pb2.ProcessRequest(request_id=f"p{i}"), timeout=5)
    series = request_series(fetch(url))
    assert series.get(("mesh.v1.MeshService", "Process")) == 3, series
    assert set(series) == {("mesh.v1.MeshService", "Process"), ("other", "other")}, series
    assert samples(fetch(url), "meshgate_metric_series")[""] == 2  # Process and `other`
