"""Small helpers shared by the coverage tests of issue 27 (test_reload_restart_keys,
test_http2_budgets, test_resilience_limits, test_tls_rotation_more,
test_grpc_web_errors, test_health_list, test_cli, test_dns_aaaa): admin
requests, /metrics samples and a config with an admin address. No fixtures."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from typing import Optional

from meshkit import HOST, addr, free_port, to_yaml

SERVICE = "mesh.v1.MeshService"
PROCESS = "/mesh.v1.MeshService/Process"


def admin_get(admin_port: int, path: str, timeout: float = 10.0) -> tuple[int, str]:
    """GET on the admin address: (HTTP status, body)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{admin_port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def admin_json(admin_port: int, path: str) -> dict:
    status, body = admin_get(admin_port, path)
    assert status == 200, (path, status, body[:500])
    return json.loads(body)


def post_reload(admin_port: int) -> tuple[int, str]:
    """POST /reload: (HTTP status, body)."""
    request = urllib.request.Request(f"http://{HOST}:{admin_port}/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def samples(text: str, name: str) -> dict[str, float]:
    """{label text: value} of every sample of metric `name` in a /metrics text."""
    out = {}
    for line in text.splitlines():
        m = re.match(rf"^{re.escape(name)}(\{{.*\}})? (\S+)$", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def metric_sum(admin_port: int, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`
    (0 when there is none)."""
    status, text = admin_get(admin_port, "/metrics")
    assert status == 200, (status, text[:300])
    total = 0.0
    for label_text, value in samples(text, name).items():
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += value
    return total


def config_doc(port: int, admin_port: Optional[int], clusters: dict[str, list], routes: list[dict],
               runtime: Optional[dict] = None, listener: Optional[dict] = None,
               cluster_extra: Optional[dict[str, dict]] = None) -> dict:
    """A native config as a dict: one listener `public` on 127.0.0.1:`port`,
    an admin address (when given), clusters name -> endpoint ports."""
    doc: dict = {"runtime": {"drain_timeout": "2s", **(runtime or {})}}
    if admin_port is not None:
        doc["admin"] = {"address": addr(admin_port)}
    doc["listeners"] = [{"name": "public", "address": addr(port), **(listener or {}), "routes": routes}]
    doc["clusters"] = []
    for name, ports in clusters.items():
        doc["clusters"].append({"name": name, **((cluster_extra or {}).get(name, {})),
                                "endpoints": [{"address": addr(p)} for p in ports]})
    return doc


def mesh_route(**fields) -> dict:
    return {"match": {"service": SERVICE}, "cluster": "mesh", **fields}


def dead_port() -> int:
    """A loopback port nobody listens on (connects are refused)."""
    return free_port()


__all__ = ["admin_get", "admin_json", "post_reload", "samples", "metric_sum", "config_doc", "mesh_route",
           "dead_port", "to_yaml", "SERVICE", "PROCESS"]
