"""deploy/kubernetes: the manifests validate against a recent Kubernetes
schema (kubernetes-validate, strict), and hold together where a schema
cannot see: selectors match the pods, the probes reach the config's
health-only listener, the grace period outlasts preStop + drain_timeout,
the config in the ConfigMap passes `meshgate validate`, and the
kustomization lists every file.

Secrets: the `kubectl create secret` commands of docs/operations.md are read and the
Secrets they make are built from a fresh scripts/dev-certs.sh PKI (what
kubectl does with --from-file=KEY=PATH: the file's bytes under KEY), then
validated like the manifests: one Secret per workload with only its files
and no CA key, mounted with `items:` naming its keys and the files each
workload reads, different identities for the gateway and the replicas. No
pod gets an API token, and the NetworkPolicies admit only the product's
traffic. Last, a replica and the gateway run on loopback from those
Secrets' files, with the manifests' arguments and the ConfigMap's config."""

from __future__ import annotations

import base64
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

import pki
from conftest import REPO_ROOT, Launcher
from meshkit import HOST, free_port, to_yaml, wait_until

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


FILES_IN_DOCS = "config/"   # the documented commands take files from config/certs (and must not from config/ca)
TLS_KEYS = {"tls.crt", "tls.key", "ca.crt"}


def documented_secret_commands() -> list[list[str]]:
    """The `kubectl create secret` commands of docs/operations.md's Kubernetes section."""
    page = (REPO_ROOT / "docs" / "operations.md").read_text()
    section = page[page.index("\n## Kubernetes\n"):page.index("\n## Commands\n")]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith("kubectl create secret"):
                commands.append(shlex.split(line))
    return commands


def secret_from_command(argv: list[str], config: Path) -> dict:
    """The Secret `kubectl create secret generic NAME [--type=T]
    --from-file=[KEY=]PATH...` makes, the documented config/ being `config`."""
    assert argv[:4] == ["kubectl", "create", "secret", "generic"] and not argv[4].startswith("-"), argv
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": argv[4]}, "type": "Opaque", "data": {}}
    for arg in argv[5:]:
        if arg.startswith("--type="):
            secret["type"] = arg.split("=", 1)[1]
        elif arg.startswith("--from-file="):
            spec = arg.split("=", 1)[1]
            key, path = spec.split("=", 1) if "=" in spec else (Path(spec).name, spec)
            assert path.startswith(FILES_IN_DOCS), f"{arg}: the documented files come from {FILES_IN_DOCS}"
            assert key not in secret["data"], f"{key} twice in {argv[4]}"
            secret["data"][key] = base64.b64encode((config / path[len(FILES_IN_DOCS):]).read_bytes()).decode()
        else:
            pytest.fail(f"unexpected argument {arg!r} in {shlex.join(argv)}")
    return secret


@pytest.fixture
def dev_secrets(tmp_path) -> tuple[Path, dict[str, dict]]:
    """A fresh dev PKI laid out as the documented one (config/certs, its CA
    in config/ca), and docs/operations.md's Secrets made from it."""
    certs = pki.dev_pki(tmp_path / "config" / "certs")
    commands = documented_secret_commands()
    assert len(commands) >= 2, "docs/operations.md creates one Secret per workload"
    secrets = [secret_from_command(c, certs.parent) for c in commands]
    names = [s["metadata"]["name"] for s in secrets]
    assert len(set(names)) == len(names), names
    return certs, dict(zip(names, secrets))


def data_of(secret: dict, key: str) -> bytes:
    return base64.b64decode(secret["data"][key])


def public_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def deployments() -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in resources() if d["kind"] == "Deployment"}


def cert_volume(deployment: dict) -> tuple[dict, dict]:
    """The pod's Secret volume and where its container mounts it."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if "secret" in v]
    assert len(volumes) == 1, f"{deployment['metadata']['name']}: one Secret volume, got {volumes}"
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volumes[0]["name"]]
    assert len(mounts) == 1 and mounts[0].get("readOnly") is True, mounts
    return volumes[0]["secret"], mounts[0]


def mounted_files(deployment: dict) -> dict[str, str]:
    """Path in the container -> the Secret key it holds."""
    secret, mount = cert_volume(deployment)
    return {f"{mount['mountPath']}/{item['path']}": item["key"] for item in secret["items"]}


def materialize(deployment: dict, secret: dict, into: Path) -> Path:
    """The files the pod's Secret volume holds, as the kubelet writes them."""
    volume, _ = cert_volume(deployment)
    into.mkdir(parents=True)
    for item in volume["items"]:
        (into / item["path"]).write_bytes(data_of(secret, item["key"]))
        (into / item["path"]).chmod(0o400)
    return into


def gateway_cert_paths(config: dict) -> set[str]:
    return {v for t in [l.get("tls") for l in config["listeners"]] + [c.get("tls") for c in config["clusters"]] if t
            for k, v in t.items() if k in ("cert", "key", "ca")}


def replica_cert_paths(deployment: dict) -> dict[str, str]:
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return {flag: args[i + 1] for i, flag in enumerate(args) if flag in ("--tls-cert", "--tls-key", "--tls-ca")}


def test_each_workload_has_its_own_secret_with_only_its_files_and_no_ca_key(dev_secrets, tmp_path):
    certs, secrets = dev_secrets
    # The Secrets validate like the manifests.
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump_all(list(secrets.values())))
    result = subprocess.run([shutil.which("kubernetes-validate") or "kubernetes-validate", "--strict", "-k", KUBERNETES_VERSION,
                             str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.count("passed for resource") == len(secrets), result.stdout + result.stderr
    # One Secret per workload: each used by exactly one Deployment, each
    # Deployment using its own.
    used = {name: cert_volume(d)[0]["secretName"] for name, d in deployments().items()}
    assert sorted(used.values()) == sorted(secrets), f"Deployments use {used}, docs/operations.md makes {sorted(secrets)}"
    assert len(set(used.values())) == len(used), used
    ca_cert = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    ca_key_bytes = (pki.ca_dir_of(certs) / "ca.key").read_bytes()
    for name, secret in secrets.items():
        # Only the workload's certificate, its key and the CA certificate.
        assert secret["type"] == "kubernetes.io/tls" and set(secret["data"]) == TLS_KEYS, (name, sorted(secret["data"]))
        assert data_of(secret, "ca.crt") == (certs / "ca.pem").read_bytes(), name
        # No CA key, by any name or in any value.
        for k, value in secret["data"].items():
            raw = base64.b64decode(value)
            assert ca_key_bytes.strip() not in raw, f"{name}/{k} holds the CA key"
            if b"PRIVATE KEY" in raw:
                held = serialization.load_pem_private_key(raw, password=None)
                assert public_der(held.public_key()) != public_der(ca_cert.public_key()), f"{name}/{k} is the CA key"
            else:
                assert not x509.load_pem_x509_certificate(raw).extensions.get_extension_for_class(
                    x509.BasicConstraints).value.ca or k == "ca.crt", f"{name}/{k}"
        cert = x509.load_pem_x509_certificate(data_of(secret, "tls.crt"))
        cert.verify_directly_issued_by(ca_cert)
        key = serialization.load_pem_private_key(data_of(secret, "tls.key"), password=None)
        assert public_der(key.public_key()) == public_der(cert.public_key()), f"{name}: tls.key is not tls.crt's key"


def test_each_pod_mounts_its_secret_with_items_its_config_reads(dev_secrets):
    _, secrets = dev_secrets
    for name, deployment in deployments().items():
        volume, _ = cert_volume(deployment)
        items = volume.get("items")
        assert items, f"{name}: the Secret is mounted with items: naming its files"
        keys = [item["key"] for item in items]
        assert sorted(keys) == sorted(secrets[volume["secretName"]]["data"]), f"{name}: items {keys} are not its Secret's keys"
        assert len({item["path"] for item in items}) == len(items), items
        assert "optional" not in volume or volume["optional"] is False, "a missing key must stop the pod"
    # What each workload reads is exactly what its Secret volume holds.
    gateway = deployments()["grpc-mesh"]
    assert gateway_cert_paths(gateway_config()) == set(mounted_files(gateway)), \
        (gateway_cert_paths(gateway_config()), mounted_files(gateway))
    replicas = deployments()["mesh-replicas"]
    assert set(replica_cert_paths(replicas).values()) == set(mounted_files(replicas)), replica_cert_paths(replicas)
    # And by role: the certificate and key files hold tls.crt and tls.key.
    config = gateway_config()
    listener_tls = next(l["tls"] for l in config["listeners"] if l.get("tls"))
    cluster_tls = config["clusters"][0]["tls"]
    for tls in (listener_tls, cluster_tls):
        assert [mounted_files(gateway)[tls[k]] for k in ("cert", "key", "ca")] == ["tls.crt", "tls.key", "ca.crt"], tls
    assert [mounted_files(replicas)[replica_cert_paths(replicas)[f]] for f in ("--tls-cert", "--tls-key", "--tls-ca")] == \
        ["tls.crt", "tls.key", "ca.crt"]


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)


def test_the_gateway_and_the_replicas_have_different_identities(dev_secrets):
    _, secrets = dev_secrets
    used = {name: cert_volume(d)[0]["secretName"] for name, d in deployments().items()}
    gateway = x509.load_pem_x509_certificate(data_of(secrets[used["grpc-mesh"]], "tls.crt"))
    replica = x509.load_pem_x509_certificate(data_of(secrets[used["mesh-replicas"]], "tls.crt"))
    assert spiffe_ids(gateway) == ["spiffe://meshgate.local/gateway"]
    assert spiffe_ids(replica) == ["spiffe://meshgate.local/replica"]
    assert public_der(gateway.public_key()) != public_der(replica.public_key())
    assert data_of(secrets[used["grpc-mesh"]], "tls.key") != data_of(secrets[used["mesh-replicas"]], "tls.key")
    # The gateway is a server to clients and a client to the replicas; the
    # replicas only serve, under the name the gateway checks.
    usages = lambda c: set(c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)  # noqa: E731
    assert usages(gateway) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert usages(replica) == {ExtendedKeyUsageOID.SERVER_AUTH}
    server_name = gateway_config()["clusters"][0]["tls"]["server_name"]
    assert server_name in replica.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert server_name not in gateway.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def test_no_pod_gets_an_api_token():
    accounts = {d["metadata"]["name"]: d for d in resources() if d["kind"] == "ServiceAccount"}
    names = []
    for name, deployment in deployments().items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        account = pod.get("serviceAccountName")
        assert account in accounts, f"{name}: its own ServiceAccount, in the manifests ({account})"
        assert accounts[account].get("automountServiceAccountToken") is False, account
        names.append(account)
    assert len(set(names)) == len(names) == 2, names


def pod_labels() -> dict[str, dict]:
    return {name: d["spec"]["template"]["metadata"]["labels"] for name, d in deployments().items()}


def selected(selector: dict) -> list[str]:
    """The Deployments whose pods a podSelector (matchLabels only) picks."""
    assert set(selector) <= {"matchLabels"} and selector.get("matchLabels"), f"select by labels: {selector}"
    return [name for name, labels in pod_labels().items() if selector["matchLabels"].items() <= labels.items()]


def container_ports(deployment: str) -> dict[object, int]:
    """Port name and number -> number, for the Deployment's container."""
    ports = {}
    for p in deployments()[deployment]["spec"]["template"]["spec"]["containers"][0]["ports"]:
        ports[p["containerPort"]] = ports[p["name"]] = p["containerPort"]
    return ports


def rule_ports(rule: dict, deployment: str) -> set[tuple[str, int]]:
    assert rule.get("ports"), f"a rule names its ports: {rule}"
    out = set()
    for p in rule["ports"]:
        assert "endPort" not in p and p.get("protocol") in ("TCP", "UDP"), p
        number = container_ports(deployment).get(p["port"]) if deployment else p["port"]
        assert isinstance(number, int), f"{p} is not a port of {deployment}"
        out.add((p["protocol"], number))
    return out


def test_the_network_policies_admit_only_what_the_product_needs():
    policies = {d["metadata"]["name"]: d["spec"] for d in resources() if d["kind"] == "NetworkPolicy"}
    by_workload = {}
    for name, spec in policies.items():
        picked = selected(spec["podSelector"])
        assert len(picked) == 1, f"NetworkPolicy {name} selects {picked}"
        assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"], f"{name}: isolated both ways"
        assert picked[0] not in by_workload, f"{picked[0]} has two policies"
        by_workload[picked[0]] = spec
    assert sorted(by_workload) == sorted(deployments()), "every workload is isolated"

    # Ingress: exactly the ports the workload's Services expose, on its containers.
    for workload, spec in by_workload.items():
        admitted = set().union(*(rule_ports(rule, workload) for rule in spec.get("ingress", [])))
        exposed = {("TCP", container_ports(workload)[p["targetPort"]]) for d in resources() if d["kind"] == "Service"
                   and workload in selected({"matchLabels": d["spec"]["selector"]}) for p in d["spec"]["ports"]}
        assert admitted == exposed, f"{workload}: admits {admitted}, its Services expose {exposed}"
    config = gateway_config()
    listening = {int(l["address"].rsplit(":", 1)[1]) for l in config["listeners"]}
    public = {int(l["address"].rsplit(":", 1)[1]) for l in config["listeners"] if not l.get("health_only")}
    admitted = {port for _, port in set().union(*(rule_ports(r, "grpc-mesh") for r in by_workload["grpc-mesh"]["ingress"]))}
    assert admitted == public and listening - public, "clients reach the public listener; probes come from the node"
    assert config["admin"]["address"].startswith("127.0.0.1:"), "the admin API stays on loopback"
    for address in config["admin"]["read_only_addresses"]:
        assert int(address.rsplit(":", 1)[1]) not in admitted, f"{address} is closed by default"
    # The replicas: from the gateway's pods only, and nothing out.
    for rule in by_workload["mesh-replicas"]["ingress"]:
        assert rule.get("from"), "the replicas are reached by the gateway only"
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"} and selected(peer["podSelector"]) == ["grpc-mesh"], peer
    assert by_workload["mesh-replicas"]["egress"] == [], "the replicas call nothing"

    # The gateway's egress: the replicas on the port discovery names, and DNS.
    egress = by_workload["grpc-mesh"]["egress"]
    assert all(rule.get("to") for rule in egress), "every egress rule names its peers"
    to_pods = [r for r in egress if all(set(peer) == {"podSelector"} for peer in r["to"])]
    assert len(to_pods) == 1 and [selected(p["podSelector"]) for p in to_pods[0]["to"]] == [["mesh-replicas"]], to_pods
    assert rule_ports(to_pods[0], "mesh-replicas") == {("TCP", config["clusters"][0]["discovery"]["dns"]["port"])}
    dns = [r for r in egress if r is not to_pods[0]]
    assert len(dns) == 1 and rule_ports(dns[0], "") == {("UDP", 53), ("TCP", 53)}, dns
    assert dns[0]["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                             "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], dns


def test_the_configmap_config_is_valid(bins, dev_secrets, tmp_path):
    """`meshgate validate` on the ConfigMap's mesh.yaml, its certificate
    paths pointed at the files the gateway's Secret volume holds (only
    those: a file it reads from elsewhere would not be found)."""
    _, secrets = dev_secrets
    gateway = deployments()["grpc-mesh"]
    files = materialize(gateway, secrets[cert_volume(gateway)[0]["secretName"]], tmp_path / "mounted")
    mount = cert_volume(gateway)[1]["mountPath"]
    text = find("ConfigMap", "meshgate-config")["data"]["mesh.yaml"].replace(f"{mount}/", f"{files}/")
    config = tmp_path / "mesh.yaml"
    config.write_text(text)
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workloads_run_from_their_secrets_and_serve_a_client(bins, dev_secrets, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """A replica with the Deployment's TLS arguments and the gateway with
    the ConfigMap's config, each reading only its own Secret's files, on
    loopback (the cluster's DNS discovery replaced by the replica's
    address, the listeners moved to free ports): the gateway verifies the
    replica by the name the ConfigMap gives and presents its own identity,
    and a client with client.pem calls through it."""
    certs, secrets = dev_secrets
    launch = Launcher(bins, tmp_path)
    try:
        replicas = deployments()["mesh-replicas"]
        replica_files = materialize(replicas, secrets[cert_volume(replicas)[0]["secretName"]], tmp_path / "replica")
        replica_mount = cert_volume(replicas)[1]["mountPath"]
        tls_args = [a for flag, path in replica_cert_paths(replicas).items()
                    for a in (flag, path.replace(f"{replica_mount}/", f"{replica_files}/"))]
        replica = launch.replica("k8s-replica", *tls_args)

        gateway = deployments()["grpc-mesh"]
        gateway_files = materialize(gateway, secrets[cert_volume(gateway)[0]["secretName"]], tmp_path / "gateway")
        gateway_mount = cert_volume(gateway)[1]["mountPath"]
        config = yaml.safe_load(find("ConfigMap", "meshgate-config")["data"]["mesh.yaml"]
                                .replace(f"{gateway_mount}/", f"{gateway_files}/"))
        config["runtime"]["drain_timeout"] = "1s"
        config["admin"] = {"address": f"{HOST}:{free_port()}"}
        ports = {}
        for listener in config["listeners"]:
            ports[listener["name"]] = free_port()
            listener["address"] = f"{HOST}:{ports[listener['name']]}"
        cluster = config["clusters"][0]
        del cluster["discovery"]
        cluster["endpoints"] = [{"address": f"{HOST}:{replica.port}"}]
        public = next(l["name"] for l in config["listeners"] if not l.get("health_only"))
        launch.gateway(to_yaml(config), ports[public], name="k8s-gateway")

        creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes(),
                                             private_key=(certs / "client.key").read_bytes(),
                                             certificate_chain=(certs / "client.pem").read_bytes())
        with grpc.secure_channel(f"localhost:{ports[public]}", creds) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)

            def served():
                try:
                    return stub.Process(mesh_pb2.ProcessRequest(request_id="k8s", data="hi"), timeout=5)
                except grpc.RpcError:
                    return None
            reply = wait_until(served, timeout=20, message="a call through the gateway to the replica")
            assert reply.result == "processed: hi" and reply.replica_id == "k8s-replica"
    finally:
        launch.stop_all()


def test_the_container_images_default_config_is_valid(bins, tmp_path):
    """deploy/container/mesh.yaml (the image's /etc/meshgate/mesh.yaml)
    with the gateway's files, and only those, where the image expects them
    mounted (docs/operations.md "Container image")."""
    workload = pki.dev_pki(tmp_path / "pki")
    (tmp_path / "certs").mkdir()
    for name in ("ca.pem", "server.pem", "server.key"):
        shutil.copy(workload / name, tmp_path / "certs" / name)
    shutil.copy(REPO_ROOT / "deploy/container/mesh.yaml", tmp_path / "mesh.yaml")
    result = subprocess.run([str(bins.meshgate), "validate", "--config", str(tmp_path / "mesh.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
