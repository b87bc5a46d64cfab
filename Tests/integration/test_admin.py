"""The admin server on several addresses: the full one (loopback) and
read-only ones (the ports a container publishes: the description's
:8080/dashboard and :9090/metrics). Read-only addresses serve every view
and refuse what changes state; no address shows key material."""

from __future__ import annotations

import http.client
import json

import pki
from conftest import Launcher
from meshkit import HOST, free_port, to_yaml


def request(port: int, method: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_read_only_admin_addresses_serve_views_and_refuse_changes(bins, mesh, tmp_path):
    certs = pki.dev_pki(tmp_path / "certs")
    port, admin, dashboard, metrics = free_port(), free_port(), free_port(), free_port()
    doc = {
        "admin": {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{dashboard}", f"{HOST}:{metrics}"]},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                       "tls": {"cert": "certs/server.pem", "key": "certs/server.key", "ca": "certs/ca.pem", "client_auth": "required"},
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                                   "filters": [{"plugin": "retry", "config": {"max_attempts": 2}}]}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in mesh.replicas.values()]}],
    }
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-admin")
        key_text = (certs / "server.key").read_text()
        for read_only in (dashboard, metrics):
            for path, marker in (("/metrics", "grpc_active_connections"), ("/dashboard", "<html"), ("/dashboard/data", "{"),
                                 ("/healthz", "ok"), ("/ready", "ready"), ("/clusters", "mesh"), ("/plugins", "retry"),
                                 ("/config", "read_only_addresses")):
                status, body = request(read_only, "GET", path)
                assert status == 200 and marker in body, (read_only, path, status, body[:200])
            status, body = request(read_only, "POST", "/reload")
            # The refusal names the setting, not its value (issue 26).
            assert status == 403 and "admin.address" in body and str(admin) not in body, (status, body)
            for method in ("PUT", "DELETE", "PATCH"):
                status, body = request(read_only, method, "/config")
                assert status == 405 and "read-only" in body, (method, status, body)
            status, body = request(read_only, "GET", "/reload")
            assert status == 403, (status, body)
            # /config names no private key path and holds no key material.
            config = json.loads(request(read_only, "GET", "/config")[1])
            assert config["listeners"][0]["tls"]["key"] == "[redacted]"
            text = json.dumps(config)
            assert "server.key" not in text and "PRIVATE KEY" not in text and key_text[40:80] not in text
        # The full address still reloads, and refuses other methods.
        status, body = request(admin, "POST", "/reload")
        assert status == 200 and "generation 2" in body, (status, body)
        status, _ = request(admin, "DELETE", "/config")
        assert status == 405
        # The reload was one: the read-only addresses saw no change.
        assert "meshgate_config_reloads_total{result=\"ok\"} 1" in request(metrics, "GET", "/metrics")[1]
    finally:
        launch.stop_all()


def test_a_read_only_address_that_cannot_bind_stops_startup(bins, tmp_path):
    import socket
    import subprocess
    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        config = tmp_path / "mesh.yaml"
        config.write_text(to_yaml({
            "admin": {"address": f"{HOST}:{free_port()}", "read_only_addresses": [f"{HOST}:{taken}"]},
            "listeners": [{"name": "l", "address": f"{HOST}:{free_port()}", "routes": []}], "clusters": []}))
        result = subprocess.run([str(bins.meshgate), "run", "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert f"admin: cannot listen on {HOST}:{taken}" in result.stderr, result.stderr
    finally:
        holder.close()
