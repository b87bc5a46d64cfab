"""Fixtures for Meshgate's end-to-end tests.

Binaries come from $MESHGATE_BIN_DIR, or else from
`swift build -c release --show-bin-path` (build them first with
`swift build -c release`). Python stubs for proto/mesh.proto are generated
once per session into a temp dir.

Main fixtures:
  bins            -> Binaries(meshgate, mesh_sample)
  mesh_pb2, mesh_pb2_grpc
  mesh (session)  -> 3 replicas r1 r2 r3 and one gateway in front of them
  launcher        -> starts extra replicas / gateways for one test, stops them after
  gateway_channel -> a fresh channel to the `mesh` gateway, closed after the test
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Optional

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from meshkit import (  # noqa: E402
    ALL_PROCS,
    HOST,
    Proc,
    ProcessGroup,
    addr,
    free_port,
    gateway_config,
    insecure_channel,
    wait_until,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO_ROOT / "proto"
REPLICA_IDS = ("r1", "r2", "r3")
RPC_TIMEOUT_S = 10.0


# --------------------------------------------------------------------------
# Failure report: show the tails of the processes' logs


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    item._meshgate_started = time.monotonic()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    since = getattr(item, "_meshgate_started", 0.0)
    relevant = [p for p in ALL_PROCS if p.alive() or p.started_at >= since]
    if relevant:
        report.sections.append(
            ("meshgate process logs", "\n\n".join(p.describe() for p in relevant)))


# --------------------------------------------------------------------------
# Binaries and generated stubs


@dataclass(frozen=True)
class Binaries:
    meshgate: Path
    mesh_sample: Path


@pytest.fixture(scope="session")
def bins() -> Binaries:
    """The meshgate and mesh-sample executables."""
    env = os.environ.get("MESHGATE_BIN_DIR")
    if env:
        bin_dir = Path(env)
    else:
        try:
            out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"],
                                 cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as e:
            pytest.fail(f"cannot ask swift for the bin path ({e}); set MESHGATE_BIN_DIR")
        if out.returncode != 0 or not out.stdout.strip():
            pytest.fail(f"`swift build -c release --show-bin-path` failed:\n{out.stderr}")
        bin_dir = Path(out.stdout.strip().splitlines()[-1])
    found = Binaries(bin_dir / "meshgate", bin_dir / "mesh-sample")
    for path in (found.meshgate, found.mesh_sample):
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"{path} is missing: run `swift build -c release` first "
                        "(or set MESHGATE_BIN_DIR)")
    return found


@pytest.fixture(scope="session")
def _mesh_stubs(tmp_path_factory) -> tuple[ModuleType, ModuleType]:
    out_dir = tmp_path_factory.mktemp("mesh_stubs")
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
         f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
         str(PROTO_DIR / "mesh.proto")],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"protoc failed:\n{result.stderr}"
    sys.path.insert(0, str(out_dir))
    importlib.invalidate_caches()
    return importlib.import_module("mesh_pb2"), importlib.import_module("mesh_pb2_grpc")


@pytest.fixture(scope="session")
def mesh_pb2(_mesh_stubs):
    return _mesh_stubs[0]


@pytest.fixture(scope="session")
def mesh_pb2_grpc(_mesh_stubs):
    return _mesh_stubs[1]


# --------------------------------------------------------------------------
# Launching replicas and gateways


@dataclass
class Replica:
    replica_id: str
    port: int
    proc: Proc


@dataclass
class Gateway:
    port: int
    proc: Proc
    config_path: Path


class Launcher:
    """Starts mesh-sample replicas and meshgate gateways; `stop_all` ends them."""

    def __init__(self, bins: Binaries, work_dir: Path):
        self.bins = bins
        self.work_dir = Path(work_dir)
        self.group = ProcessGroup(self.work_dir)

    def replica(self, replica_id: str, *extra_args: str, port: Optional[int] = None,
                max_concurrent_streams: int = 100) -> Replica:
        port = port or free_port()
        argv = [str(self.bins.mesh_sample), "--port", str(port), "--replica-id", replica_id,
                "--host", HOST, "--max-concurrent-streams", str(max_concurrent_streams),
                *extra_args]
        proc = self.group.start(f"replica-{replica_id}-{port}", argv, port=port)
        return Replica(replica_id, port, proc)

    def gateway(self, config_yaml: str, port: int, name: str = "meshgate") -> Gateway:
        """Writes the config into the work dir and runs `meshgate run` on it."""
        config_path = self.work_dir / f"{name}-{port}.yaml"
        config_path.write_text(config_yaml)
        argv = [str(self.bins.meshgate), "run", "--config", str(config_path)]
        proc = self.group.start(f"{name}-{port}", argv, port=port)
        return Gateway(port, proc, config_path)

    def stop_all(self) -> None:
        self.group.stop_all()


@pytest.fixture
def launcher(bins, tmp_path):
    """A per-test Launcher; everything it started is stopped after the test."""
    launch = Launcher(bins, tmp_path)
    yield launch
    launch.stop_all()


# --------------------------------------------------------------------------
# The shared mesh: r1 r2 r3 behind one gateway


def mesh_routes() -> list[dict]:
    """The session gateway's routes (first match wins)."""
    return [
        {"match": {"method": "/mesh.v1.MeshService/Process",
                   "headers": [{"name": "x-route-timeout", "exact": "short"}]},
         "cluster": "mesh", "timeout": "200ms"},
        {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
        {"match": {"service": "grpc.reflection.v1alpha.ServerReflection"}, "cluster": "mesh"},
        {"match": {"service": "grpc.reflection.v1.ServerReflection"}, "cluster": "mesh"},
    ]


@dataclass
class Mesh:
    """Three replicas (r1, r2, r3) and a gateway routing to all of them."""

    gateway: Gateway
    replicas: dict[str, Replica]
    pb2: ModuleType
    pb2_grpc: ModuleType
    _channels: list[grpc.Channel] = field(default_factory=list)
    _control: dict[str, object] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def address(self) -> str:
        return addr(self.gateway.port)

    def channel(self, **extra_options) -> grpc.Channel:
        """A new channel (own TCP connection) to the gateway, closed at session end."""
        ch = insecure_channel(self.gateway.port, extra_options)
        self._channels.append(ch)
        return ch

    def stub(self, channel: Optional[grpc.Channel] = None):
        return self.pb2_grpc.MeshServiceStub(channel or self.channel())

    def control(self, replica_id: str):
        """SampleControl of one replica, called directly on its own port."""
        if replica_id not in self._control:
            ch = insecure_channel(self.replicas[replica_id].port)
            self._channels.append(ch)
            self._control[replica_id] = self.pb2_grpc.SampleControlStub(ch)
        return self._control[replica_id]

    def stats(self) -> dict[str, object]:
        return {rid: self.control(rid).GetStats(self.pb2.StatsRequest(), timeout=RPC_TIMEOUT_S)
                for rid in self.replicas}

    def total(self, counter: str) -> int:
        """Sum of one Stats counter (calls, cancelled, completed, ...) over the replicas."""
        return sum(getattr(s, counter) for s in self.stats().values())

    def wait_total_above(self, counter: str, baseline: int, timeout: float = 5.0) -> int:
        """Polls GetStats until the summed `counter` exceeds `baseline`."""
        def grown() -> Optional[int]:
            total = self.total(counter)
            return total if total > baseline else None

        return wait_until(grown, timeout=timeout, interval=0.1,
                          message=f"sum of `{counter}` over replicas to exceed {baseline}")

    def close(self) -> None:
        for ch in self._channels:
            ch.close()


@pytest.fixture(scope="session")
def mesh(bins, mesh_pb2, mesh_pb2_grpc, tmp_path_factory):
    """Session mesh: replicas r1..r3 (--max-concurrent-streams 100) and a gateway."""
    launch = Launcher(bins, tmp_path_factory.mktemp("mesh"))
    m = None
    try:
        replicas = {rid: launch.replica(rid, max_concurrent_streams=100) for rid in REPLICA_IDS}
        port = free_port()
        config = gateway_config(
            port, clusters={"mesh": [r.port for r in replicas.values()]}, routes=mesh_routes())
        gw = launch.gateway(config, port)
        m = Mesh(gw, replicas, mesh_pb2, mesh_pb2_grpc)
        _wait_until_proxying(m)
        yield m
    finally:
        if m is not None:
            m.close()
        launch.stop_all()


def _wait_until_proxying(m: Mesh, timeout: float = 20.0) -> None:
    """Startup probe: one Process call through the gateway must succeed."""
    stub = m.stub()
    last_error: list[object] = [None]

    def ok() -> bool:
        try:
            stub.Process(m.pb2.ProcessRequest(request_id="warmup", data="warmup"), timeout=2)
            return True
        except grpc.RpcError as e:
            last_error[0] = e
            return False

    try:
        wait_until(ok, timeout=timeout, interval=0.2, message="a call through the gateway")
    except AssertionError as e:
        raise AssertionError(f"{e}; last error: {last_error[0]}\n{m.gateway.proc.describe()}")


@pytest.fixture
def gateway_channel(mesh):
    """A fresh channel to the session gateway, closed after the test."""
    ch = insecure_channel(mesh.port)
    yield ch
    ch.close()


@pytest.fixture
def stub(mesh, gateway_channel):
    """MeshService stub on a fresh channel to the session gateway."""
    return mesh.pb2_grpc.MeshServiceStub(gateway_channel)
