#!/usr/bin/env python3
"""Unary gRPC through meshgate vs nghttpx, with the same two upstream replicas.

Starts two mesh-sample replicas (--max-concurrent-streams 1000), meshgate and
nghttpx in front of them, checks that both proxies answer grpc-status 0, then
runs h2load through each proxy in turn (meshgate, nghttpx, meshgate, ...) for
--rounds rounds. Per run it records requests/s, p50/p99 latency (from h2load's
--log-file) and the proxy's CPU time per request (utime+stime of the proxy's
whole process tree from /proc). Prints every run and the medians per proxy,
with the meshgate/nghttpx ratio.

Usage: bench/run.sh [options]   (builds release binaries first), or
       python3 bench/proxy_bench.py --bin-dir DIR [options]
"""

from __future__ import annotations

import argparse
import signal
import threading
import json
import math
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
# The x-* headers satisfy the 3-filter chain (require_header x3); the other
# proxies ignore them.
CHAIN_HEADERS = ["x-api-key", "x-tenant", "x-client"]
GRPC_HEADERS = ["-H", "content-type: application/grpc", "-H", "te: trailers",
                *[arg for h in CHAIN_HEADERS for arg in ("-H", f"{h}: bench")]]
REPO = Path(__file__).resolve().parents[1]
PROCESS_PATH = "/mesh.v1.MeshService/Process"


# --------------------------------------------------------------------------
# Small helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen, name: str, log: Path,
                  timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{name} exited with {proc.returncode}; log {log}:\n{tail(log)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.3):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on {HOST}:{port} within {timeout:.0f}s; log {log}:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def process_request_body() -> bytes:
    """ProcessRequest{request_id: "bench", data: "payload"} as one gRPC message.

    Encoded by hand (two length-delimited string fields) so the benchmark
    needs no generated stubs."""
    def field(number: int, value: bytes) -> bytes:
        assert len(value) < 128
        return bytes([number << 3 | 2, len(value)]) + value

    message = field(1, b"bench") + field(2, b"payload")
    return b"\x00" + len(message).to_bytes(4, "big") + message


def tree_pids(root_pid: int) -> list[int]:
    """`root_pid` and all its descendants."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parent[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    found, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [child for child, p in parent.items() if p == pid]
    return found


def tree_context_switches(root_pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of the
    process tree: a count that does not depend on machine noise the way
    CPU time does."""
    total = 0
    for pid in tree_pids(root_pid):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                            total += int(line.split()[1])
            except OSError:
                continue
    return total


def tree_cpu_ticks(root_pid: int) -> int:
    """utime+stime (clock ticks) of `root_pid` and all its descendants.

    nghttpx runs its workers in a child process, so the root alone is not enough."""
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields from #3 (state) on
        pid = int(entry)
        parent[pid] = int(fields[1])  # #4 ppid
        ticks[pid] = int(fields[11]) + int(fields[12])  # #14 utime, #15 stime
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += ticks.get(pid, 0)
        todo.extend(child for child, ppid in parent.items() if ppid == pid)
    return total


def percentile(sorted_values: list[int], pct: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return float("nan")
    rank = min(len(sorted_values), max(1, math.ceil(pct / 100.0 * len(sorted_values))))
    return float(sorted_values[rank - 1])


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"{tool} not found: apt-get install {package}")
    return path


# --------------------------------------------------------------------------
# Processes


class Fleet:
    """The processes of one benchmark; all are stopped by `stop_all`."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], port: int) -> subprocess.Popen:
        log = self.work_dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                    start_new_session=True)
        self.procs.append((name, proc))
        wait_for_port(port, proc, name, log)
        return proc

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                # nghttpx's worker is in our session: end the whole group
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)


def meshgate_config(port: int, upstreams: list[int], chain_plugin: Optional[Path] = None,
                    filters: str = "", routes_before: int = 0) -> str:
    """The bench gateway; with `chain_plugin`, each call passes a chain of
    three filters (the C example, requiring three headers); `filters` is a
    YAML flow list of built-in filters instead. `routes_before` routes that
    never match (methods, services and prefixes of other services, in turn)
    come before the one that does: the cost of a large route table."""
    other_routes = "".join(
        "      - match: { " + ("method: /bench.S%d/Call" % i, "service: bench.S%d" % i,
                              "path_prefix: /bench.S%d/" % i)[i % 3] + " }\n        cluster: mesh\n"
        for i in range(routes_before))
    endpoints = "".join(f"      - address: {HOST}:{p}\n" for p in upstreams)
    plugins = ""
    if filters:
        filters = f"        filters: {filters}\n"
    if chain_plugin:
        plugins = f"plugins:\n  - {{ name: require_header, path: {chain_plugin} }}\n"
        filters = "        filters:\n" + "".join(
            f"          - {{ plugin: require_header, config: {{ header: {h} }} }}\n" for h in CHAIN_HEADERS)
    return (
        plugins +
        "runtime:\n  drain_timeout: 2s\n"
        "listeners:\n"
        "  - name: bench\n"
        f"    address: {HOST}:{port}\n"
        "    routes:\n" + other_routes +
        "      - match: { service: mesh.v1.MeshService }\n"
        "        cluster: mesh\n" + filters +
        "clusters:\n"
        "  - name: mesh\n"
        "    endpoints:\n" + endpoints)


def check_grpc_ok(nghttp: str, port: int, body: Path, name: str, path: str = PROCESS_PATH) -> None:
    """One request with nghttp -v: the trailers must say grpc-status: 0."""
    result = subprocess.run(
        [nghttp, "-v", "-n", "-t", "10", "-d", str(body), *GRPC_HEADERS,
         f"http://{HOST}:{port}{path}"],
        capture_output=True, timeout=30)
    out = result.stdout.decode(errors="replace")
    if result.returncode != 0 or not re.search(r"grpc-status: 0\s*$", out, re.MULTILINE):
        sys.exit(f"{name}: the check call did not end with grpc-status 0:\n{out[-3000:]}")


# --------------------------------------------------------------------------
# One h2load run


@dataclass
class Run:
    proxy: str
    round: int
    requests: int
    succeeded: int
    failed: int
    non_200: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us_per_req: float
    ctx_switches_per_req: float = 0.0


def run_h2load(h2load: str, name: str, round_no: int, pid: int, port: int, body: Path,
               args: argparse.Namespace, work_dir: Path) -> Run:
    log_file = work_dir / f"h2load-{name}-{round_no}.tsv"
    argv = [h2load, "-n", str(args.requests), "-c", str(args.clients),
            "-m", str(args.streams), "-t", str(args.threads), "-d", str(body),
            *GRPC_HEADERS, f"--log-file={log_file}", f"http://{HOST}:{port}{PROCESS_PATH}"]
    cpu_before, switches_before = tree_cpu_ticks(pid), tree_context_switches(pid)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=args.run_timeout)
    cpu_after, switches_after = tree_cpu_ticks(pid), tree_context_switches(pid)
    out = result.stdout
    if result.returncode != 0:
        sys.exit(f"h2load against {name} failed ({result.returncode}):\n{out}\n{result.stderr}")

    rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, "
                       r"(\d+) failed", out)
    if not (rps and counts):
        sys.exit(f"cannot read h2load's summary:\n{out}")

    latencies, non_200 = [], 0
    for line in log_file.read_text().splitlines():
        cols = line.split("\t")  # start µs since epoch, status, µs to end of response
        if len(cols) < 3:
            continue
        if cols[1] != "200":
            non_200 += 1
            continue
        latencies.append(int(cols[2]))
    latencies.sort()
    succeeded = int(counts.group(2))
    cpu_us = (cpu_after - cpu_before) / CLK_TCK * 1e6
    return Run(proxy=name, round=round_no, requests=int(counts.group(1)), succeeded=succeeded,
               failed=int(counts.group(3)), non_200=non_200, rps=float(rps.group(1)),
               p50_ms=percentile(latencies, 50) / 1000, p99_ms=percentile(latencies, 99) / 1000,
               cpu_us_per_req=cpu_us / max(succeeded, 1),
               ctx_switches_per_req=(switches_after - switches_before) / max(succeeded, 1))


def malloc_counts(h2load: str, targets: dict, body: Path, args: argparse.Namespace, work_dir: Path) -> dict:
    """malloc calls per RPC of each meshgate, from a uprobe on libc's malloc
    (`perf probe -x libc malloc`, then `perf stat -e probe_libc:malloc -p`):
    a count, so it does not depend on machine noise."""
    libc = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6",
                             "/lib/aarch64-linux-gnu/libc.so.6") if os.path.exists(p)), None)
    perf = shutil.which("perf")
    if not (libc and perf):
        print("mallocs: skipped (no perf or libc found)")
        return {}
    subprocess.run([perf, "probe", "-q", "-x", libc, "malloc"], capture_output=True)
    counted = argparse.Namespace(**{**vars(args), "requests": args.mallocs})
    result = {}
    print(f"\nmalloc calls per RPC ({args.mallocs} requests each; perf uprobe, CPU not counted)")
    for name, (pid, port) in targets.items():
        if not name.startswith("meshgate"):
            continue
        stat = subprocess.Popen([perf, "stat", "-x", ",", "-e", "probe_libc:malloc", "-p", str(pid)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        run = run_h2load(h2load, name, 98, pid, port, body, counted, work_dir)
        time.sleep(0.2)
        stat.send_signal(signal.SIGINT)
        _, err = stat.communicate(timeout=30)
        count = next((int(line.split(",")[0]) for line in err.splitlines()
                      if "probe_libc:malloc" in line and line.split(",")[0].isdigit()), None)
        if count is None:
            print(f"  {name:<16} perf gave no count: {err.strip()[:200]}")
            continue
        result[name] = count / max(run.succeeded, 1)
        print(f"  {name:<16} {result[name]:>7.1f}")
    return result


# --------------------------------------------------------------------------
# Hedging


def set_faults(nghttp: str, port: int, delay_ms: int, probability: float, work_dir: Path) -> None:
    """SampleControl.SetFaults on a replica (FaultConfig encoded by hand:
    delay_ms = field 3 varint, delay_probability = field 4 double)."""
    import struct
    message = b""
    if delay_ms:
        varint, n = b"", delay_ms
        while True:
            byte, n = n & 0x7F, n >> 7
            varint += bytes([byte | (0x80 if n else 0)])
            if not n:
                break
        message = b"\x18" + varint + b"\x21" + struct.pack("<d", probability)
    body = work_dir / "faults.body"
    body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    check_grpc_ok(nghttp, port, body, f"SetFaults on {port}", path="/mesh.v1.SampleControl/SetFaults")


def hedge_bench(h2load, nghttp, fleet, meshgate, upstreams, body, args, work_dir) -> dict:
    """p50/p99 without and with Hedge (2 attempts, 20 ms apart) while every
    replica adds 200 ms to 10% of its calls; runs alternate, 3 rounds."""
    ports = {}
    for name, filters in (("meshgate", ""), ("meshgate+hedge",
                          '[{ plugin: hedge, config: { max_attempts: 2, hedging_delay: 20ms } }]')):
        port = free_port()
        config = work_dir / f"{name}-hedgebench.yaml"
        config.write_text(meshgate_config(port, upstreams, filters=filters))
        proc = fleet.start(f"{name}-hedgebench", [str(meshgate), "run", "--config", str(config)], port)
        ports[name] = (proc.pid, port)
    for port in upstreams:
        set_faults(nghttp, port, 200, 0.1, work_dir)
    hedge_args = argparse.Namespace(**{**vars(args), "requests": args.hedge_requests, "clients": 10,
                                       "streams": 1, "threads": 1})
    runs: list[Run] = []
    replica_pid = next(proc.pid for name, proc in fleet.procs if name == "replica-r1")
    try:
        for round_no in range(1, 4):
            for name, (pid, port) in ports.items():
                # Round numbers of their own: h2load appends to an existing log file.
                runs.append(run_h2load(h2load, name, 100 + round_no, pid, port, body, hedge_args, work_dir))
            # The baseline: one replica without any proxy.
            runs.append(run_h2load(h2load, "replica r1", 100 + round_no, replica_pid, upstreams[0], body, hedge_args, work_dir))
    finally:
        for port in upstreams:
            set_faults(nghttp, port, 0, 0, work_dir)
    print()
    print(f"hedging: every replica adds 200 ms to 10% of calls; h2load -n {args.hedge_requests} -c 10 -m 1, 3 rounds")
    print(f"{'gateway':<16} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'fail':>5}")
    medians = {}
    for name in [*ports, "replica r1"]:
        mine = [r for r in runs if r.proxy == name]
        medians[name] = {m: statistics.median(getattr(r, m) for r in mine) for m in ("p50_ms", "p99_ms", "cpu_us_per_req")}
        failed = sum(r.failed + r.non_200 for r in mine)
        m = medians[name]
        print(f"{name:<16} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f} {m['cpu_us_per_req']:>11.1f} {failed:>5}")
    ratio = medians["meshgate+hedge"]["p99_ms"] / medians["meshgate"]["p99_ms"]
    print(f"p99 with hedging / without: {ratio:.2f}")
    return {"medians": medians, "p99_ratio": ratio}


# --------------------------------------------------------------------------
# Report


def print_report(runs: list[Run], proxies: list[str]) -> dict:
    print()
    print(f"{'proxy':<14} {'round':>5} {'ok':>7} {'fail':>5} {'req/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'ctxsw/req':>10}")
    for r in runs:
        print(f"{r.proxy:<14} {r.round:>5} {r.succeeded:>7} {r.failed + r.non_200:>5} "
              f"{r.rps:>10.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {r.cpu_us_per_req:>11.1f} {r.ctx_switches_per_req:>10.3f}")

    metrics = ["rps", "p50_ms", "p99_ms", "cpu_us_per_req", "ctx_switches_per_req"]
    medians = {p: {m: statistics.median(getattr(r, m) for r in runs if r.proxy == p)
                   for m in metrics} for p in proxies}
    print()
    print(f"medians over {len(runs) // len(proxies)} rounds")
    print(f"{'':<20} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'ctxsw/req':>10}")
    for p in proxies:
        m = medians[p]
        print(f"{p:<20} {m['rps']:>10.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} "
              f"{m['cpu_us_per_req']:>11.1f} {m['ctx_switches_per_req']:>10.3f}")

    def ratio_of(a: str, b: str) -> dict:
        return {m: (medians[a][m] / medians[b][m] if medians[b][m] else float("nan")) for m in metrics}

    def print_ratio(label: str, r: dict) -> None:
        print(f"{label:<20} {r['rps']:>10.2f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{r['cpu_us_per_req']:>11.2f} {r['ctx_switches_per_req']:>10.2f}")

    ratios = {}
    if "meshgate" in medians and "nghttpx" in medians:
        ratio = ratio_of("meshgate", "nghttpx")
        print_ratio("meshgate / nghttpx", ratio)
        ratios["ratio_meshgate_over_nghttpx"] = ratio
    for name in ("meshgate", "meshgate+3f"):
        if name in medians and f"{name}@base" in medians:
            r = ratio_of(name, f"{name}@base")
            print_ratio(f"{name} / @base", r)
            ratios[f"ratio_{name}_over_base"] = r
    print("(req/s: higher is better; latency and CPU: lower is better)")
    return {"medians": medians, **ratios}


# --------------------------------------------------------------------------


def find_bin_dir(given: Optional[str]) -> Path:
    if given:
        return Path(given)
    if os.environ.get("MESHGATE_BIN_DIR"):
        return Path(os.environ["MESHGATE_BIN_DIR"])
    out = subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        sys.exit(f"cannot find the release bin dir:\n{out.stderr}")
    return Path(out.stdout.strip().splitlines()[-1])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", help="dir with meshgate and mesh-sample (default: "
                    "$MESHGATE_BIN_DIR or `swift build -c release --show-bin-path`)")
    ap.add_argument("--baseline-bin-dir", help="a second build's bin dir (e.g. the previous commit's): its "
                    "meshgate runs beside this one, with and without the chain, as 'meshgate@base' and "
                    "'meshgate+3f@base', in the same rounds")
    ap.add_argument("--mallocs", type=int, default=0, metavar="N",
                    help="after the rounds, count malloc calls per RPC over N requests per meshgate "
                    "(perf uprobe on libc's malloc; needs root and linux-perf; slows the proxy, so "
                    "its CPU is not counted)")
    ap.add_argument("--targets", help="comma-separated subset of the proxies to run (e.g. "
                    "'meshgate,meshgate@base'), for more rounds of a side-by-side comparison in the same time")
    ap.add_argument("-n", "--requests", type=int, default=50000, help="requests per run")
    ap.add_argument("-c", "--clients", type=int, default=50, help="h2load connections")
    ap.add_argument("-m", "--streams", type=int, default=10, help="concurrent streams per connection")
    ap.add_argument("-t", "--threads", type=int, default=1, help="h2load threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2000, help="unmeasured requests per proxy first")
    ap.add_argument("--run-timeout", type=float, default=600, help="seconds one h2load run may take")
    ap.add_argument("--json", help="also write runs and medians to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with logs")
    ap.add_argument("--skip-hedge", action="store_true", help="skip the hedging latency comparison")
    ap.add_argument("--hedge-requests", type=int, default=3000, help="requests per hedging run")
    return ap.parse_args()


def main() -> int:
    args = parse_args()
    bin_dir = find_bin_dir(args.bin_dir)
    meshgate, sample = bin_dir / "meshgate", bin_dir / "mesh-sample"
    for b in (meshgate, sample):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} missing: run `swift build -c release`")
    h2load = need("h2load", "nghttp2-client")
    nghttp = need("nghttp", "nghttp2-client")
    nghttpx = need("nghttpx", "nghttp2-proxy")

    work_dir = Path(tempfile.mkdtemp(prefix="meshgate-bench-"))
    body = work_dir / "process.body"
    body.write_bytes(process_request_body())
    fleet = Fleet(work_dir)
    try:
        upstreams = [free_port(), free_port()]
        for rid, port in zip(("r1", "r2"), upstreams):
            fleet.start(f"replica-{rid}", [str(sample), "--port", str(port), "--replica-id", rid,
                                           "--host", HOST, "--max-concurrent-streams", "1000"], port)

        mg_port = free_port()
        config = work_dir / "meshgate.yaml"
        config.write_text(meshgate_config(mg_port, upstreams))
        mg = fleet.start("meshgate", [str(meshgate), "run", "--config", str(config)], mg_port)

        plugin = work_dir / "librequire_header.so"
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I", str(REPO / "Sources/FilterABI/include"),
                        str(REPO / "Plugins/examples/require_header.c"), "-o", str(plugin)], check=True)
        chain_port = free_port()
        chain_config = work_dir / "meshgate-chain.yaml"
        chain_config.write_text(meshgate_config(chain_port, upstreams, chain_plugin=plugin))
        mg_chain = fleet.start("meshgate+3f", [str(meshgate), "run", "--config", str(chain_config)], chain_port)

        retry_port = free_port()
        retry_config = work_dir / "meshgate-retry.yaml"
        retry_config.write_text(meshgate_config(retry_port, upstreams, filters="[{ plugin: retry }]"))
        mg_retry = fleet.start("meshgate+retry", [str(meshgate), "run", "--config", str(retry_config)], retry_port)

        routes_port = free_port()
        routes_config = work_dir / "meshgate-1000routes.yaml"
        routes_config.write_text(meshgate_config(routes_port, upstreams, routes_before=999))
        mg_routes = fleet.start("meshgate+1000r", [str(meshgate), "run", "--config", str(routes_config)], routes_port)

        nx_port = free_port()
        nx = fleet.start("nghttpx", [
            nghttpx, "--conf=/dev/null", f"-f{HOST},{nx_port};no-tls",
            *[f"-b{HOST},{p};;proto=h2" for p in upstreams],
            "--workers=2", "--no-ocsp"], nx_port)

        targets = {"meshgate": (mg.pid, mg_port)}
        if args.baseline_bin_dir:
            base = Path(args.baseline_bin_dir) / "meshgate"
            base_port, base_chain_port = free_port(), free_port()
            (work_dir / "base.yaml").write_text(meshgate_config(base_port, upstreams))
            (work_dir / "base-chain.yaml").write_text(meshgate_config(base_chain_port, upstreams, chain_plugin=plugin))
            mg_base = fleet.start("meshgate@base", [str(base), "run", "--config", str(work_dir / "base.yaml")], base_port)
            mg_base_chain = fleet.start("meshgate+3f@base", [str(base), "run", "--config", str(work_dir / "base-chain.yaml")],
                                        base_chain_port)
            targets["meshgate@base"] = (mg_base.pid, base_port)
        targets["meshgate+3f"] = (mg_chain.pid, chain_port)
        if args.baseline_bin_dir:
            targets["meshgate+3f@base"] = (mg_base_chain.pid, base_chain_port)
        targets["meshgate+retry"] = (mg_retry.pid, retry_port)
        targets["meshgate+1000r"] = (mg_routes.pid, routes_port)
        if args.baseline_bin_dir:
            base_routes_port = free_port()
            (work_dir / "base-1000routes.yaml").write_text(meshgate_config(base_routes_port, upstreams, routes_before=999))
            mg_base_routes = fleet.start("meshgate+1000r@base", [str(base), "run", "--config",
                                                                  str(work_dir / "base-1000routes.yaml")], base_routes_port)
            targets["meshgate+1000r@base"] = (mg_base_routes.pid, base_routes_port)
        targets["nghttpx"] = (nx.pid, nx_port)
        if args.targets:
            wanted = args.targets.split(",")
            unknown = [name for name in wanted if name not in targets]
            if unknown:
                sys.exit(f"unknown targets {unknown}; known: {list(targets)}")
            targets = {name: targets[name] for name in wanted}
        for name, (_, port) in targets.items():
            check_grpc_ok(nghttp, port, body, name)
        print(f"all proxies answer grpc-status 0; h2load -n {args.requests} -c {args.clients} "
              f"-m {args.streams} -t {args.threads}, {args.rounds} rounds", flush=True)

        if args.warmup > 0:
            warm = argparse.Namespace(**{**vars(args), "requests": args.warmup})
            for name, (pid, port) in targets.items():
                run_h2load(h2load, name, 0, pid, port, body, warm, work_dir)

        runs: list[Run] = []
        for round_no in range(1, args.rounds + 1):
            # Alternate the order from round to round, so that no proxy
            # always runs right after the same neighbour.
            order = list(targets.items())
            if round_no % 2 == 0:
                order.reverse()
            for name, (pid, port) in order:
                run = run_h2load(h2load, name, round_no, pid, port, body, args, work_dir)
                runs.append(run)
                print(f"  round {round_no} {name:<11} {run.rps:>9.0f} req/s  "
                      f"p99 {run.p99_ms:.2f} ms", flush=True)

        # Hot swap under load: one more run through the chain while the
        # gateway reloads (a new generation each time) every 200 ms.
        swaps = 0
        stop_swaps = threading.Event()

        def swapper():
            nonlocal swaps
            while not stop_swaps.wait(0.2):
                os.kill(mg_chain.pid, signal.SIGHUP)
                swaps += 1
        swapping = threading.Thread(target=swapper, daemon=True)
        swapping.start()
        swap_run = run_h2load(h2load, "meshgate+3f", 99, mg_chain.pid, chain_port, body, args, work_dir)
        stop_swaps.set()
        swapping.join()

        summary = print_report(runs, list(targets))
        print(f"hot swap: {swaps} reloads during {swap_run.requests} requests through the chain: "
              f"{swap_run.failed + swap_run.non_200} failed, {swap_run.rps:.0f} req/s")
        plain, chained = summary["medians"].get("meshgate"), summary["medians"].get("meshgate+3f")
        if plain and chained:
            cost = chained["cpu_us_per_req"] - plain["cpu_us_per_req"]
            print(f"3-filter chain cost: {cost:+.1f} us CPU per RPC "
                  f"({100 * cost / plain['cpu_us_per_req']:+.1f}% of meshgate's proxy CPU per RPC)")
        retried = summary["medians"].get("meshgate+retry")
        if plain and retried:
            cost = retried["cpu_us_per_req"] - plain["cpu_us_per_req"]
            print(f"Retry filter cost when nothing fails: {cost:+.1f} us CPU per RPC "
                  f"({100 * cost / plain['cpu_us_per_req']:+.1f}%)")
        if args.mallocs > 0:
            summary["mallocs_per_req"] = malloc_counts(h2load, targets, body, args, work_dir)
        if not args.skip_hedge:
            summary["hedge"] = hedge_bench(h2load, nghttp, fleet, meshgate, upstreams, body, args, work_dir)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(
                {"args": vars(args), "runs": [asdict(r) for r in runs], **summary}, indent=2))
            print(f"wrote {args.json}")
        bad = [r for r in runs if r.failed or r.non_200 or r.succeeded != args.requests]
        if bad:
            print(f"WARNING: {len(bad)} run(s) had failed requests", file=sys.stderr)
            return 1
        return 0
    finally:
        fleet.stop_all()
        if args.keep:
            print(f"logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
