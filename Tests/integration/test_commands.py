"""The operator's commands: `meshgate --version`, `plugin inspect`,
`reload` and `status`, and the events feed (/events) behind `status`."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

from conftest import Launcher
from meshkit import HOST, free_port, gateway_config, to_yaml, wait_until
from test_plugins import future_abi_plugin

import yaml


def meshgate(bins, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(bins.meshgate), *args], capture_output=True, text=True, timeout=timeout)


def debian_version(package: str) -> str:
    """The upstream part of an installed Debian package's version."""
    full = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=True).stdout
    return re.sub(r"^\d+:", "", full).split("-")[0].split("+")[0]


def test_version_names_the_abi_and_the_libraries_it_runs_with(bins):
    result = meshgate(bins, "--version")
    assert result.returncode == 0, result
    out = result.stdout
    assert re.search(r"^meshgate \d+\.\d+\.\d+$", out, re.M), out
    header = (bins.meshgate.parents[3] / "Sources/FilterABI/include/meshgate_filter.h").read_text() \
        if (bins.meshgate.parents[3] / "Sources").exists() else None
    if header:
        major = re.search(r"#define MG_ABI_MAJOR (\d+)", header).group(1)
        minor = re.search(r"#define MG_ABI_MINOR (\d+)", header).group(1)
        assert f"filter ABI {major}.{minor} (loads plugins built for {major}.0 to {major}.{minor})" in out, out
    assert f"nghttp2 {debian_version('libnghttp2-14')}" in out, out
    openssl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.split()[:2]
    assert " ".join(openssl) in out, (openssl, out)
    assert f"libyaml {debian_version('libyaml-0-2')}" in out, out


def test_plugin_inspect_describes_checks_abi_and_tries_configs(bins, tmp_path):
    retry = bins.meshgate.parent / "libRetry.so"
    described = meshgate(bins, "plugin", "inspect", str(retry))
    assert described.returncode == 0, described
    assert re.search(r"^plugin:\s+retry \S+$", described.stdout, re.M), described.stdout
    assert re.search(r"^kinds:\s+retry$", described.stdout, re.M), described.stdout
    assert re.search(r"^ABI:\s+needs 1\.\d+; this host offers 1\.\d+$", described.stdout, re.M), described.stdout
    assert re.search(r"^sha256:\s+[0-9a-f]{64}$", described.stdout, re.M), described.stdout
    accepted = meshgate(bins, "plugin", "inspect", str(retry), "--config", '{"max_attempts": 3, "initial_backoff": "50ms"}')
    assert accepted.returncode == 0 and "config:   accepted" in accepted.stdout, accepted
    refused = meshgate(bins, "plugin", "inspect", str(retry), "--config", '{"max_attempts": 9}')
    assert refused.returncode == 1, refused
    assert "config:   refused: max_attempts must be a whole number from 2 to 5, got 9" in refused.stdout, refused.stdout
    balancer = meshgate(bins, "plugin", "inspect", str(bins.meshgate.parent / "libRoundRobin.so"))
    assert balancer.returncode == 0 and re.search(r"^kinds:\s+balancer$", balancer.stdout, re.M), balancer.stdout

    # A plugin for another ABI major, and a file that is no plugin: exit 2, the path and the reason named.
    future = future_abi_plugin(tmp_path)
    wrong = meshgate(bins, "plugin", "inspect", str(future))
    assert wrong.returncode == 2 and str(future) in wrong.stderr and "built for filter ABI 2.3" in wrong.stderr, wrong
    text = tmp_path / "notes.txt"
    text.write_text("not a plugin")
    junk = meshgate(bins, "plugin", "inspect", str(text))
    assert junk.returncode == 2 and str(text) in junk.stderr, junk


def test_reload_status_and_events(bins, mesh, tmp_path):
    port, admin = free_port(), free_port()
    replicas = list(mesh.replicas.values())
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in replicas]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                                                 "filters": [{"plugin": "retry", "config": {"max_attempts": 2}}]}]))
    doc["admin"] = {"address": f"{HOST}:{admin}"}
    launch = Launcher(bins, tmp_path)
    try:
        gateway = launch.gateway(to_yaml(doc), port, name="gw-commands")
        target = ["--admin", f"{HOST}:{admin}"]

        status = meshgate(bins, "status", *target)
        assert status.returncode == 0, status
        lines = status.stdout.splitlines()
        assert all(len(line) <= 80 for line in lines), [l for l in lines if len(l) > 80]
        assert lines[0] == f"meshgate at {HOST}:{admin}: generation 1, ready", lines[0]
        assert any(re.match(rf"\s+public\s+{HOST}:{port}\s+plaintext\s+1 routes", l) for l in lines), status.stdout
        assert any(re.match(r"\s+mesh\s+3 endpoint\(s\), 3 in rotation", l) for l in lines), status.stdout
        for r in replicas:
            assert any(re.match(rf"\s+{HOST}:{r.port}\s+healthy\s+weight 1", l) for l in lines), status.stdout
        assert re.search(r"plugin\s+plugin loaded\s+.*plugin=retry", status.stdout), status.stdout

        # reload: ok, then refused with the reason (the running config stays).
        reloaded = meshgate(bins, "reload", *target)
        assert reloaded.returncode == 0 and reloaded.stdout.startswith("reloaded: generation 2 loaded from"), reloaded
        # --config finds the admin address in the config file.
        again = meshgate(bins, "reload", "--config", str(gateway.config_path))
        assert again.returncode == 0 and "generation 3" in again.stdout, again
        broken = dict(doc)
        broken["listeners"] = [dict(doc["listeners"][0], routes=[dict(doc["listeners"][0]["routes"][0], filters=[
            {"plugin": "retry", "config": {"max_attempts": 9}}])])]
        gateway.config_path.write_text(to_yaml(broken))
        refused = meshgate(bins, "reload", *target)
        assert refused.returncode == 1 and "max_attempts must be a whole number from 2 to 5, got 9" in refused.stderr, refused
        gateway.config_path.write_text(to_yaml(doc))
        nobody = meshgate(bins, "reload", "--admin", f"{HOST}:{free_port()}")
        assert nobody.returncode == 2 and "no answer" in nobody.stderr, nobody

        # The events feed holds what happened, oldest first, with reasons.
        events = json.loads(urllib.request.urlopen(f"http://{HOST}:{admin}/events", timeout=10).read())["events"]
        kinds = [(e["kind"], e["message"]) for e in events]
        assert ("plugin", "plugin loaded") in kinds
        assert kinds.count(("reload", "reloaded")) == 2, kinds
        failed = [e for e in events if e["message"] == "reload failed; the running config stays"]
        assert len(failed) == 1 and "max_attempts" in failed[0]["fields"]["error"], failed
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        status = meshgate(bins, "status", *target, "--events", "3")
        assert "reload failed; the running config stays" in status.stdout, status.stdout
        assert status.stdout.count("\n  ") >= 3
    finally:
        launch.stop_all()
    down = meshgate(bins, "status", "--admin", f"{HOST}:{admin}")
    assert down.returncode == 2 and "no usable answer" in down.stderr, down
