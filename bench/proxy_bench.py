#!/usr/bin/env python3
"""Unary gRPC through meshgate, nghttpx and HAProxy, with the same two upstream replicas.

Starts two mesh-sample replicas (--max-concurrent-streams 1000) and, in
front of them, meshgate (plain, with a 3-filter chain, with Retry, behind
999 routes that do not match), nghttpx and HAProxy, all HTTP/2 cleartext;
checks that each answers grpc-status 0, then runs h2load through each in
turn for --rounds rounds, alternating the order, beside 'direct' (h2load
straight to one replica, no proxy: the floor). Per target it reports:

- idle HTTP/2 connections (--idle-connections), opened before any load:
  the proxy's RSS growth per connection;
- from the rounds (medians): req/s, p50/p99 latency (h2load's --log-file),
  the proxy's CPU time per RPC (utime+stime of its whole process tree, from
  /proc/PID/stat) and context switches per RPC (/proc/PID/task/*/status);
  peak RSS (VmHWM) after the rounds;
- a fixed-rate run (--rate, 2,000 req/s in total): CPU per RPC when the
  proxy is not saturated, so batches are small;
- a counted run (--mallocs N requests): malloc calls and syscalls per RPC,
  counted by perf (uprobes on malloc, syscall tracepoints), so they do not
  depend on machine noise.

Prints every run, one row per target with all of it, and the ratios to
nghttpx.

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
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

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
# Built-in filters as users chain them (the collector port is closed: at
# sampling 0 nothing is exported).
TRACING_FILTER = "{ plugin: tracing, config: { sampling_ratio: 0.0, collector: http://127.0.0.1:9/v1/traces } }"
CHAIN_FILTERS = f"[{TRACING_FILTER}, {{ plugin: retry }}, {{ plugin: round_robin }}]"
# Chains of the no-op filter (bench/plugins/noop_filter.c), and the hook
# calls each of its filters gets in a unary call that succeeds first time:
# call_new, on_request_headers, on_attempt_start, on_response_headers,
# on_attempt_done, on_call_done, call_destroy.
NOOP_CHAIN_LENGTHS = (1, 4, 16)
NOOP_HOOKS_PER_CALL = 7
# nghttpx's workers and HAProxy's threads: as many as meshgate's event loops
# (by default one per core), so that each proxy may use the same cores.
PROXY_THREADS = os.cpu_count() or 2
# Round numbers of the runs outside the rounds. They name h2load's log
# files, which h2load appends to, so each kind of run needs its own.
WARMUP_ROUND, FIXED_RATE_ROUND, COUNTED_ROUND, HOT_SWAP_ROUND = 0, 97, 98, 99

# Targets: name -> (root pid of the proxy, or None for 'direct'; port).
Targets = dict[str, tuple[Optional[int], int]]


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


def raise_fd_limit() -> int:
    """Raises the soft RLIMIT_NOFILE to the hard one and returns it. The
    proxies inherit it: the idle-connection test holds hundreds of sockets
    on both sides, and HAProxy refuses to start if its maxconn needs more
    descriptors than it may open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


# --------------------------------------------------------------------------
# Counters of a process tree, from /proc (cheap: they do not disturb CPU)


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
    total = 0
    for pid in tree_pids(root_pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # fields from #3 (state) on
        total += int(fields[11]) + int(fields[12])  # #14 utime, #15 stime
    return total


def tree_memory_kib(root_pid: int, field: str) -> int:
    """A /proc/PID/status memory field (VmRSS: now, VmHWM: the peak), in
    KiB, summed over the process tree (nghttpx: master and worker)."""
    total = 0
    for pid in tree_pids(root_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith(field + ":")), 0)
        except OSError:
            continue
    return total


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
        """SIGTERM to each process, SIGKILL to its group if it has not
        exited within 5 s, then SIGKILL to any child it forked that outlived
        it (each process leads its own group, start_new_session)."""
        children = {proc.pid: tree_pids(proc.pid)[1:] for _, proc in self.procs if proc.poll() is None}
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        for leader, pids in children.items():
            for pid in pids:
                try:
                    if os.getpgid(pid) == leader:  # still ours, not a recycled pid
                        os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def meshgate_config(port: int, upstreams: list[int], chain_plugin: Optional[Path] = None,
                    filters: str = "", routes_before: int = 0, shadow_cluster: bool = False,
                    noop_plugin: Optional[Path] = None, noop_filters: int = 0) -> str:
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
    if noop_plugin and noop_filters:
        plugins = f"plugins:\n  - {{ name: noop, path: {noop_plugin} }}\n"
        filters = "        filters: [" + ", ".join(["{ plugin: noop }"] * noop_filters) + "]\n"
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
        "    endpoints:\n" + endpoints +
        # The mirror's shadow: the last replica again, under another name.
        (f"  - name: shadow\n    endpoints:\n      - address: {HOST}:{upstreams[-1]}\n" if shadow_cluster else ""))


def haproxy_config(port: int, upstreams: list[int], max_connections: int) -> str:
    """HTTP/2 cleartext on both sides ('proto h2'), round robin over the
    replicas, PROXY_THREADS threads; no 'log' line, so nothing is logged.

    'http-reuse always' lets every client connection's streams share the
    server connections, as meshgate and nghttpx pool theirs; with the
    default ('safe') each client connection gets its own (100 server
    connections for h2load's 50). HAProxy 2.6 forwards the gRPC trailers
    with h2 on both sides."""
    servers = "".join(f"    server r{i} {HOST}:{p} proto h2\n" for i, p in enumerate(upstreams, 1))
    return (
        "global\n"
        f"    nbthread {PROXY_THREADS}\n"
        f"    maxconn {max_connections}\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 5s\n"
        "    timeout client 60s\n"
        "    timeout server 60s\n"
        "frontend bench\n"
        f"    bind {HOST}:{port} proto h2\n"
        "    default_backend replicas\n"
        "backend replicas\n"
        "    balance roundrobin\n"
        "    http-reuse always\n" + servers)


def start_nghttpx(fleet: Fleet, nghttpx: str, upstreams: list[int]) -> tuple[int, int]:
    port = free_port()
    proc = fleet.start("nghttpx", [
        nghttpx, "--conf=/dev/null", f"-f{HOST},{port};no-tls",
        *[f"-b{HOST},{p};;proto=h2" for p in upstreams],
        f"--workers={PROXY_THREADS}", "--no-ocsp"], port)
    return proc.pid, port


def start_haproxy(fleet: Fleet, haproxy: str, upstreams: list[int], fd_limit: int,
                  work_dir: Path) -> tuple[int, int]:
    port = free_port()
    config = work_dir / "haproxy.cfg"
    # HAProxy needs two descriptors per connection and a few more.
    config.write_text(haproxy_config(port, upstreams, max_connections=min(10000, (fd_limit - 100) // 2)))
    # -db: stay in the foreground, one process (no master-worker).
    proc = fleet.start("haproxy", [haproxy, "-db", "-f", str(config)], port)
    return proc.pid, port


def start_meshgate(fleet: Fleet, meshgate: Path, name: str, config_text: str,
                   work_dir: Path) -> tuple[int, int]:
    port = free_port()
    config = work_dir / f"{name}.yaml"
    config.write_text(config_text.replace(f"{HOST}:0\n", f"{HOST}:{port}\n", 1))
    proc = fleet.start(name, [str(meshgate), "run", "--config", str(config)], port)
    return proc.pid, port


def start_targets(fleet: Fleet, meshgate: Path, base_meshgate: Optional[Path], nghttpx: str,
                  haproxy: Optional[str], upstreams: list[int], fd_limit: int, work_dir: Path) -> Targets:
    """Every target, in the order of the tables: 'direct', meshgate's
    variants (each beside its @base twin when there is a base build), then
    nghttpx and HAProxy."""
    plugin = work_dir / "librequire_header.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I", str(REPO / "Sources/FilterABI/include"),
                    str(REPO / "Plugins/examples/require_header.c"), "-o", str(plugin)], check=True)
    noop = work_dir / "libnoop_filter.so"
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-I", str(REPO / "Sources/FilterABI/include"),
                    str(REPO / "bench/plugins/noop_filter.c"), "-o", str(noop)], check=True)
    # Listening port 0 is replaced by a free port when each one starts.
    variants = {
        "meshgate": meshgate_config(0, upstreams),
        "meshgate+3f": meshgate_config(0, upstreams, chain_plugin=plugin),
        # The chain: tracing at sampling 0 (a span context per call,
        # nothing exported), retry, round robin.
        "meshgate+chain": meshgate_config(0, upstreams, filters=CHAIN_FILTERS),
        "meshgate+retry": meshgate_config(0, upstreams, filters="[{ plugin: retry }]"),
        # The chain's first filter alone: tracing at sampling 0.
        "meshgate+tracing": meshgate_config(0, upstreams, filters=f"[{TRACING_FILTER}]"),
        # The host's own cost per hook call: chains of a C filter whose
        # every hook does nothing (bench/plugins/noop_filter.c).
        **{f"meshgate+noop{n}": meshgate_config(0, upstreams, noop_plugin=noop, noop_filters=n) for n in NOOP_CHAIN_LENGTHS},
        "meshgate+1000r": meshgate_config(0, upstreams, routes_before=999),
        # The traffic plugins in use: a rate limit that never refuses (one
        # key, the x-client header), and a mirror of every call.
        "meshgate+ratelimit": meshgate_config(0, upstreams, filters="[{ plugin: rate_limit, config: { rate: 1000000000, key: header, header: x-client } }]"),
        "meshgate+mirror": meshgate_config(0, upstreams, filters="[{ plugin: mirror, config: { cluster: shadow } }]", shadow_cluster=True),
    }
    with_base = ("meshgate", "meshgate+3f", "meshgate+chain", "meshgate+1000r")
    targets: Targets = {"direct": (None, upstreams[0])}
    for name, config_text in variants.items():
        targets[name] = start_meshgate(fleet, meshgate, name, config_text, work_dir)
        if base_meshgate and name in with_base:
            targets[f"{name}@base"] = start_meshgate(fleet, base_meshgate, f"{name}@base", config_text, work_dir)
    targets["nghttpx"] = start_nghttpx(fleet, nghttpx, upstreams)
    if haproxy:
        targets["haproxy"] = start_haproxy(fleet, haproxy, upstreams, fd_limit, work_dir)
    else:
        print("haproxy not found (apt-get install haproxy): no haproxy row")
    return targets


def check_grpc_ok(nghttp: str, port: int, body: Path, name: str, path: str = PROCESS_PATH) -> None:
    """One request with nghttp -v: the trailers must say grpc-status: 0."""
    result = subprocess.run(
        [nghttp, "-v", "-n", "-t", "10", "-d", str(body), *GRPC_HEADERS,
         f"http://{HOST}:{port}{path}"],
        capture_output=True, timeout=30)
    out = result.stdout.decode(errors="replace")
    if result.returncode != 0 or not re.search(r"grpc-status: 0\s*$", out, re.MULTILINE):
        sys.exit(f"{name}: the check call did not end with grpc-status 0 (nghttp exited with "
                 f"{result.returncode}):\n{out[-3000:]}{result.stderr.decode(errors='replace')[-1000:]}")


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
    cpu_us_per_req: Optional[float]  # None: no proxy ('direct')
    ctx_switches_per_req: Optional[float] = None


def proxy_counters(pid: Optional[int]) -> Optional[tuple[int, int]]:
    """(CPU ticks, context switches) of the proxy's process tree so far."""
    return (tree_cpu_ticks(pid), tree_context_switches(pid)) if pid is not None else None


def run_h2load(h2load: str, name: str, round_no: int, pid: Optional[int], port: int, body: Path,
               args: argparse.Namespace, work_dir: Path, rps_per_client: Optional[float] = None) -> Run:
    """One h2load run of args.requests against `port`. The CPU time and
    context switches per RPC are those of `pid`'s process tree (the proxy;
    None: nothing to measure). With `rps_per_client`, h2load paces each
    connection to that rate instead of sending as fast as it can."""
    log_file = work_dir / f"h2load-{name}-{round_no}.tsv"
    pacing = [f"--rps={rps_per_client:g}"] if rps_per_client else []
    argv = [h2load, "-n", str(args.requests), "-c", str(args.clients),
            "-m", str(args.streams), "-t", str(args.threads), *pacing, "-d", str(body),
            *GRPC_HEADERS, f"--log-file={log_file}", f"http://{HOST}:{port}{PROCESS_PATH}"]
    before = proxy_counters(pid)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=args.run_timeout)
    after = proxy_counters(pid)
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
    cpu_us = switches = None
    if before and after:
        cpu_us = (after[0] - before[0]) / CLK_TCK * 1e6 / max(succeeded, 1)
        switches = (after[1] - before[1]) / max(succeeded, 1)
    return Run(proxy=name, round=round_no, requests=int(counts.group(1)), succeeded=succeeded,
               failed=int(counts.group(3)), non_200=non_200, rps=float(rps.group(1)),
               p50_ms=percentile(latencies, 50) / 1000, p99_ms=percentile(latencies, 99) / 1000,
               cpu_us_per_req=cpu_us, ctx_switches_per_req=switches)


def measured_rounds(h2load: str, targets: Targets, body: Path, args: argparse.Namespace,
                    work_dir: Path) -> list[Run]:
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
            print(f"  round {round_no} {name:<16} {run.rps:>9.0f} req/s  "
                  f"p99 {run.p99_ms:.2f} ms", flush=True)
    return runs


def fixed_rate_runs(h2load: str, targets: Targets, body: Path, args: argparse.Namespace,
                    work_dir: Path) -> dict[str, Run]:
    """Per target, --rate-requests requests at --rate req/s in total, from
    --rate-clients connections that h2load paces (--rps is per connection):
    the proxy's CPU per RPC below saturation, where each wakeup handles few
    requests, so it counts differently from the flat-out rounds."""
    paced = argparse.Namespace(**{**vars(args), "requests": args.rate_requests, "clients": args.rate_clients})
    per_client = args.rate / args.rate_clients
    print(f"\nfixed rate: {args.rate} req/s ({args.rate_clients} connections at {per_client:g} req/s), "
          f"{args.rate_requests} requests each", flush=True)
    runs = {}
    for name, (pid, port) in targets.items():
        runs[name] = run_h2load(h2load, name, FIXED_RATE_ROUND, pid, port, body, paced, work_dir,
                                rps_per_client=per_client)
    return runs


def bidi_runs(load: Path, targets: Targets, args: argparse.Namespace) -> dict[str, dict]:
    """Bidirectional streaming, which h2load cannot drive: mesh-load runs
    --bidi-streams Chat streams over 4 connections as ping-pong (the next
    message goes when the answer arrives) until --bidi-messages answers,
    through each target in turn for --rounds rounds (order alternating).
    Per target the medians of messages/s and the proxy's CPU µs per
    message (a message each way counts as one)."""
    print(f"\nbidi: {args.bidi_streams} Chat streams (ping-pong) over 4 connections, "
          f"{args.bidi_messages} messages per run, {args.rounds} rounds", flush=True)
    samples: dict[str, list[tuple[float, Optional[float]]]] = {name: [] for name in targets}
    for round_no in range(args.rounds):
        order = list(targets.items()) if round_no % 2 == 0 else list(reversed(targets.items()))
        for name, (pid, port) in order:
            before = tree_cpu_ticks(pid) if pid else 0
            result = subprocess.run([str(load), "--port", str(port), "--connections", "4",
                                     "--streams", str(args.bidi_streams), "--messages", str(args.bidi_messages),
                                     *[f"--header={h}: bench" for h in CHAIN_HEADERS]],
                                    capture_output=True, text=True, timeout=args.run_timeout)
            if result.returncode != 0:
                sys.exit(f"mesh-load through {name} failed ({result.returncode}):\n{result.stdout}{result.stderr}")
            report = json.loads(result.stdout.strip().splitlines()[-1])
            cpu = (tree_cpu_ticks(pid) - before) / CLK_TCK * 1e6 / report["messages"] if pid else None
            samples[name].append((report["msgs_per_s"], cpu))
    medians = {}
    for name, runs in samples.items():
        cpus = [c for _, c in runs if c is not None]
        medians[name] = {"msgs_per_s": statistics.median(r for r, _ in runs),
                         "cpu_us_per_msg": statistics.median(cpus) if cpus else None}
    reference = medians.get("nghttpx")
    print(f"{'target':<20} {'msgs/s':>9} {'CPU us/msg':>11} {'msgs/s vs nghttpx':>18} {'CPU vs nghttpx':>15}")
    for name, m in medians.items():
        rate_ratio = m["msgs_per_s"] / reference["msgs_per_s"] if reference else None
        cpu_ratio = (m["cpu_us_per_msg"] / reference["cpu_us_per_msg"]
                     if reference and m["cpu_us_per_msg"] is not None and reference["cpu_us_per_msg"] else None)
        print(f"{name:<20} {m['msgs_per_s']:>9.0f} {cell(m['cpu_us_per_msg'], '{:.2f}', 11)} "
              f"{cell(rate_ratio, '{:.2f}', 18)} {cell(cpu_ratio, '{:.2f}', 15)}")
    return medians


def hot_swap_run(h2load: str, chain: tuple[int, int], body: Path, args: argparse.Namespace,
                 work_dir: Path) -> tuple[Run, int]:
    """One more run through the chain while the gateway reloads (a new
    generation each time) every 200 ms: (the run, the number of reloads)."""
    pid, port = chain
    swaps = 0
    stop_swaps = threading.Event()

    def swapper():
        nonlocal swaps
        while not stop_swaps.wait(0.2):
            os.kill(pid, signal.SIGHUP)
            swaps += 1
    swapping = threading.Thread(target=swapper, daemon=True)
    swapping.start()
    try:
        run = run_h2load(h2load, "meshgate+3f", HOT_SWAP_ROUND, pid, port, body, args, work_dir)
    finally:
        stop_swaps.set()
        swapping.join()
    return run, swaps


# --------------------------------------------------------------------------
# Counted run: malloc calls and syscalls per RPC (perf)

# Libraries whose `malloc` a proxy may call (nghttpx links jemalloc, which
# then serves its malloc calls, not libc).
ALLOCATOR_LIBS = ("libc.so", "libjemalloc.so", "libtcmalloc")
# The syscalls that move bytes through a socket. /proc/PID/io's syscr and
# syscw would be cheaper, but count only read(v) and write(v): HAProxy uses
# recvfrom and sendto, so it would seem to make none.
IO_SYSCALLS = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg")


def mapped_allocators(pids: list[int]) -> list[str]:
    """The allocator libraries mapped into these processes (from /proc/PID/maps)."""
    libs = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    path = line.split()[-1]
                    if path.startswith("/") and Path(path).name.startswith(ALLOCATOR_LIBS):
                        libs.add(path)
        except OSError:
            continue
    return sorted(libs)


def malloc_probe(perf: str, lib: str) -> Optional[str]:
    """Adds (once) a uprobe on `lib`'s malloc and returns its event name.

    By address, not by name: by name, perf also probes jemalloc's own
    malloc@plt stub, and a call through it would count twice. Event names
    must be unique across groups, so only libc's keeps the plain name
    (probe_libc:malloc, as in bench/malloc_sources.py)."""
    nm = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True)
    address = next((int(cols[0], 16) for cols in map(str.split, nm.stdout.splitlines())
                    if len(cols) == 3 and cols[1] in "TW" and cols[2].split("@")[0] == "malloc"), None)
    if address is None:
        print(f"  no malloc symbol in {lib}: its calls are not counted")
        return None
    stem = Path(lib).name.split(".")[0]  # libc, libjemalloc
    event = f"probe_{stem}:" + ("malloc" if stem == "libc" else f"{stem.removeprefix('lib')}_malloc")
    added = subprocess.run([perf, "probe", "-x", lib, f"{event}={address:#x}"],
                           capture_output=True, text=True)
    if added.returncode != 0 and "already exists" not in added.stderr:
        print(f"  perf probe on {lib}'s malloc failed: {added.stderr.strip()[:200]}")
        return None
    return event


def arc_probes(perf: str, pids: list[int]) -> list[str]:
    """Uprobes on swift_retain and swift_release of the Swift runtime these
    processes map (none for C proxies): reference-count operations per RPC,
    a count that does not move with machine noise, to steer by."""
    runtime = None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as f:
                runtime = next((line.split()[-1] for line in f if line.rstrip().endswith("/libswiftCore.so")), None)
        except OSError:
            continue
        if runtime:
            break
    if runtime is None:
        return []
    events = []
    for function in ("swift_retain", "swift_release"):
        event = f"probe_libswiftCore:{function}"
        added = subprocess.run([perf, "probe", "-x", runtime, f"{event}={function}"], capture_output=True, text=True)
        if added.returncode == 0 or "already exists" in added.stderr:
            events.append(event)
        else:
            print(f"  perf probe on {runtime}'s {function} failed: {added.stderr.strip()[:200]}")
    return events


def perf_counts(perf: str, events: list[str], pids: list[int],
                work: Callable[[], Run]) -> tuple[Optional[dict[str, int]], Run, str]:
    """Counts `events` in `pids` (all their threads) while `work` runs:
    (count per event, or None if perf failed; the run; perf's stderr)."""
    stat = subprocess.Popen([perf, "stat", "-x", ",", "-e", ",".join(events), "-p", ",".join(map(str, pids))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)  # perf attaches
        run = work()
        time.sleep(0.2)
        stat.send_signal(signal.SIGINT)
        _, err = stat.communicate(timeout=30)
    finally:
        if stat.poll() is None:
            stat.kill()
            stat.wait()
    counts = {}
    for line in err.splitlines():
        cols = line.split(",")  # count, unit, event, ...
        if len(cols) > 2 and cols[0].isdigit():
            counts[cols[2]] = int(cols[0])
    return (counts if counts else None), run, err


def counted_runs(h2load: str, targets: Targets, body: Path, args: argparse.Namespace,
                 work_dir: Path) -> dict[str, dict]:
    """Per proxy, over --mallocs requests: malloc calls (uprobes on the
    malloc of each allocator library it maps), socket I/O syscalls and all
    syscalls (tracepoints), per RPC. perf slows the proxy, so no CPU time
    is taken from this run."""
    perf = shutil.which("perf")
    if perf is None:
        print("\nmallocs and syscalls: skipped (no perf: apt-get install linux-perf)")
        return {}
    counted = argparse.Namespace(**{**vars(args), "requests": args.mallocs})
    syscall_events = ["raw_syscalls:sys_enter", *[f"syscalls:sys_enter_{s}" for s in IO_SYSCALLS]]
    print(f"\nper RPC, counted by perf over {args.mallocs} requests (CPU not counted)")
    print(f"  {'target':<20} {'mallocs':>8} {'I/O sys':>8} {'all sys':>8} {'retain':>7} {'release':>7}  allocators")
    result = {}
    for name, (pid, port) in targets.items():
        if pid is None:
            continue
        pids = tree_pids(pid)
        malloc_events = [e for e in (malloc_probe(perf, lib) for lib in mapped_allocators(pids)) if e]
        arc_events = arc_probes(perf, pids)
        counts, run, err = perf_counts(perf, malloc_events + syscall_events + arc_events, pids, lambda: run_h2load(
            h2load, name, COUNTED_ROUND, pid, port, body, counted, work_dir))
        if counts is None:
            print(f"  {name:<20} perf gave no counts (root needed): {err.strip()[:200]}")
            continue

        def per_rpc(events: list[str]) -> float:
            return sum(counts.get(e, 0) for e in events) / max(run.succeeded, 1)
        result[name] = {
            "mallocs_per_req": per_rpc(malloc_events),
            "io_syscalls_per_req": per_rpc(syscall_events[1:]),
            "syscalls_per_req": per_rpc(syscall_events[:1]),
            "retains_per_req": per_rpc(arc_events[:1]) if arc_events else None,
            "releases_per_req": per_rpc(arc_events[1:]) if arc_events else None,
            "counts": counts, "requests": run.succeeded}
        r = result[name]
        allocators = " ".join(f"{e.split(':')[1]}={counts.get(e, 0) / max(run.succeeded, 1):.1f}"
                              for e in malloc_events)
        print(f"  {name:<20} {r['mallocs_per_req']:>8.1f} {r['io_syscalls_per_req']:>8.2f} "
              f"{r['syscalls_per_req']:>8.2f} {cell(r['retains_per_req'], '{:.0f}', 7)} "
              f"{cell(r['releases_per_req'], '{:.0f}', 7)}  {allocators}", flush=True)
    return result


# --------------------------------------------------------------------------
# Idle connections: memory per connection

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_ACK = 0x4, 0x1


def h2_frame(frame_type: int, flags: int = 0, payload: bytes = b"") -> bytes:
    """An HTTP/2 frame on stream 0."""
    return len(payload).to_bytes(3, "big") + bytes([frame_type, flags]) + bytes(4) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed by the proxy")
        data += chunk
    return data


def open_idle_h2(port: int) -> socket.socket:
    """A client connection that has done the HTTP/2 handshake (preface and
    empty SETTINGS sent, the server's SETTINGS read and acknowledged) and
    then sends nothing."""
    sock = socket.create_connection((HOST, port), timeout=10)
    try:
        sock.sendall(H2_PREFACE + h2_frame(H2_SETTINGS))
        header = recv_exact(sock, 9)  # the server's preface is a SETTINGS frame
        recv_exact(sock, int.from_bytes(header[:3], "big"))
        if header[3] != H2_SETTINGS or header[4] & H2_ACK:
            raise ConnectionError(f"first frame has type {header[3]}, flags {header[4]}: not SETTINGS")
        sock.sendall(h2_frame(H2_SETTINGS, H2_ACK))
    except BaseException:
        sock.close()
        raise
    return sock


def idle_kib_per_connection(pid: int, port: int, count: int) -> float:
    """RSS growth of the proxy's process tree, in KiB per connection, with
    `count` idle HTTP/2 connections open for a second."""
    before = tree_memory_kib(pid, "VmRSS")
    sockets = []
    try:
        for _ in range(count):
            sockets.append(open_idle_h2(port))
        time.sleep(1.0)
        after = tree_memory_kib(pid, "VmRSS")
    finally:
        for sock in sockets:
            sock.close()
    time.sleep(0.5)  # the proxy closes its ends before the next one is measured
    return (after - before) / count


def idle_costs(targets: Targets, count: int) -> dict[str, float]:
    """KiB per idle connection of each proxy. Measured before any load: a
    proxy that has served the rounds has freed memory to spare, and holds
    new connections in it without growing (then every proxy but nghttpx
    shows ~0)."""
    print(f"idle connections: RSS growth with {count} idle HTTP/2 connections open", flush=True)
    costs = {}
    for name, (pid, port) in targets.items():
        if pid is None:
            continue
        try:
            costs[name] = idle_kib_per_connection(pid, port, count)
            print(f"  {name:<20} {costs[name]:6.1f} KiB", flush=True)
        except OSError as error:  # e.g. more connections than the proxy or RLIMIT_NOFILE allows
            print(f"  {name:<20} {error}")
        reset_peak_rss(pid)
    return costs


def reset_peak_rss(root_pid: int) -> None:
    """Lowers VmHWM to the current RSS (5 to /proc/PID/clear_refs), so that
    the peak read after the rounds is theirs, not the idle connections'."""
    for pid in tree_pids(root_pid):
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            pass


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

# The summary table's columns: (key in a row, heading, format).
COLUMNS = [
    ("rps", "req/s", "{:.0f}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p99_ms", "p99 ms", "{:.3f}"),
    ("cpu_us_per_req", "CPU us/RPC", "{:.1f}"),
    ("cpu_us_per_req_2k", "CPU us@2k", "{:.1f}"),
    ("mallocs_per_req", "mallocs/RPC", "{:.1f}"),
    ("io_syscalls_per_req", "I/O sys/RPC", "{:.2f}"),
    ("syscalls_per_req", "all sys/RPC", "{:.2f}"),
    ("retains_per_req", "retains/RPC", "{:.0f}"),
    ("ctx_switches_per_req", "ctxsw/RPC", "{:.3f}"),
    ("peak_rss_mib", "peak RSS MiB", "{:.1f}"),
    ("idle_kib_per_conn", "idle KiB/conn", "{:.1f}"),
]
RUN_METRICS = ["rps", "p50_ms", "p99_ms", "cpu_us_per_req", "ctx_switches_per_req"]


def cell(value: Optional[float], fmt: str, width: int) -> str:
    """`value` formatted and right-aligned; '-' when there is none."""
    text = "-" if value is None or math.isnan(value) else fmt.format(value)
    return text.rjust(width)


def median_of(values: list[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def print_runs(runs: list[Run]) -> None:
    print()
    print(f"{'target':<20} {'round':>5} {'ok':>7} {'fail':>5} {'req/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'ctxsw/req':>10}")
    for r in runs:
        print(f"{r.proxy:<20} {r.round:>5} {r.succeeded:>7} {r.failed + r.non_200:>5} "
              f"{r.rps:>10.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} {cell(r.cpu_us_per_req, '{:.1f}', 11)} "
              f"{cell(r.ctx_switches_per_req, '{:.3f}', 10)}")


def summary_rows(targets: Targets, runs: list[Run], fixed_rate: dict[str, Run], counted: dict[str, dict],
                 peak_rss_kib: dict[str, int], idle_kib: dict[str, float]) -> dict[str, dict]:
    """One row per target: medians of the rounds and the other measurements
    (None where there is none, e.g. the proxy columns of 'direct')."""
    rows = {}
    for name in targets:
        row = {m: median_of([getattr(r, m) for r in runs if r.proxy == name]) for m in RUN_METRICS}
        paced = fixed_rate.get(name)
        row["cpu_us_per_req_2k"] = paced.cpu_us_per_req if paced else None
        row["ctx_switches_per_req_2k"] = paced.ctx_switches_per_req if paced else None
        for key in ("mallocs_per_req", "io_syscalls_per_req", "syscalls_per_req", "retains_per_req"):
            row[key] = counted.get(name, {}).get(key)
        row["peak_rss_mib"] = peak_rss_kib[name] / 1024 if name in peak_rss_kib else None
        row["idle_kib_per_conn"] = idle_kib.get(name)
        rows[name] = row
    return rows


def print_table(title: str, rows: dict[str, dict], fmt: Optional[str] = None) -> None:
    """`rows` under COLUMNS' headings; `fmt` overrides every column's format."""
    widths = [max(len(heading), 7) for _, heading, _ in COLUMNS]
    print()
    print(title)
    print(f"{'':<22}" + " ".join(heading.rjust(w) for (_, heading, _), w in zip(COLUMNS, widths)))
    for name, row in rows.items():
        print(f"{name:<22}" + " ".join(cell(row.get(key), fmt or col_fmt, w)
                                       for (key, _, col_fmt), w in zip(COLUMNS, widths)))


def ratios_to(rows: dict[str, dict], reference: str, names: list[str]) -> dict[str, dict]:
    """Each of `names`' values divided by `reference`'s, column by column."""
    ref = rows[reference]

    def ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return a / b if a is not None and b else None
    return {name: {key: ratio(rows[name].get(key), ref.get(key)) for key in ref} for name in names}


def print_legend(args: argparse.Namespace) -> None:
    notes = []
    if args.rate > 0:
        notes.append(f"CPU us@2k: the fixed-rate run ({args.rate} req/s)")
    if args.mallocs > 0:
        notes.append(f"mallocs/RPC, I/O sys/RPC ({', '.join(IO_SYSCALLS)}), all sys/RPC, retains/RPC "
                     f"(swift_retain; Swift processes only): counted by perf over {args.mallocs} requests")
    notes.append("ctxsw: voluntary + involuntary, all threads; peak RSS: VmHWM after the rounds")
    if args.idle_connections > 0:
        notes.append(f"idle: RSS growth per idle HTTP/2 connection ({args.idle_connections} open, before any load)")
    notes.append("all proxy figures: summed over the proxy's processes")
    for note in notes:
        print(f"  {note}")


def print_report(runs: list[Run], targets: Targets, fixed_rate: dict[str, Run], counted: dict[str, dict],
                 peak_rss_kib: dict[str, int], idle_kib: dict[str, float], args: argparse.Namespace) -> dict:
    print_runs(runs)
    if fixed_rate:
        print()
        print(f"fixed rate, {args.rate} req/s in total")
        print(f"{'target':<20} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'ctxsw/req':>10}")
        for name, r in fixed_rate.items():
            print(f"{name:<20} {r.rps:>8.0f} {r.p50_ms:>8.3f} {r.p99_ms:>8.3f} "
                  f"{cell(r.cpu_us_per_req, '{:.1f}', 11)} {cell(r.ctx_switches_per_req, '{:.3f}', 10)}")

    rows = summary_rows(targets, runs, fixed_rate, counted, peak_rss_kib, idle_kib)
    print_table(f"per target: medians of {args.rounds} rounds of h2load -n {args.requests} -c {args.clients} "
                f"-m {args.streams}, and the runs after them", rows)
    print_legend(args)
    summary: dict = {"medians": rows}
    if "nghttpx" in rows:
        others = [name for name in rows if name != "nghttpx"]
        summary["ratios_to_nghttpx"] = ratios_to(rows, "nghttpx", others)
        print_table("ratios to nghttpx", summary["ratios_to_nghttpx"], fmt="{:.2f}")
    base_ratios = {f"{name} / @base": ratios_to(rows, f"{name}@base", [name])[name]
                   for name in rows if f"{name}@base" in rows}
    if base_ratios:
        summary["ratios_to_base"] = base_ratios
        print_table("ratios to the base build", base_ratios, fmt="{:.2f}")
    print("(req/s: higher is better; everything else: lower is better)")
    return summary


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
    ap.add_argument("--targets", help="comma-separated subset of the targets to run (e.g. "
                    "'meshgate,meshgate@base'), for more rounds of a side-by-side comparison in the same time")
    ap.add_argument("-n", "--requests", type=int, default=50000, help="requests per run")
    ap.add_argument("-c", "--clients", type=int, default=50, help="h2load connections")
    ap.add_argument("-m", "--streams", type=int, default=10, help="concurrent streams per connection")
    ap.add_argument("-t", "--threads", type=int, default=1, help="h2load threads")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2000, help="unmeasured requests per target first")
    ap.add_argument("--rate", type=int, default=2000, help="the fixed-rate run's req/s in total (0: skip it)")
    ap.add_argument("--rate-requests", type=int, default=10000, help="requests of each fixed-rate run")
    ap.add_argument("--bidi-messages", type=int, default=100000,
                    help="messages per bidirectional-streaming run (mesh-load, Chat ping-pong; 0: skip them)")
    ap.add_argument("--bidi-streams", type=int, default=100, help="Chat streams of each bidi run")
    ap.add_argument("--rate-clients", type=int, default=20, help="connections of the fixed-rate run")
    ap.add_argument("--idle-connections", type=int, default=500, metavar="N",
                    help="idle HTTP/2 connections opened to each proxy, before the load, to measure memory "
                    "per connection (0: skip)")
    ap.add_argument("--mallocs", type=int, default=20000, metavar="N",
                    help="after the rounds, count malloc calls and syscalls per RPC over N requests per proxy "
                    "(perf: uprobes on malloc, syscall tracepoints; needs root and linux-perf; slows the "
                    "proxy, so its CPU is not counted; 0: skip)")
    ap.add_argument("--run-timeout", type=float, default=600, help="seconds one h2load run may take")
    ap.add_argument("--json", help="also write runs and medians to this JSON file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir with logs")
    ap.add_argument("--skip-hedge", action="store_true", help="skip the hedging latency comparison")
    ap.add_argument("--hedge-requests", type=int, default=3000, help="requests per hedging run")
    return ap.parse_args()


def pick_targets(targets: Targets, wanted: Optional[str]) -> Targets:
    if not wanted:
        return targets
    names = wanted.split(",")
    unknown = [name for name in names if name not in targets]
    if unknown:
        sys.exit(f"unknown targets {unknown}; known: {list(targets)}")
    return {name: targets[name] for name in names}


def main() -> int:
    args = parse_args()
    # A plain SIGTERM would end Python without running `finally`, leaving
    # the proxies and replicas running.
    signal.signal(signal.SIGTERM, lambda signo, _frame: sys.exit(128 + signo))
    bin_dir = find_bin_dir(args.bin_dir)
    meshgate, sample, load = bin_dir / "meshgate", bin_dir / "mesh-sample", bin_dir / "mesh-load"
    for b in (meshgate, sample, load):
        if not os.access(b, os.X_OK):
            sys.exit(f"{b} missing: run `swift build -c release`")
    base_meshgate = Path(args.baseline_bin_dir) / "meshgate" if args.baseline_bin_dir else None
    h2load = need("h2load", "nghttp2-client")
    nghttp = need("nghttp", "nghttp2-client")
    nghttpx = need("nghttpx", "nghttp2-proxy")
    haproxy = shutil.which("haproxy")
    fd_limit = raise_fd_limit()

    work_dir = Path(tempfile.mkdtemp(prefix="meshgate-bench-"))
    body = work_dir / "process.body"
    body.write_bytes(process_request_body())
    fleet = Fleet(work_dir)
    try:
        upstreams = [free_port(), free_port()]
        for rid, port in zip(("r1", "r2"), upstreams):
            fleet.start(f"replica-{rid}", [str(sample), "--port", str(port), "--replica-id", rid,
                                           "--host", HOST, "--max-concurrent-streams", "1000"], port)
        every_target = start_targets(fleet, meshgate, base_meshgate, nghttpx, haproxy, upstreams, fd_limit, work_dir)
        targets = pick_targets(every_target, args.targets)
        for name, (_, port) in targets.items():
            check_grpc_ok(nghttp, port, body, name)
        print(f"all targets answer grpc-status 0; h2load -n {args.requests} -c {args.clients} "
              f"-m {args.streams} -t {args.threads}, {args.rounds} rounds", flush=True)

        idle_kib = idle_costs(targets, args.idle_connections) if args.idle_connections > 0 else {}
        if args.warmup > 0:
            warm = argparse.Namespace(**{**vars(args), "requests": args.warmup})
            for name, (pid, port) in targets.items():
                run_h2load(h2load, name, WARMUP_ROUND, pid, port, body, warm, work_dir)

        runs = measured_rounds(h2load, targets, body, args, work_dir)
        # Read now: the hot swap below would raise it.
        peak_rss_kib = {name: tree_memory_kib(pid, "VmHWM") for name, (pid, _) in targets.items() if pid}
        swap_run, swaps = hot_swap_run(h2load, every_target["meshgate+3f"], body, args, work_dir)
        fixed_rate = fixed_rate_runs(h2load, targets, body, args, work_dir) if args.rate > 0 else {}
        counted = counted_runs(h2load, targets, body, args, work_dir) if args.mallocs > 0 else {}
        bidi = bidi_runs(load, targets, args) if args.bidi_messages > 0 else {}

        summary = print_report(runs, targets, fixed_rate, counted, peak_rss_kib, idle_kib, args)
        print(f"hot swap: {swaps} reloads during {swap_run.requests} requests through the chain: "
              f"{swap_run.failed + swap_run.non_200} failed, {swap_run.rps:.0f} req/s")
        summary["hot_swap"] = {"reloads": swaps, **asdict(swap_run)}
        summary["bidi"] = bidi
        plain = summary["medians"].get("meshgate")
        for name, label in (("meshgate+3f", "3 C filters (require_header)"),
                            ("meshgate+chain", "tracing (sampling 0) + retry + round robin")):
            chained = summary["medians"].get(name)
            if plain and chained:
                cost = chained["cpu_us_per_req"] - plain["cpu_us_per_req"]
                print(f"chain cost, {label}: {cost:+.1f} us CPU per RPC "
                      f"({100 * cost / plain['cpu_us_per_req']:+.1f}% of meshgate's proxy CPU per RPC)")
        for name, label in (("meshgate+ratelimit", "rate_limit (never refusing)"), ("meshgate+mirror", "mirror of every call (the shadow's stream included)")):
            used = summary["medians"].get(name)
            if plain and used:
                cost = used["cpu_us_per_req"] - plain["cpu_us_per_req"]
                print(f"{label}: {cost:+.1f} us CPU per RPC ({100 * cost / plain['cpu_us_per_req']:+.1f}%)")
        noop_rows = [(n, summary["medians"].get(f"meshgate+noop{n}")) for n in NOOP_CHAIN_LENGTHS]
        if plain and any(row for _, row in noop_rows):
            print("host cost per hook call (chains of a filter whose 7 hooks do nothing, "
                  "bench/plugins/noop_filter.c; CPU over meshgate's, same rounds):")
            print(f"  {'filters':>7} {'hooks/RPC':>9} {'CPU us/RPC':>10} {'extra us':>8} {'ns/hook':>8} {'retains':>8} {'mallocs':>8}")
            for n, row in noop_rows:
                if not row:
                    continue
                extra = row["cpu_us_per_req"] - plain["cpu_us_per_req"]
                hooks = n * NOOP_HOOKS_PER_CALL
                counts = counted.get(f"meshgate+noop{n}", {}) if counted else {}
                print(f"  {n:>7} {hooks:>9} {row['cpu_us_per_req']:>10.1f} {extra:>+8.2f} {1000 * extra / hooks:>8.0f} "
                      f"{cell(counts.get('retains_per_req'), '{:.0f}', 8)} {cell(counts.get('mallocs_per_req'), '{:.1f}', 8)}")
            summary["noop_hooks"] = {n: row for n, row in noop_rows if row}
        traced = summary["medians"].get("meshgate+tracing")
        if plain and traced:
            cost = traced["cpu_us_per_req"] - plain["cpu_us_per_req"]
            print(f"tracing filter cost at sampling 0: {cost:+.1f} us CPU per RPC "
                  f"({100 * cost / plain['cpu_us_per_req']:+.1f}%)")
        retried = summary["medians"].get("meshgate+retry")
        if plain and retried:
            cost = retried["cpu_us_per_req"] - plain["cpu_us_per_req"]
            print(f"Retry filter cost when nothing fails: {cost:+.1f} us CPU per RPC "
                  f"({100 * cost / plain['cpu_us_per_req']:+.1f}%)")
        if not args.skip_hedge:
            summary["hedge"] = hedge_bench(h2load, nghttp, fleet, meshgate, upstreams, body, args, work_dir)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({
                "args": vars(args), "proxy_threads": PROXY_THREADS,
                "runs": [asdict(r) for r in runs],
                "fixed_rate_runs": {name: asdict(r) for name, r in fixed_rate.items()},
                "counted": counted, "peak_rss_kib": peak_rss_kib, "idle_kib_per_conn": idle_kib,
                **summary}, indent=2))
            print(f"wrote {args.json}")
        bad = [r for r in [*runs, *fixed_rate.values()] if r.failed or r.non_200 or r.succeeded != r.requests]
        if bad:
            print(f"WARNING: {len(bad)} run(s) had failed requests: "
                  f"{', '.join(f'{r.proxy} (round {r.round})' for r in bad)}", file=sys.stderr)
            return 1
        return 0
    finally:
        fleet.stop_all()
        if args.keep:
            print(f"logs kept in {work_dir}")
        else:
            shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # main's `finally` has stopped the fleet
        sys.exit(130)
