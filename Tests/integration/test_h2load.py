"""Raw HTTP/2 load through the gateway with nghttp2's tools: h2load for volume,
nghttp for the trailers h2load cannot show."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from meshkit import grpc_frame, rss_kib

H2LOAD = "/usr/bin/h2load"
GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers"]


def tool(path_or_name: str) -> str:
    exe = shutil.which(path_or_name)
    if exe is None:
        pytest.fail(f"{path_or_name} not found: apt-get install nghttp2-client")
    return exe


@pytest.fixture
def process_body(mesh, tmp_path):
    """A file holding one gRPC-framed ProcessRequest."""
    request = mesh.pb2.ProcessRequest(request_id="h2load", data="load")
    path = tmp_path / "process.body"
    path.write_bytes(grpc_frame(request.SerializeToString()))
    return path


def process_url(mesh) -> str:
    return f"http://{mesh.address}/mesh.v1.MeshService/Process"


def process_calls(mesh) -> tuple[int, int, int]:
    """(Process calls started, calls completed, calls cancelled), summed over
    the replicas (their own SampleControl counters)."""
    stats = mesh.stats().values()
    return (sum(s.calls_by_method.get("Process", 0) for s in stats),
            sum(s.completed for s in stats), sum(s.cancelled for s in stats))


def test_h2load_2000_unary_requests(mesh, process_body):
    """2,000 unary calls over 4 connections x 10 streams all get 2xx answers,
    and all 2,000 reach a replica and complete there: h2load counts an HTTP
    200 carrying grpc-status != 0 (a call the gateway failed itself) as a
    success, so the replicas' own counters are compared with what it sent."""
    calls_before, completed_before, cancelled_before = process_calls(mesh)
    result = subprocess.run(
        [tool(H2LOAD), "-n", "2000", "-c", "4", "-m", "10", "-d", str(process_body),
         *GRPC_HEADERS, process_url(mesh)],
        capture_output=True, text=True, timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "2000 succeeded" in out, out
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert codes, out
    assert tuple(int(c) for c in codes.groups()) == (2000, 0, 0, 0), out
    calls, completed, cancelled = process_calls(mesh)
    assert (calls - calls_before, completed - completed_before, cancelled - cancelled_before) == (2000, 2000, 0), out


def test_nghttp_sees_grpc_status_ok(mesh, process_body):
    """The same request with nghttp shows the response trailers carry
    grpc-status: 0 (h2load only sees :status)."""
    result = subprocess.run(
        [tool("nghttp"), "-v", "-n", "-t", "10", "-d", str(process_body), *GRPC_HEADERS,
         process_url(mesh)],
        capture_output=True, timeout=30)
    out = result.stdout.decode("utf-8", errors="replace")
    assert result.returncode == 0, out + result.stderr.decode(errors="replace")
    assert re.search(r"\bgrpc-status: 0\s*$", out, re.MULTILINE), out
    assert re.search(r":status: 200\b", out), out


@pytest.mark.parametrize("filters", [[], [{"plugin": "retry"}, {"plugin": "circuit_breaker"}]])
def test_calls_leave_no_memory_behind(mesh, launcher, process_body, filters):
    """40,000 calls after a 10,000-call warm-up grow the gateway's RSS by
    less than 16 MiB: every call, its attempts and its plugin state are
    freed (a call kept alive costs about 2 KiB, 80 MiB here)."""
    from attacks import metric_samples
    from meshkit import HOST, free_port, gateway_config, wait_until
    port, admin = free_port(), free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": filters}
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route])
    config += f"admin:\n  address: {HOST}:{admin}\n"
    gateway = launcher.gateway(config, port, name="gw-leak")
    url = f"http://127.0.0.1:{port}/mesh.v1.MeshService/Process"
    sent = [0]

    def load(n):
        result = subprocess.run([tool(H2LOAD), "-n", str(n), "-c", "8", "-m", "10", "-d", str(process_body),
                                 *GRPC_HEADERS, url], capture_output=True, text=True, timeout=300)
        assert f"{n} succeeded" in result.stdout, result.stdout + result.stderr
        sent[0] += n
        # h2load counts HTTP 200 with grpc-status != 0 as a success: every
        # call it sent must be one the gateway counted with code OK.
        def counted():
            counts = metric_samples(admin, "grpc_requests_total")
            return sum(counts.values()) >= sent[0] and counts
        counts = wait_until(counted, timeout=10, message=f"the gateway to count {sent[0]} calls")
        ok = sum(v for labels, v in counts.items() if 'code="OK"' in labels and 'method="Process"' in labels)
        assert ok == sent[0] == sum(counts.values()), counts
    load(10000)
    before = rss_kib(gateway.proc.pid)
    load(40000)
    grown = rss_kib(gateway.proc.pid) - before
    assert grown < 16 * 1024, f"RSS grew by {grown} KiB over 40,000 calls"
