#!/usr/bin/env python3
"""Soak: N minutes of mixed unary and server-streaming load over TLS through
Meshgate, with a config reload every 30 s, a server certificate rotation
every minute and a replica restart every 2 minutes. Prints the RPCs, the
failures by status, and the gateway's RSS and open descriptors at the start
and the end.

Goal (issue 15): 0 failed RPCs (the route retries UNAVAILABLE), RSS growth
under 5 %, no descriptor growth. Not a test: run it by hand
(bench/soak.sh), it takes as long as you ask."""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))

import grpc  # noqa: E402

import proxy_bench as pb  # noqa: E402

HOST = "127.0.0.1"
PROTO_DIR = REPO / "proto"


def load_mesh_modules(work: Path):
    """The sample service's Python stubs, generated into `work`."""
    import importlib
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={work}",
                    f"--grpc_python_out={work}", str(PROTO_DIR / "mesh.proto")], check=True, capture_output=True)
    sys.path.insert(0, str(work))
    return importlib.import_module("mesh_pb2"), importlib.import_module("mesh_pb2_grpc")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(work: Path) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30",
            "-subj", "/CN=Soak CA", "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=work)


def issue_server_cert(work: Path, serial: int) -> None:
    """A new server key and certificate from the same CA, swapped in by
    rename (the gateway re-reads changed files every second)."""
    ext = work / "server.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN=localhost/serialNumber={serial}", "-keyout", "next.key", "-out", "next.csr", cwd=work)
    openssl("x509", "-req", "-in", "next.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", str(1000 + serial),
            "-days", "2", "-extfile", "server.ext", "-out", "next.pem", cwd=work)
    # Key first: for a moment the old certificate sits with the new key;
    # the gateway keeps its old material while the pair does not match.
    os.replace(work / "next.key", work / "server.key")
    os.replace(work / "next.pem", work / "server.pem")


def gateway_yaml(port: int, admin: int, replicas: list[int], work: Path, generation: int) -> str:
    endpoints = "".join(f"      - address: {HOST}:{p}\n" for p in replicas)
    return (
        f"# generation {generation}\n"
        f"admin: {{ address: {HOST}:{admin} }}\n"
        "runtime: { drain_timeout: 5s }\n"
        "listeners:\n"
        "  - name: soak\n"
        f"    address: {HOST}:{port}\n"
        f"    tls: {{ cert: {work}/server.pem, key: {work}/server.key }}\n"
        "    routes:\n"
        "      - match: { service: mesh.v1.MeshService }\n"
        "        cluster: mesh\n"
        "        filters:\n"
        "          - { plugin: retry, config: { max_attempts: 5, initial_backoff: 20ms, max_backoff: 500ms,"
        " retryable_status_codes: [UNAVAILABLE] } }\n"
        "clusters:\n"
        "  - name: mesh\n"
        "    health_check: { interval: 1s, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 }\n"
        "    endpoints:\n" + endpoints)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Load:
    """Client threads: unary calls in a loop, and server streams of 20
    events; each outcome is counted by status code."""

    def __init__(self, port: int, ca: bytes, pb2, pb2_grpc, unary_threads: int, stream_threads: int):
        self.outcomes: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        self.threads = []
        for i in range(unary_threads + stream_threads):
            channel = grpc.secure_channel(f"localhost:{port}", credentials,
                                          options=[("grpc.use_local_subchannel_pool", 1)])
            stub = pb2_grpc.MeshServiceStub(channel)
            body = self.unary if i < unary_threads else self.streams
            self.threads.append(threading.Thread(target=body, args=(stub, pb2, i), daemon=True))

    def count(self, code: grpc.StatusCode, detail: str = "") -> None:
        with self.lock:
            self.outcomes[code.name] += 1
            if code != grpc.StatusCode.OK and len(self.failures) < 20:
                self.failures.append(f"{code.name}: {detail}")

    def unary(self, stub, pb2, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                response = stub.Process(pb2.ProcessRequest(request_id=f"u{i}-{n}", data="x" * 64), timeout=10)
                self.count(grpc.StatusCode.OK if response.result == "processed: " + "x" * 64 else grpc.StatusCode.DATA_LOSS)
            except grpc.RpcError as error:
                self.count(error.code(), error.details())

    def streams(self, stub, pb2, i: int) -> None:
        while not self.stop.is_set():
            try:
                events = list(stub.StreamEvents(pb2.StreamRequest(count=20, interval_ms=5), timeout=15))
                self.count(grpc.StatusCode.OK if [e.sequence for e in events] == list(range(20)) else grpc.StatusCode.DATA_LOSS)
            except grpc.RpcError as error:
                self.count(error.code(), error.details())

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--bin-dir", default=os.environ.get("MESHGATE_BIN_DIR", str(REPO / ".build" / "release")))
    ap.add_argument("--unary-threads", type=int, default=8)
    ap.add_argument("--stream-threads", type=int, default=4)
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signo, _frame: sys.exit(128 + signo))
    bins = Path(args.bin_dir)
    work = Path(tempfile.mkdtemp(prefix="meshgate-soak-"))
    pb2, pb2_grpc = load_mesh_modules(work)
    make_ca(work)
    issue_server_cert(work, 0)
    fleet = pb.Fleet(work)
    replica_ports = [pb.free_port() for _ in range(3)]
    replicas: dict[int, subprocess.Popen] = {}

    def start_replica(index: int) -> None:
        port = replica_ports[index]
        replicas[index] = fleet.start(f"replica-{index}-{int(time.time())}", [
            str(bins / "mesh-sample"), "--port", str(port), "--replica-id", f"r{index}", "--host", HOST], port)

    try:
        for i in range(3):
            start_replica(i)
        port, admin = pb.free_port(), pb.free_port()
        config = work / "soak.yaml"
        generation = 0
        config.write_text(gateway_yaml(port, admin, replica_ports, work, generation))
        gateway = fleet.start("meshgate", [str(bins / "meshgate"), "run", "--config", str(config)], port)
        load = Load(port, (work / "ca.pem").read_bytes(), pb2, pb2_grpc, args.unary_threads, args.stream_threads)
        load.start()
        time.sleep(10)  # warm: pools, TLS sessions, allocator arenas
        start_rss, start_fds = rss_kib(gateway.pid), open_fds(gateway.pid)
        print(f"soak: {args.minutes:g} min, {args.unary_threads} unary + {args.stream_threads} streaming clients over TLS; "
              f"reload every 30 s, certificate rotation every 60 s, replica restart every 120 s", flush=True)
        started = time.monotonic()
        end = started + args.minutes * 60
        next_reload, next_rotation, next_restart = started + 30, started + 60, started + 120
        reloads = rotations = restarts = 0
        restart_index = 0
        while time.monotonic() < end:
            time.sleep(0.5)
            now = time.monotonic()
            if now >= next_reload:
                generation += 1
                config.write_text(gateway_yaml(port, admin, replica_ports, work, generation))
                gateway.send_signal(signal.SIGHUP)
                reloads += 1
                next_reload += 30
            if now >= next_rotation:
                rotations += 1
                issue_server_cert(work, rotations)
                next_rotation += 60
            if now >= next_restart:
                victim = replicas[restart_index]
                victim.send_signal(signal.SIGTERM)
                victim.wait(timeout=15)
                start_replica(restart_index)
                restarts += 1
                restart_index = (restart_index + 1) % 3
                next_restart += 120
            if int(now - started) % 60 == 0:
                with load.lock:
                    total = sum(load.outcomes.values())
                print(f"  {now - started:5.0f} s: {total} RPCs, RSS {rss_kib(gateway.pid) / 1024:.1f} MiB, "
                      f"{open_fds(gateway.pid)} fds", flush=True)
                time.sleep(1)
        # Measured under the same load as at the start.
        end_rss, end_fds = rss_kib(gateway.pid), open_fds(gateway.pid)
        load.finish()
        total = sum(load.outcomes.values())
        failed = total - load.outcomes.get("OK", 0)
        print()
        print("| | value |")
        print("|---|---|")
        print(f"| duration | {args.minutes:g} min |")
        print(f"| RPCs (unary + 20-event streams) | {total:,} |")
        print(f"| failed | {failed} {dict((k, v) for k, v in load.outcomes.items() if k != 'OK')} |")
        print(f"| reloads / rotations / replica restarts | {reloads} / {rotations} / {restarts} |")
        print(f"| RSS start → end | {start_rss / 1024:.1f} → {end_rss / 1024:.1f} MiB ({100 * (end_rss - start_rss) / start_rss:+.1f} %) |")
        print(f"| open descriptors start → end | {start_fds} → {end_fds} |")
        for line in load.failures:
            print(f"  failure: {line}")
        return 0 if failed == 0 else 1
    finally:
        fleet.stop_all()


if __name__ == "__main__":
    sys.exit(main())
