#!/usr/bin/env python3
"""TLS through meshgate vs nghttpx, with the same two plaintext upstream
replicas: unary calls over TLS (h2load: req/s, p50/p99, proxy CPU µs per
RPC) and full TLS handshakes (openssl s_time -new: handshakes/s and proxy
CPU µs per handshake). Both proxies use the same certificate (the dev PKI,
ECDSA P-256). Runs alternate between the proxies; medians are printed.

Usage: bench/run-tls.sh [options], or python3 bench/tls_bench.py --bin-dir DIR
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb  # noqa: E402


def tls_config(port: int, upstreams: list[int], certs: Path) -> str:
    endpoints = "".join(f"      - address: {pb.HOST}:{p}\n" for p in upstreams)
    return (
        "runtime:\n  drain_timeout: 2s\n"
        "listeners:\n"
        "  - name: bench\n"
        f"    address: {pb.HOST}:{port}\n"
        f"    tls: {{ cert: {certs}/server.pem, key: {certs}/server.key }}\n"
        "    routes:\n"
        "      - match: { service: mesh.v1.MeshService }\n"
        "        cluster: mesh\n"
        "clusters:\n"
        "  - name: mesh\n"
        "    endpoints:\n" + endpoints)


def handshakes(pid: int, port: int, seconds: int, certs: Path) -> tuple[float, float]:
    """openssl s_time full handshakes for `seconds`: (per second, proxy CPU µs each)."""
    before = pb.tree_cpu_ticks(pid)
    out = subprocess.run(["openssl", "s_time", "-connect", f"{pb.HOST}:{port}", "-new", "-time", str(seconds),
                          "-CAfile", str(certs / "ca.pem")], capture_output=True, text=True, timeout=seconds + 60).stdout
    after = pb.tree_cpu_ticks(pid)
    found = re.search(r"(\d+) connections in ([\d.]+)s", out) or re.search(r"(\d+) connections in ([\d.]+) real", out)
    if not found:
        sys.exit(f"cannot read openssl s_time's output:\n{out}")
    count, elapsed = int(found.group(1)), float(found.group(2))
    return count / elapsed, (after - before) / pb.CLK_TCK * 1e6 / max(count, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir")
    ap.add_argument("-n", "--requests", type=int, default=30000)
    ap.add_argument("-c", "--clients", type=int, default=50)
    ap.add_argument("-m", "--streams", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--handshake-seconds", type=int, default=4)
    args = ap.parse_args()
    args.threads, args.run_timeout = 1, 600
    bin_dir = pb.find_bin_dir(args.bin_dir)
    h2load = pb.need("h2load", "nghttp2-client")
    nghttpx = pb.need("nghttpx", "nghttp2-proxy")
    work = Path(tempfile.mkdtemp(prefix="meshgate-tls-bench-"))
    certs = work / "certs"
    subprocess.run([str(pb.REPO_ROOT / "scripts/dev-certs.sh"), str(certs)], check=True, capture_output=True)
    body = work / "process.body"
    body.write_bytes(pb.process_request_body())
    fleet = pb.Fleet(work)
    try:
        upstreams = [pb.free_port(), pb.free_port()]
        for rid, port in zip(("r1", "r2"), upstreams):
            fleet.start(f"replica-{rid}", [str(bin_dir / "mesh-sample"), "--port", str(port), "--replica-id", rid,
                                           "--host", pb.HOST, "--max-concurrent-streams", "1000"], port)
        mg_port = pb.free_port()
        (work / "meshgate.yaml").write_text(tls_config(mg_port, upstreams, certs))
        mg = fleet.start("meshgate", [str(bin_dir / "meshgate"), "run", "--config", str(work / "meshgate.yaml")], mg_port)
        nx_port = pb.free_port()
        nx = fleet.start("nghttpx", [nghttpx, "--conf=/dev/null", f"-f{pb.HOST},{nx_port}",
                                     *[f"-b{pb.HOST},{p};;proto=h2" for p in upstreams], "--workers=2", "--no-ocsp",
                                     str(certs / "server.key"), str(certs / "server.pem")], nx_port)
        targets = {"meshgate": (mg.pid, mg_port), "nghttpx": (nx.pid, nx_port)}
        runs: dict[str, list[pb.Run]] = {k: [] for k in targets}
        shakes: dict[str, list[tuple[float, float]]] = {k: [] for k in targets}
        for round_no in range(1, args.rounds + 1):
            for name, (pid, port) in targets.items():
                log_file = work / f"h2load-{name}-{round_no}.tsv"
                argv = [h2load, "-n", str(args.requests), "-c", str(args.clients), "-m", str(args.streams), "-d", str(body),
                        *pb.GRPC_HEADERS, f"--log-file={log_file}", f"https://{pb.HOST}:{port}{pb.PROCESS_PATH}"]
                before = pb.tree_cpu_ticks(pid)
                out = subprocess.run(argv, capture_output=True, text=True, timeout=600).stdout
                after = pb.tree_cpu_ticks(pid)
                rps = float(re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out).group(1))
                ok = int(re.search(r"(\d+) succeeded", out).group(1))
                lat = sorted(int(l.split("\t")[2]) for l in log_file.read_text().splitlines() if l.count("\t") >= 2)
                runs[name].append(pb.Run(name, round_no, args.requests, ok, args.requests - ok, 0, rps,
                                         pb.percentile(lat, 50) / 1000, pb.percentile(lat, 99) / 1000,
                                         (after - before) / pb.CLK_TCK * 1e6 / max(ok, 1)))
                shakes[name].append(handshakes(pid, port, args.handshake_seconds, certs))
                print(f"  round {round_no} {name:<9} {rps:>8.0f} req/s  {shakes[name][-1][0]:>7.0f} handshakes/s", flush=True)
        print()
        print(f"TLS unary (h2load -n {args.requests} -c {args.clients} -m {args.streams}) and full handshakes "
              f"(openssl s_time -new), medians of {args.rounds} rounds")
        print(f"{'proxy':<10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/req':>11} {'fail':>5} {'hs/s':>8} {'cpu us/hs':>10}")
        med = {}
        for name in targets:
            r = runs[name]
            med[name] = {
                "rps": statistics.median(x.rps for x in r), "p50": statistics.median(x.p50_ms for x in r),
                "p99": statistics.median(x.p99_ms for x in r), "cpu": statistics.median(x.cpu_us_per_req for x in r),
                "fail": sum(x.failed for x in r), "hs": statistics.median(s[0] for s in shakes[name]),
                "hs_cpu": statistics.median(s[1] for s in shakes[name])}
            m = med[name]
            print(f"{name:<10} {m['rps']:>9.0f} {m['p50']:>8.2f} {m['p99']:>8.2f} {m['cpu']:>11.1f} {m['fail']:>5} "
                  f"{m['hs']:>8.0f} {m['hs_cpu']:>10.0f}")
        a, b = med["meshgate"], med["nghttpx"]
        print(f"{'ratio':<10} {a['rps'] / b['rps']:>9.2f} {a['p50'] / b['p50']:>8.2f} {a['p99'] / b['p99']:>8.2f} "
              f"{a['cpu'] / b['cpu']:>11.2f} {'':>5} {a['hs'] / b['hs']:>8.2f} {a['hs_cpu'] / b['hs_cpu']:>10.2f}")
        return 0
    finally:
        fleet.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
