#!/usr/bin/env python3
"""What observability costs: proxy CPU per RPC of meshgate with metrics on
(the default) and off, and with the Tracing filter at 100 % sampling
(exporting OTLP to a local sink), at 0 % (context propagated, nothing
exported) and with the access log on. All run side by side, in alternating
rounds, against the same two mesh-sample replicas; medians are printed.

    bench/run-observability.sh [-n 30000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from proxy_bench import (HOST, Fleet, check_grpc_ok, find_bin_dir, free_port, meshgate_config, need,  # noqa: E402
                         process_request_body, run_h2load)


class SpanSink:
    """Accepts OTLP/HTTP POSTs and counts bytes (a collector that keeps up)."""

    def __init__(self):
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                n = int(self.headers["Content-Length"])
                self.rfile.read(n)
                sink.requests += 1
                sink.bytes += n
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer((HOST, self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def variant_config(port: int, upstreams: list[int], runtime_extra: str = "", filters: str = "") -> str:
    text = meshgate_config(port, upstreams, filters=filters)
    return text.replace("runtime:\n  drain_timeout: 2s\n", "runtime:\n  drain_timeout: 2s\n" + runtime_extra)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir")
    ap.add_argument("-n", "--requests", type=int, default=30000)
    ap.add_argument("-c", "--clients", type=int, default=50)
    ap.add_argument("-m", "--streams", type=int, default=10)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--run-timeout", type=float, default=600)
    args = ap.parse_args()
    bin_dir = find_bin_dir(args.bin_dir)
    meshgate, sample = bin_dir / "meshgate", bin_dir / "mesh-sample"
    h2load, nghttp = need("h2load", "nghttp2-client"), need("nghttp", "nghttp2-client")
    work_dir = Path(tempfile.mkdtemp(prefix="meshgate-obs-bench-"))
    body = work_dir / "process.body"
    body.write_bytes(process_request_body())
    sink = SpanSink()
    collector = f"http://{HOST}:{sink.port}/v1/traces"
    fleet = Fleet(work_dir)
    try:
        upstreams = [free_port(), free_port()]
        for rid, port in zip(("r1", "r2"), upstreams):
            fleet.start(f"replica-{rid}", [str(sample), "--port", str(port), "--replica-id", rid,
                                           "--host", HOST, "--max-concurrent-streams", "1000"], port)
        variants = {
            "metrics on": variant_config(0, upstreams),
            "metrics off": variant_config(0, upstreams, runtime_extra="  metrics: false\n"),
            "tracing 100%": variant_config(0, upstreams, filters=f'[{{ plugin: tracing, config: {{ collector: "{collector}" }} }}]'),
            "tracing 0%": variant_config(0, upstreams, filters=f'[{{ plugin: tracing, config: {{ collector: "{collector}", sampling_ratio: 0 }} }}]'),
            "access log on": variant_config(0, upstreams, runtime_extra="  access_log: true\n"),
        }
        targets = {}
        for name, text in variants.items():
            port = free_port()
            path = work_dir / f"{name.replace(' ', '-').replace('%', 'pct')}.yaml"
            path.write_text(text.replace(f"{HOST}:0\n", f"{HOST}:{port}\n", 1))
            proc = fleet.start(name.replace(" ", "-"), [str(meshgate), "run", "--config", str(path)], port)
            check_grpc_ok(nghttp, port, body, name)
            targets[name] = (proc.pid, port)
        warm = argparse.Namespace(**{**vars(args), "requests": 2000})
        for name, (pid, port) in targets.items():
            run_h2load(h2load, name.replace(" ", "-"), 0, pid, port, body, warm, work_dir)
        runs = {name: [] for name in targets}
        for round_no in range(1, args.rounds + 1):
            for name, (pid, port) in targets.items():
                run = run_h2load(h2load, name.replace(" ", "-").replace("%", "pct"), round_no, pid, port, body, args, work_dir)
                runs[name].append(run)
                print(f"  round {round_no} {name:<14} {run.rps:>9.0f} req/s  {run.cpu_us_per_req:6.1f} us CPU/RPC", flush=True)
        base = statistics.median(r.cpu_us_per_req for r in runs["metrics on"])
        print(f"\nmedians over {args.rounds} rounds, h2load -n {args.requests} -c {args.clients} -m {args.streams}")
        print(f"{'variant':<16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu us/RPC':>11} {'vs metrics on':>14}")
        for name, rs in runs.items():
            cpu = statistics.median(r.cpu_us_per_req for r in rs)
            print(f"{name:<16} {statistics.median(r.rps for r in rs):>9.0f} {statistics.median(r.p50_ms for r in rs):>8.3f} "
                  f"{statistics.median(r.p99_ms for r in rs):>8.3f} {cpu:>11.1f} {cpu - base:>+10.1f} us")
        print(f"span sink: {sink.requests} OTLP requests, {sink.bytes / 1e6:.1f} MB")
        failed = sum(r.failed + r.non_200 for rs in runs.values() for r in rs)
        if failed:
            print(f"WARNING: {failed} failed requests", file=sys.stderr)
            return 1
        return 0
    finally:
        fleet.stop_all()


if __name__ == "__main__":
    sys.exit(main())
