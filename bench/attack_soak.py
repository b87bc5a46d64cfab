#!/usr/bin/env python3
"""Attack soak (issue 26): each attack of the adversarial suite from N
concurrent attackers (default 100) against a gateway with a configured
global budget (runtime.global_buffer_limit_bytes, default 64 MiB), while
grpcio control clients call through the same gateway.

For every attack a fresh gateway starts in front of three mesh-sample
replicas (--max-concurrent-streams 1000; plus, for upstream_bomb, a raw
`h2` upstream answering with an HPACK bomb). Its RSS is sampled every
10 ms from /proc; the goal is

    peak RSS <= baseline RSS + global budget, and no control call fails,

where the budget is read as docs/limits.md states it: what all
connections hold together, to within what each connection has outside it
(its first 64 KiB granule, and NIO's one pooled receive buffer of at most
64 KiB): the table shows both the strict comparison and the one with that
allowance per connection (attackers and control channels).

A kill switch ends a gateway whose RSS grows past --kill-mib (default
2048): an unfixed build then shows "killed" instead of taking the machine.
Run it against the fixed build and against main's (--bin-dir) for the
before/after table:

    python3 bench/attack_soak.py --bin-dir /work/bins/base
    python3 bench/attack_soak.py --bin-dir DIR --attackers 20 --only hpack_bomb,replay_pinning

Attacks (per attacker):
  hpack_bomb        one connection, one HEADERS + 8 CONTINUATION block (147 KB) decoding to ~580 MB
  oversize_heads    one connection, 10 calls with 66 KB or 101-field heads
  upstream_bomb     one grpcio call to a route whose upstream answers with an HPACK bomb head
  own_flood         one connection, 4 Health/Check streams declaring 64 MiB, DATA for 2 s
  own_partials      one connection, 1,000 Health/Check streams each holding 4,000 of 4,091 bytes
  replay_pending    one grpcio channel, --calls unary calls of 250 KB, replicas answer after 6 s, no filter
  replay_retry      the same on a route with a retry filter
  replay_pinning    one connection, --pin-streams calls of one 1-byte DATA frame in its own 64 KiB read, retry route
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, ClassVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Tests" / "integration"))

import yaml  # noqa: E402

import attacks as at  # noqa: E402
from meshkit import ProcessGroup, free_port, gateway_config, to_yaml  # noqa: E402

HOST = "127.0.0.1"
MiB = 1024 * 1024
PROTO_DIR = REPO / "proto"


def load_mesh_modules(work: Path):
    """The sample service's Python stubs, generated into `work`."""
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}", f"--python_out={work}",
                    f"--grpc_python_out={work}", str(PROTO_DIR / "mesh.proto")], check=True, capture_output=True)
    sys.path.insert(0, str(work))
    return importlib.import_module("mesh_pb2"), importlib.import_module("mesh_pb2_grpc")


@dataclass
class Row:
    attack: str
    attackers: int
    baseline_mib: float
    peak_mib: float
    budget_mib: float
    killed: bool
    control_ok: int
    control_failed: int
    outcome: str
    seconds: float

    # Per connection, outside the budget: its first granule and NIO's
    # pooled receive buffer (docs/limits.md). ClassVars, not fields.
    PER_CONNECTION_ALLOWANCE_MIB: ClassVar[float] = 128 / 1024
    CONTROL_CONNECTIONS: ClassVar[int] = 2

    @property
    def bound_mib(self) -> float:
        return self.baseline_mib + self.budget_mib + (self.attackers + self.CONTROL_CONNECTIONS) * self.PER_CONNECTION_ALLOWANCE_MIB

    @property
    def strict(self) -> bool:
        return not self.killed and self.peak_mib <= self.baseline_mib + self.budget_mib

    @property
    def passed(self) -> bool:
        return not self.killed and self.peak_mib <= self.bound_mib and self.control_failed == 0

    @property
    def verdict(self) -> str:
        if self.killed:
            return "FAIL (killed)"
        if self.peak_mib > self.bound_mib:
            return "FAIL (RSS)"
        return "FAIL (control)" if self.control_failed else "pass"


@dataclass
class Attack:
    name: str
    route: str  # "plain", "retry" or "abusive"
    run: Callable[["Bench", int], at.AttackOutcome]
    describe: Callable[[at.AttackOutcome], str]


def statuses(outcome: at.AttackOutcome) -> str:
    parts = [f"{n}x {'none' if code is None else code}" for code, n in sorted(outcome.statuses().items(), key=str)]
    return "grpc-status " + ", ".join(parts)


def call_results(outcome: at.AttackOutcome) -> str:
    failed: dict[str, int] = {}
    for error in outcome.errors:
        code = error.split(":")[0]
        failed[code] = failed.get(code, 0) + 1
    return f"{outcome.calls_ok} ok" + "".join(f", {n}x {code}" for code, n in sorted(failed.items()))


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.bins = Path(args.bin_dir)
        self.work = work
        self.group = ProcessGroup(work)
        self.pb2, self.pb2_grpc = load_mesh_modules(work)
        self.replicas = []
        for i in range(3):
            port = free_port()
            self.group.start(f"replica-{i}-{port}", [str(self.bins / "mesh-sample"), "--port", str(port), "--replica-id",
                                                     f"r{i}", "--host", HOST, "--max-concurrent-streams", "1000"], port=port)
            self.replicas.append(port)
        self.bomb_upstream = at.AbusiveUpstream("head_bomb")
        self.port = 0
        self.pid = 0

    def start_gateway(self, route: str):
        port = free_port()
        routes = [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]
        clusters = {"mesh": self.replicas}
        if route == "retry":
            routes[0]["filters"] = [{"plugin": "retry"}]
        if route == "abusive":
            routes.insert(0, {"match": {"method": at.PROCESS, "headers": [{"name": "x-target", "exact": "abusive"}]},
                              "cluster": "abusive"})
            clusters["abusive"] = [self.bomb_upstream.port]
        doc = yaml.safe_load(gateway_config(port, clusters=clusters, routes=routes))
        doc["runtime"]["global_buffer_limit_bytes"] = self.args.budget_mib * MiB
        config = self.work / f"gateway-{port}.yaml"
        config.write_text(to_yaml(doc))
        proc = self.group.start(f"meshgate-{port}", [str(self.bins / "meshgate"), "run", "--config", str(config)], port=port)
        self.port, self.pid = port, proc.pid
        return proc

    def run(self, attack: Attack) -> Row:
        proc = self.start_gateway(attack.route)
        control = at.ControlCalls(self.port, self.pb2, self.pb2_grpc, channels=2, deadline=3.0)
        try:
            control.start()
            baseline = at.settle_rss(self.pid, 1.0)
            kill = baseline + self.args.kill_mib * 1024
            started = time.monotonic()
            with at.RssSampler(self.pid, kill_above_kib=kill) as rss:
                outcome = attack.run(self, self.args.attackers)
                time.sleep(0.2)
            seconds = time.monotonic() - started
        finally:
            control.stop()
            proc.stop()
        return Row(attack.name, self.args.attackers, baseline / 1024, rss.peak_kib / 1024, self.args.budget_mib, rss.killed,
                   control.ok, len(control.failures), attack.describe(outcome), seconds)

    def close(self) -> None:
        self.bomb_upstream.stop()
        self.group.stop_all()


def attack_table(args: argparse.Namespace) -> list[Attack]:
    return [
        Attack("hpack_bomb", "plain", lambda b, n: at.hpack_bomb(b.port, connections=n, timeout=30), statuses),
        Attack("oversize_heads", "plain", lambda b, n: at.oversize_heads(b.port, connections=n, streams=10), statuses),
        Attack("upstream_bomb", "abusive",
               lambda b, n: at.grpc_calls(b.port, b.pb2, channels=n, metadata=[("x-target", "abusive")], timeout=30),
               call_results),
        Attack("own_flood", "plain", lambda b, n: at.own_service_flood(b.port, connections=n, streams=4, seconds=2.0),
               lambda o: f"{statuses(o)}; {o.sent_bytes / MiB:.0f} MiB accepted"),
        Attack("own_partials", "plain", lambda b, n: at.own_service_partials(b.port, connections=n, streams=1000, hold=2.0),
               lambda o: f"{statuses(o)}; {o.sent_bytes / MiB:.0f} MiB sent"),
        Attack("replay_pending", "plain",
               lambda b, n: at.replay_pending_calls(b.port, b.pb2, channels=n, calls=args.calls, size=250_000,
                                                    delay_ms=6000, timeout=60), call_results),
        Attack("replay_retry", "retry",
               lambda b, n: at.replay_pending_calls(b.port, b.pb2, channels=n, calls=args.calls, size=250_000,
                                                    delay_ms=6000, timeout=60), call_results),
        Attack("replay_pinning", "retry",
               lambda b, n: at.replay_pinning(b.port, connections=n, streams=n * args.pin_streams, hold=2.0),
               lambda o: f"{len(o.streams)} streams stalled, {o.ended()} ended ({statuses(o)}; RST_STREAM {o.resets()})"),
    ]


def print_rows(rows: list[Row], bin_dir: str, markdown: bool) -> None:
    print()
    print(f"attack soak: {bin_dir}; goal: peak RSS <= baseline + budget (+ {Row.PER_CONNECTION_ALLOWANCE_MIB * 1024:.0f} KiB "
          "per connection outside it), no control call failed")
    if markdown:
        print("| attack | attackers | baseline MiB | peak MiB | budget MiB | peak <= baseline + budget | "
              "bound with the per-connection allowance, MiB | verdict | control calls failed | attackers saw |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            peak = f">= {r.peak_mib:.0f} (killed)" if r.killed else f"{r.peak_mib:.1f}"
            print(f"| {r.attack} | {r.attackers} | {r.baseline_mib:.1f} | {peak} | {r.budget_mib:.0f} | "
                  f"{'yes' if r.strict else 'no'} | {r.bound_mib:.1f} | {r.verdict} | "
                  f"{r.control_failed} of {r.control_ok + r.control_failed} | {r.outcome} |")
        return
    print(f"{'attack':<16} {'attackers':>9} {'base MiB':>9} {'peak MiB':>9} {'budget':>7} {'verdict':>14} "
          f"{'ctl fail':>8} {'ctl ok':>7} {'secs':>6}  attackers saw")
    for r in rows:
        peak = f">={r.peak_mib:.0f}" if r.killed else f"{r.peak_mib:.1f}"
        print(f"{r.attack:<16} {r.attackers:>9} {r.baseline_mib:>9.1f} {peak:>9} {r.budget_mib:>7.0f} {r.verdict:>14} "
              f"{r.control_failed:>8} {r.control_ok:>7} {r.seconds:>6.1f}  {r.outcome}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("MESHGATE_BIN_DIR", str(REPO / ".build" / "release")))
    ap.add_argument("--attackers", type=int, default=100, help="concurrent attackers per attack (default 100)")
    ap.add_argument("--budget-mib", type=int, default=64, help="runtime.global_buffer_limit_bytes in MiB (default 64)")
    ap.add_argument("--kill-mib", type=int, default=2048, help="kill a gateway that grows past this many MiB (default 2048)")
    ap.add_argument("--calls", type=int, default=40, help="replay attacks: calls per attacker (default 40)")
    ap.add_argument("--pin-streams", type=int, default=100, help="replay_pinning: streams per attacker (default 100)")
    ap.add_argument("--only", default="", help="comma-separated attack names")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda signo, _frame: sys.exit(128 + signo))
    attacks = attack_table(args)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {a.name for a in attacks}
        if unknown:
            ap.error(f"unknown attacks: {', '.join(sorted(unknown))}")
        attacks = [a for a in attacks if a.name in wanted]
    work = Path(tempfile.mkdtemp(prefix="meshgate-attack-soak-"))
    bench = Bench(args, work)
    rows: list[Row] = []
    try:
        for attack in attacks:
            print(f"{attack.name}: {args.attackers} attackers ...", flush=True)
            rows.append(bench.run(attack))
            r = rows[-1]
            print(f"  {r.verdict}: RSS {r.baseline_mib:.1f} -> {r.peak_mib:.1f} MiB{' (killed)' if r.killed else ''}, "
                  f"control {r.control_ok} ok / {r.control_failed} failed; {r.outcome}", flush=True)
    finally:
        bench.close()
    print_rows(rows, args.bin_dir, args.markdown)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) | {"verdict": r.verdict, "strict": r.strict, "bound_mib": r.bound_mib}
                                               for r in rows], indent=2))
    return 0 if all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
