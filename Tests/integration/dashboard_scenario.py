"""Run inside `unshare -n` by test_dashboard.py (Chromium looks outside
otherwise): brings loopback up, starts two replicas and a gateway, sends
traffic, and while it flows lets headless Chromium load /dashboard: its
rendered DOM and a screenshot go into OUT_DIR.

    unshare -n python3 dashboard_scenario.py MESHGATE MESH_SAMPLE OUT_DIR
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meshkit import ProcessGroup, free_port, to_yaml, wait_until  # noqa: E402

HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"
NASTY_METHOD = "<!--<script>"


def main() -> int:
    meshgate, sample, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    group = ProcessGroup(out / "logs")
    try:
        ports = [free_port(), free_port(), free_port()]
        group.start("d1", [sample, "--host", HOST, "--port", str(ports[0]), "--replica-id", "d1"], port=ports[0])
        group.start("d2", [sample, "--host", HOST, "--port", str(ports[1]), "--replica-id", "d2",
                           "--fail-probability", "0.2", "--fail-code", "13"], port=ports[1])
        # d3 fails every call with UNAVAILABLE: outlier detection ejects it
        # (an event, and a band on its charts).
        group.start("d3", [sample, "--host", HOST, "--port", str(ports[2]), "--replica-id", "d3",
                           "--fail-probability", "1.0", "--fail-code", "14"], port=ports[2])
        port, admin = free_port(), free_port()
        config = out / "gateway.yaml"
        config.write_text(to_yaml({
            "admin": {"address": f"{HOST}:{admin}"},
            "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                           "routes": [{"match": {"method": f"/mesh.v1.MeshService/{NASTY_METHOD}"}, "cluster": "mesh", "filters": [
                                          {"plugin": "rate_limit", "config": {"rate": 0.001, "burst": 1}}]},
                                      {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [
                               {"plugin": "outlier_detection", "config": {
                                   "consecutive_failures": 5, "failure_status_codes": ["UNAVAILABLE"],
                                   "base_ejection_time": "120s", "max_ejection_percent": 50, "interval": "1s"}}]}]}],
            "clusters": [{"name": "mesh", "health_check": {"mode": "watch", "interval": "500ms"},
                          "endpoints": [{"address": f"{HOST}:{p}"} for p in ports]}]}))
        group.start("gateway", [meshgate, "run", "--config", str(config)], port=port)
        # A method name chosen to break a page that embeds it raw: inside
        # <script>, `<!--<script>` would make the HTML parser skip the
        # script's real end (issue 26). A name the replicas do not serve
        # ends UNIMPLEMENTED and gets no series of its own, so a route
        # answers this one: its rate limit lets one call through and
        # refuses the second (RESOURCE_EXHAUSTED), which the gateway counts
        # as the method's own series.
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            for _ in range(2):
                try:
                    channel.unary_unary(f"/mesh.v1.MeshService/{NASTY_METHOD}")(b"", timeout=5)
                except grpc.RpcError:
                    pass
        # Traffic flows from 3 s before Chromium starts until it has
        # rendered: the tiles show rates over the last 10 s, and Chromium's
        # start-up on a busy 2-core machine can take longer than that.
        counts = {"ok": 0, "failed": 0}
        stop = threading.Event()

        def traffic() -> None:
            with grpc.insecure_channel(f"{HOST}:{port}") as channel:
                call = channel.unary_unary("/mesh.v1.MeshService/Process")
                while not stop.is_set():
                    try:
                        call(b"\x0a\x01x", timeout=5)
                        counts["ok"] += 1
                    except grpc.RpcError:
                        counts["failed"] += 1
                    stop.wait(0.005)  # ~150 calls/s: plenty for the tiles, a core left for Chromium

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        try:
            # Long enough for the time series to hold several seconds.
            time.sleep(5.0)
            url = f"http://{HOST}:{admin}/dashboard"
            common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                      "--no-first-run", "--timeout=8000", "--window-size=1280,2200"]
            dom = subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=90)
            (out / "dom.html").write_text(dom.stdout)
            (out / "served.html").write_text(urllib.request.urlopen(url, timeout=10).read().decode())
            (out / "chromium.log").write_text(dom.stderr)
            subprocess.run(common + [f"--screenshot={out / 'dashboard.png'}", url], capture_output=True, timeout=90)
        finally:
            stop.set()
            sender.join(timeout=10)
        (out / "traffic.txt").write_text(f"{counts['ok']} {counts['failed']}\n")
        # The page's live feed, read as a client: two events a second apart.
        events = []
        with urllib.request.urlopen(f"{url}/events", timeout=10) as stream:
            for raw in stream:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    events.append(line[len("data: "):])
                    if len(events) == 2:
                        break
        (out / "events.txt").write_text("\n".join(events) + "\n")
        return 0
    finally:
        group.stop_all()


if __name__ == "__main__":
    sys.exit(main())
