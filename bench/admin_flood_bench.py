#!/usr/bin/env python3
"""What a client hammering the admin addresses costs the calls: one grpcio
client calls Process through meshgate for `--seconds`, first alone, then
while h2load (HTTP/1.1, 60 keep-alive connections per address) asks for
/metrics on the full and two read-only admin addresses as fast as it is
answered. Prints calls, failures and call latency (p50/p99) for both, the
scrapes served and the gathers they caused; then /metrics' size after 5,000
method names nobody serves. `--baseline-bin-dir` runs another build the
same way (e.g. one from before issue 26).

    python3 bench/admin_flood_bench.py [--bin-dir DIR] [--baseline-bin-dir DIR] [--seconds 4]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import HOST, Fleet, find_bin_dir, free_port, need  # noqa: E402


def measure(bin_dir: Path, seconds: float, work: Path) -> dict:
    fleet = Fleet(work)
    try:
        replica = free_port()
        fleet.start("replica", [str(bin_dir / "mesh-sample"), "--host", HOST, "--port", str(replica), "--replica-id", "r"], replica)
        port, admin, read1, read2 = free_port(), free_port(), free_port(), free_port()
        config = work / "gateway.yaml"
        config.write_text(f"""admin:
  address: {HOST}:{admin}
  read_only_addresses: [{HOST}:{read1}, {HOST}:{read2}]
listeners:
  - name: public
    address: {HOST}:{port}
    routes:
      - match: {{ service: mesh.v1.MeshService }}
        cluster: mesh
clusters:
  - name: mesh
    endpoints: [{{ address: {HOST}:{replica} }}]
""")
        fleet.start("meshgate", [str(bin_dir / "meshgate"), "run", "--config", str(config)], port)
        channel = grpc.insecure_channel(f"{HOST}:{port}")
        call = channel.unary_unary("/mesh.v1.MeshService/Process")

        def calls_for(duration: float, hammer: bool) -> dict:
            latencies: list[float] = []
            failures: list[str] = []
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    try:
                        call(b"\x0a\x01x", timeout=2)
                        latencies.append(time.monotonic() - started)
                    except grpc.RpcError as error:
                        failures.append(error.code().name)
            sender = threading.Thread(target=traffic)
            sender.start()
            served = 0
            if hammer:
                loads = [subprocess.Popen(["h2load", "--h1", "-c", "60", "-D", str(int(duration)), f"http://{HOST}:{p}/metrics"],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in (admin, read1, read2)]
                for load in loads:
                    m = re.search(r"(\d+) succeeded", load.communicate(timeout=duration + 60)[0])
                    served += int(m.group(1)) if m else 0
            else:
                time.sleep(duration)
            stop.set()
            sender.join()
            latencies.sort()
            return {"calls": len(latencies), "failed": len(failures),
                    "p50_ms": latencies[len(latencies) // 2] * 1000 if latencies else float("nan"),
                    "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan"),
                    "scrapes": served}

        def scrape() -> str:
            return urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=30).read().decode()

        calls_for(1, False)  # warm-up
        gathers_before = re.search(r"^meshgate_metrics_gathers_total (\d+)", scrape(), re.M)
        alone = calls_for(seconds, False)
        hammered = calls_for(seconds, True)
        gathers_after = re.search(r"^meshgate_metrics_gathers_total (\d+)", scrape(), re.M)
        gathers = (int(gathers_after.group(1)) - int(gathers_before.group(1)) - 1) if gathers_before and gathers_after else None
        # Own subchannels: grpcio would otherwise share one connection.
        flood = [grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(4)]
        paths = [f"/mesh.v1.MeshService/Unknown{i:05d}" for i in range(5000)]
        for start in range(0, len(paths), 200):
            futures = [flood[i % 4].unary_unary(p).future(b"", timeout=10) for i, p in enumerate(paths[start:start + 200])]
            for future in futures:
                try:
                    future.result()
                except grpc.RpcError:
                    pass
        text = scrape()
        methods = set(re.findall(r'grpc_requests_total\{[^}]*method="([^"]*)"', text))
        for c in flood + [channel]:
            c.close()
        return {"alone": alone, "hammered": hammered, "gathers": gathers, "metrics_bytes": len(text), "methods": len(methods)}
    finally:
        fleet.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir")
    ap.add_argument("--baseline-bin-dir")
    ap.add_argument("--seconds", type=float, default=4)
    args = ap.parse_args()
    need("h2load", "nghttp2-client")
    builds = [("meshgate", find_bin_dir(args.bin_dir))]
    if args.baseline_bin_dir:
        builds.append(("baseline", Path(args.baseline_bin_dir)))
    print("| build | calls alone | p50/p99 ms alone | calls while hammered | p50/p99 ms hammered | failed | /metrics served | gathers "
          "| /metrics after 5,000 names |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, bin_dir in builds:
        with tempfile.TemporaryDirectory(prefix="admin-flood-") as work:
            r = measure(bin_dir, args.seconds, Path(work))
        a, h = r["alone"], r["hammered"]
        gathers = "not counted" if r["gathers"] is None else str(r["gathers"])
        print(f"| {name} | {a['calls']:,} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | {h['calls']:,} | {h['p50_ms']:.2f} / {h['p99_ms']:.2f} "
              f"| {a['failed'] + h['failed']} | {h['scrapes']:,} | {gathers} | {r['metrics_bytes'] / 1e6:.1f} MB, {r['methods']:,} methods |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
