"""deploy/kubernetes: the manifests validate against a recent Kubernetes
schema (kubernetes-validate, strict), and hold together where a schema
cannot see: selectors match the pods, the probes reach the config's
health-only listener, the grace period outlasts preStop + drain_timeout,
the config in the ConfigMap passes `meshgate validate`, and the
kustomization lists every file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import pki
from conftest import REPO_ROOT

K8S = REPO_ROOT / "deploy/kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
KUBERNETES_VERSION = "1.37.0"


def resources() -> list[dict]:
    docs = []
    for path in MANIFESTS:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def find(kind: str, name: str) -> dict:
    return next(d for d in resources() if d["kind"] == kind and d["metadata"]["name"] == name)


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", text)
    assert match, text
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match.group(2)]


def test_the_manifests_validate_strictly():
    exe = shutil.which("kubernetes-validate")
    if exe is None:
        pytest.fail("kubernetes-validate not found: pip install kubernetes-validate (Tests/integration/requirements.txt)")
    result = subprocess.run([exe, "--strict", "-k", KUBERNETES_VERSION, *map(str, MANIFESTS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = result.stdout.count("passed for resource")
    assert passed == len(resources()) >= 6, result.stdout


def test_the_kustomization_lists_every_manifest():
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS]


def test_selectors_match_their_pods():
    docs = resources()
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in docs if d["kind"] == "Deployment"}
    for d in docs:
        if d["kind"] == "Deployment":
            assert d["spec"]["selector"]["matchLabels"].items() <= pods[d["metadata"]["name"]].items(), d["metadata"]["name"]
        if d["kind"] in ("Service", "PodDisruptionBudget"):
            selector = d["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            matched = [name for name, labels in pods.items() if selector.items() <= labels.items()]
            assert len(matched) == 1, f"{d['kind']} {d['metadata']['name']} selects {matched}"
    assert [n for n, l in pods.items() if find("Service", "grpc-mesh")["spec"]["selector"].items() <= l.items()] == ["grpc-mesh"]
    assert [n for n, l in pods.items() if find("Service", "mesh-replicas")["spec"]["selector"].items() <= l.items()] == ["mesh-replicas"]
    assert find("Service", "mesh-replicas")["spec"]["clusterIP"] == "None", "discovery needs a headless Service"


def gateway_config() -> dict:
    return yaml.safe_load(find("ConfigMap", "meshgate-config")["data"]["mesh.yaml"])


def test_probes_grace_period_and_discovery_agree_with_the_config():
    config = gateway_config()
    pod = find("Deployment", "grpc-mesh")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    health_ports = {int(l["address"].rsplit(":", 1)[1]) for l in config["listeners"] if l.get("health_only")}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] in health_ports, probe
    routed = {r["match"].get("service") for l in config["listeners"] for r in l.get("routes", [])}
    assert container["readinessProbe"]["grpc"]["service"] in routed
    public = [l for l in config["listeners"] if not l.get("health_only")]
    assert all(l["tls"]["client_auth"] == "required" for l in public), "client traffic stays on mutual TLS"
    ports = {p["containerPort"] for p in container["ports"]}
    assert {int(l["address"].rsplit(":", 1)[1]) for l in config["listeners"]} <= ports
    # Grace period: preStop, then the drain, then a margin.
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["terminationGracePeriodSeconds"] > float(pre_stop[1]) + seconds(config["runtime"]["drain_timeout"])
    # The config file is where the ConfigMap is mounted.
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"] == ["run", "--config", f"{mount['mountPath']}/mesh.yaml"]
    # Discovery names the headless Service and its port.
    dns = config["clusters"][0]["discovery"]["dns"]
    replicas = find("Service", "mesh-replicas")
    assert dns["name"] == replicas["metadata"]["name"] and dns["port"] == replicas["spec"]["ports"][0]["port"]
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]


def test_the_configmap_config_is_valid(bins, tmp_path):
    """`meshgate validate` on the ConfigMap's mesh.yaml, its certificate
    paths pointed at a development PKI (the Secret's files)."""
    certs = pki.dev_pki(tmp_path / "certs")
    text = find("ConfigMap", "meshgate-config")["data"]["mesh.yaml"].replace("/etc/meshgate/certs/", f"{certs}/")
    config = tmp_path / "mesh.yaml"
    config.write_text(text)
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_container_images_default_config_is_valid(bins, tmp_path):
    """deploy/container/mesh.yaml (the image's /etc/meshgate/mesh.yaml)
    with certificates where the image expects them mounted."""
    pki.dev_pki(tmp_path / "certs")
    shutil.copy(REPO_ROOT / "deploy/container/mesh.yaml", tmp_path / "mesh.yaml")
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(tmp_path / "mesh.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
