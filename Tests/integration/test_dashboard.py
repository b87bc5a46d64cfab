"""The live dashboard, as a person sees it: headless Chromium (Debian's,
run under `unshare -n` so it cannot reach outside) loads /dashboard after
real traffic; its rendered DOM must show live numbers (rates, latency
percentiles, per-endpoint shares, health) and a screenshot is kept."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent


def test_chromium_renders_live_numbers(bins, tmp_path):
    # scripts/test.sh installs both (util-linux is Essential in Debian):
    # a missing one is a failure, never a skip.
    assert shutil.which("unshare"), "unshare is missing (util-linux)"
    assert Path("/usr/bin/chromium").exists(), "chromium is missing: run scripts/setup.sh"
    result = subprocess.run(["unshare", "-n", sys.executable, str(HERE / "dashboard_scenario.py"),
                             str(bins.meshgate), str(bins.mesh_sample), str(tmp_path)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    ok, failed = map(int, (tmp_path / "traffic.txt").read_text().split())
    assert ok > 50 and failed > 0, (ok, failed)
    dom = (tmp_path / "dom.html").read_text()
    assert dom, (tmp_path / "chromium.log").read_text()[-2000:]

    def text(element_id: str) -> str:
        m = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
        assert m, f"no #{element_id} in the DOM"
        return m.group(1)

    # The tiles hold numbers computed from the traffic, not placeholders.
    assert float(text("rate")) > 5, text("rate")
    errors = float(text("errors").split()[0])
    assert 0 < errors < 50, text("errors")  # d2 fails 20 % of its half
    assert re.fullmatch(r"[\d.]+ ms", text("p50")) and re.fullmatch(r"[\d.]+ ms", text("p99"))
    # The two good endpoints, healthy, with their share of the load; the
    # failing one ejected.
    rows = re.findall(r"<tr><td>mesh</td><td>(127\.0\.0\.1:\d+)</td><td><span class=\"pill ok\">healthy</span></td>.*?([\d.]+) %</td>", dom)
    assert len(rows) == 2, rows
    assert all(20 < float(share) < 80 for _, share in rows), rows
    endpoints = re.search(r'<tbody id="endpoints">(.*?)</tbody>', dom).group(1)
    assert endpoints.count('<span class="pill warn">ejected</span>') == 1, endpoints
    # Lines over time: the gateway's four charts and three per endpoint,
    # each with points drawn from the series (not empty SVGs).
    charts = re.findall(r'<div class="chart" data-points="(\d+)">', dom)
    assert len(charts) == 4 + 3 * 3, charts
    assert int(charts[0]) >= 3, charts  # requests/s: a point a second since traffic began
    paths = re.findall(r'<path class="line" d="(M[^"]+)"', dom)
    assert len(paths) >= 10 and all(p.count("L") >= 2 for p in paths[:2]), paths[:3]
    # The ejected endpoint's charts carry an ejection band.
    assert re.search(r'<rect class="band ejected" x="[\d.]+" y="\d+" width="[\d.]+"', dom), "no ejection band"
    # The events list shows the ejection, with the endpoint.
    ejection = re.search(r'<li data-kind="ejection">.*?endpoint ejected.*?endpoint=(127\.0\.0\.1:\d+)', dom)
    assert ejection, re.findall(r"<li[^>]*>.*?</li>", dom)[:5]
    # The routes table: the route, its cluster and its chain with versions and hashes.
    assert re.search(r"<tr><td>public</td><td>service mesh.v1.MeshService</td><td>mesh</td><td><code>outlier_detection 1\.\d+\.\d+ \([0-9a-f]{12}\)</code> → <code>round_robin", dom), \
        re.findall(r'<tbody id="routes">.*?</tbody>', dom)
    assert "mesh.v1.MeshService" in dom and "serving" in dom
    # The page's script rendered the data (it counts its renders), and the
    # feed it follows sends a new sample every second (Server-Sent Events).
    updates = int(re.search(r'id="status" data-updates="(\d+)"', dom).group(1))
    assert updates >= 1, updates
    events = [json.loads(line) for line in (tmp_path / "events.txt").read_text().splitlines()]
    assert len(events) == 2 and 0.8 < events[1]["at"] - events[0]["at"] < 2.5, [e["at"] for e in events]
    assert all(e["methods"] and e["endpoints"] for e in events)
    # A client named a method `<!--<script>`: the served page embeds it
    # escaped (no raw `<` in the script's data), the page's script still
    # ran (the renders counted above), and the methods table shows the
    # name as text.
    served = (tmp_path / "served.html").read_text()
    script = served[served.index("<script>") + len("<script>"):served.rindex("</script>")]
    assert "<!--" not in script and "<script" not in script and "\\u003c!--\\u003cscript\\u003e" in script, script[:300]
    assert "<td>&lt;!--&lt;script&gt;</td>" in dom, re.findall(r'<tbody id="methods">.*?</tbody>', dom)
    png = (tmp_path / "dashboard.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    shutil.copy(tmp_path / "dashboard.png", HERE.parents[1] / ".build" / "dashboard.png")
