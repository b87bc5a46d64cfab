"""Hot swap: a plugin file replaced while grpcio clients keep a steady load,
then reloaded with SIGHUP and with the admin's POST /reload. No call may
fail; new calls see the new plugin; a call in flight finishes on the old
generation, whose config is destroyed only after it; a broken reload keeps
the running config."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc

from conftest import REPO_ROOT
from meshkit import HOST, free_port, gateway_config, insecure_channel, wait_until

TAGGER = r'''
#include <stdio.h>
#include <string.h>
#include "meshgate_filter.h"
static const mg_host *host;
static void *config_new(mg_config_ctx *c, mg_str j, char *e, size_t n) { (void)c; (void)j; (void)e; (void)n; return (void *)1; }
static void config_destroy(void *c) {
    (void)c;
    const char *m = "tagger " TAG " config destroyed";
    host->log(MG_LOG_INFO, (mg_str){ "tagger", 6 }, (mg_str){ m, strlen(m) });
}
static void on_response_headers(void *i, void *s, mg_call *call, mg_attempt *a) {
    (void)i; (void)s; (void)a;
    host->call_add_response_header(call, (mg_str){ "x-plugin-version", 16 }, (mg_str){ TAG, strlen(TAG) });
}
static const mg_plugin plugin = { .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .kinds = MG_KIND_FILTER,
    .name = "tagger", .version = TAG, .config_new = config_new, .config_destroy = config_destroy,
    .on_response_headers = on_response_headers };
const mg_plugin *meshgate_plugin_v1(const mg_host *h) { host = h; return &plugin; }
'''


def build_tagger(work: Path, tag: str, target: Path) -> None:
    """Builds the tagger with `tag` and renames it onto `target` (as a deploy would)."""
    source = work / f"tagger-{tag}.c"
    source.write_text(TAGGER)
    tmp = work / f"libtagger-{tag}.so"
    subprocess.run(["cc", "-shared", "-fPIC", f'-DTAG="{tag}"', "-I", str(REPO_ROOT / "Sources/FilterABI/include"),
                    str(source), "-o", str(tmp)], check=True, timeout=60)
    os.replace(tmp, target)


def post_reload(admin_port: int) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{HOST}:{admin_port}/reload", method="POST", data=b"")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_plugin_hot_swap_under_load(mesh, launcher, tmp_path):
    pb = mesh.pb2
    plugin = tmp_path / "libtagger.so"
    build_tagger(tmp_path, "v1", plugin)
    port, admin_port = free_port(), free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [{"plugin": "tagger"}]}
    config = (f"admin: {{ address: {HOST}:{admin_port} }}\n"
              f"plugins:\n  - {{ name: tagger, path: {plugin} }}\n"
              + gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route]))
    gateway = launcher.gateway(config, port, name="gw-swap")

    failures: list[str] = []
    versions: list[str] = []
    per_thread: dict[int, list[str]] = {}
    stop = threading.Event()

    def load(channel, index):
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        mine = per_thread.setdefault(index, [])
        while not stop.is_set():
            try:
                _, call = stub.Process.with_call(pb.ProcessRequest(request_id="load"), timeout=5)
                version = dict(call.initial_metadata()).get("x-plugin-version", "none")
                mine.append(version)
                versions.append(version)
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")
            time.sleep(0.002)

    channels = [insecure_channel(port) for _ in range(2)]
    threads = [threading.Thread(target=load, args=(ch, i), daemon=True)
               for i, ch in enumerate(channels * 2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: "v1" in versions, timeout=5, message="v1 in effect")
        # A slow call in flight across the swap finishes on the old generation.
        slow = mesh.pb2_grpc.MeshServiceStub(channels[0]).Process.future(
            pb.ProcessRequest(request_id="slow"), metadata=[("x-mesh-delay-ms", "1500")], timeout=10)

        build_tagger(tmp_path, "v2", plugin)
        gateway.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: versions[-20:] == ["v2"] * 20, timeout=5, message="v2 in effect after SIGHUP")
        assert "tagger v1 config destroyed" not in gateway.proc.log_text(), "v1 destroyed while a call was in flight"
        response, call = slow.result(), slow
        assert response.request_id == "slow"
        assert dict(call.initial_metadata()).get("x-plugin-version") == "v1"
        wait_until(lambda: "tagger v1 config destroyed" in gateway.proc.log_text(), timeout=5,
                   message="v1's config destroyed after its last call")

        build_tagger(tmp_path, "v3", plugin)
        status, body = post_reload(admin_port)
        assert status == 200 and "generation 3" in body and "tagger v3" in body, body
        wait_until(lambda: versions[-20:] == ["v3"] * 20, timeout=5, message="v3 in effect after POST /reload")

        # A broken config is refused and v3 keeps serving.
        config_path = gateway.config_path
        good = config_path.read_text()
        config_path.write_text(good.replace("listeners:", "listeners:\n  - name: [broken", 1))
        status, body = post_reload(admin_port)
        assert status == 400 and str(config_path) in body, body
        config_path.write_text(good)
        count = len(versions)
        wait_until(lambda: len(versions) > count + 50, timeout=5, message="calls after the failed reload")
        assert set(versions[count:]) == {"v3"}
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for ch in channels:
            ch.close()
    assert failures == [], failures[:5]
    assert len(versions) > 300
    # No call skipped the filter (a call without it has no x-plugin-version),
    # and each client's calls, one after another, never went back to an
    # older plugin: every call ran whole on one generation's filter chain.
    assert set(versions) <= {"v1", "v2", "v3"}, sorted(set(versions))
    order = {"v1": 1, "v2": 2, "v3": 3}
    for index, seen in per_thread.items():
        ranks = [order[v] for v in seen]
        assert ranks == sorted(ranks), (index, seen)
        assert set(seen) == {"v1", "v2", "v3"}, (index, sorted(set(seen)))


ABI2 = r'''
#include "meshgate_filter.h"
static void *cfg(mg_config_ctx *c, mg_str j, char *e, size_t n) { (void)c; (void)j; (void)e; (void)n; return (void *)1; }
static const mg_plugin p = { .size = sizeof(mg_plugin), .abi_major = 2, .kinds = MG_KIND_FILTER, .name = "tagger",
    .version = "abi2", .config_new = cfg };
const mg_plugin *meshgate_plugin_v1(const mg_host *h) { (void)h; return &p; }
'''


def test_reload_refuses_an_incompatible_plugin_and_keeps_serving(mesh, launcher, tmp_path):
    """A plugin file replaced by one built for ABI 2 is refused on reload with
    the path and both ABI versions; the running generation keeps serving."""
    pb = mesh.pb2
    plugin = tmp_path / "libtagger.so"
    build_tagger(tmp_path, "v1", plugin)
    port, admin_port = free_port(), free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": [{"plugin": "tagger"}]}
    config = (f"admin: {{ address: {HOST}:{admin_port} }}\n"
              f"plugins:\n  - {{ name: tagger, path: {plugin} }}\n"
              + gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route]))
    launcher.gateway(config, port, name="gw-refuse")
    source = tmp_path / "abi2.c"
    source.write_text(ABI2)
    subprocess.run(["cc", "-shared", "-fPIC", "-I", str(REPO_ROOT / "Sources/FilterABI/include"), str(source),
                    "-o", str(tmp_path / "abi2.so")], check=True, timeout=60)
    os.replace(tmp_path / "abi2.so", plugin)
    status, body = post_reload(admin_port)
    assert status == 400, body
    assert str(plugin) in body and "built for filter ABI 2.0" in body and "supports 1.0" in body, body
    with insecure_channel(port) as channel:
        _, call = mesh.pb2_grpc.MeshServiceStub(channel).Process.with_call(pb.ProcessRequest(request_id="x"), timeout=5)
    assert dict(call.initial_metadata()).get("x-plugin-version") == "v1"


def test_cluster_reload_under_load(mesh, launcher, tmp_path):
    """Under steady grpcio load, a reload replaces r3 with a new replica r4
    and then gives r1 weight 3: no call fails, r4 starts taking calls, r3
    stops getting new ones once its last call is done, and the weights show
    in the distribution."""
    pb = mesh.pb2
    r4 = launcher.replica("r4")
    port = free_port()
    route = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}
    ports = {rid: r.port for rid, r in mesh.replicas.items()}
    gateway = launcher.gateway(gateway_config(port, clusters={"mesh": [ports["r1"], ports["r2"], ports["r3"]]},
                                              routes=[route]), port, name="gw-clusters")

    failures: list[str] = []
    calls: list[tuple[float, str]] = []  # (when it started, replica), in the order they finished
    stop = threading.Event()

    def load(channel):
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        while not stop.is_set():
            started = time.monotonic()
            try:
                calls.append((started, stub.Process(pb.ProcessRequest(request_id="load"), timeout=5).replica_id))
            except grpc.RpcError as error:
                failures.append(f"{error.code()}: {error.details()}")
            time.sleep(0.002)

    def reloaded(generation: int) -> float:
        """Waits for the gateway to log generation `generation` as reloaded;
        the time it was seen (every call started after it runs on it)."""
        wait_until(lambda: re.search(rf'"msg":"reloaded".*"generation":"{generation}"', gateway.proc.log_text()),
                   timeout=5, message=f"generation {generation} reloaded")
        return time.monotonic()

    def started_after(moment: float) -> list[str]:
        """The replicas of the calls that started after `moment`, in the order they finished."""
        return [replica for started, replica in list(calls) if started > moment]

    channels = [insecure_channel(port) for _ in range(2)]
    threads = [threading.Thread(target=load, args=(ch,), daemon=True) for ch in channels for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: {"r1", "r2", "r3"} <= {replica for _, replica in calls}, timeout=5,
                   message="all three replicas in rotation")
        gateway.config_path.write_text(gateway_config(port, clusters={"mesh": [ports["r1"], ports["r2"], r4.port]},
                                                      routes=[route]))
        gateway.proc.send_signal(signal.SIGHUP)
        at = reloaded(2)
        wait_until(lambda: len(started_after(at)) > 150, timeout=10, message="calls after the reload")
        after = started_after(at)
        assert "r3" not in after, "r3 still gets calls after it left the cluster"
        assert {"r1", "r2", "r4"} <= set(after)

        gateway.config_path.write_text(gateway_config(port, clusters={"mesh": [(ports["r1"], 3), ports["r2"], r4.port]},
                                                      routes=[route]))
        gateway.proc.send_signal(signal.SIGHUP)
        at = reloaded(3)
        wait_until(lambda: len(started_after(at)) > 250, timeout=10, message="calls after the weight change")
        window = started_after(at)[:250]
        share = window.count("r1") / len(window)
        assert 0.5 <= share <= 0.7, (share, window.count("r2"), window.count("r4"))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for ch in channels:
            ch.close()
    assert failures == [], failures[:5]
    assert "reloaded" in gateway.proc.log_text()
