"""Filter plugins through the C ABI (Sources/FilterABI/include/meshgate_filter.h):
a plain-C filter built here with `cc` and loaded from YAML, the built-in
round_robin balancer (plain and smooth weighted), and every refusal the
loader must explain (checked with `meshgate validate`)."""

from __future__ import annotations

import collections
import subprocess
from pathlib import Path

import grpc
import pytest

from conftest import REPO_ROOT
from meshkit import free_port, gateway_config, insecure_channel

HEADER_DIR = REPO_ROOT / "Sources" / "FilterABI" / "include"
EXAMPLE = REPO_ROOT / "Plugins" / "examples" / "require_header.c"
ROUTE = {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}


def cc(source: Path, out: Path) -> Path:
    """Builds a plugin from C against the header alone."""
    subprocess.run(["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-I", str(HEADER_DIR), str(source), "-o", str(out)],
                   check=True, capture_output=True, timeout=60)
    return out


def with_plugins(config: str, plugins: dict[str, Path]) -> str:
    lines = "plugins:\n" + "".join(f"  - {{ name: {n}, path: {p} }}\n" for n, p in plugins.items())
    return lines + config


@pytest.fixture(scope="module")
def require_header(tmp_path_factory) -> Path:
    return cc(EXAMPLE, tmp_path_factory.mktemp("cplugin") / "librequire_header.so")


def test_example_filter_is_short_and_header_only():
    """docs/plugins.md's example filter stays under 60 lines and includes only the ABI header and libc."""
    text = EXAMPLE.read_text()
    assert len(text.splitlines()) < 60
    includes = [l for l in text.splitlines() if l.startswith("#include")]
    assert includes == ["#include <stdio.h>", "#include <stdlib.h>", "#include <string.h>", '#include "meshgate_filter.h"']


def test_c_filter_loaded_from_yaml_is_in_effect(mesh, launcher, require_header):
    """Calls without x-api-key get PERMISSION_DENIED from the C filter; calls
    with it pass, and their responses carry the header the filter adds."""
    port = free_port()
    route = dict(ROUTE, filters=[{"plugin": "require_header", "config": {"header": "x-api-key"}}])
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route])
    launcher.gateway(with_plugins(config, {"require_header": require_header}), port, name="gw-cfilter")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Process(mesh.pb2.ProcessRequest(request_id="no-key"), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert info.value.details() == "missing request header x-api-key"
        response, call = stub.Process.with_call(mesh.pb2.ProcessRequest(request_id="k", data="d"),
                                                metadata=[("x-api-key", "secret")], timeout=5)
        assert response.result == "processed: d"
        assert dict(call.initial_metadata()).get("x-checked-by") == "require_header"


def test_weighted_round_robin_is_exact_per_cycle(mesh, launcher):
    """Weights 1, 1, 2 give exactly 10, 10, 20 of 40 sequential calls."""
    ports = [(r.port, w) for r, w in zip(mesh.replicas.values(), (1, 1, 2))]
    port = free_port()
    launcher.gateway(gateway_config(port, clusters={"mesh": ports}, routes=[ROUTE]), port, name="gw-wrr")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        counts = collections.Counter(stub.Process(mesh.pb2.ProcessRequest(request_id=str(i)), timeout=5).replica_id
                                     for i in range(40))
    assert counts == {"r1": 10, "r2": 10, "r3": 20}


def validate(bins, tmp_path: Path, text: str) -> subprocess.CompletedProcess:
    path = tmp_path / "plugins.yaml"
    path.write_text(text)
    return subprocess.run([str(bins.meshgate), "validate", "--config", str(path)],
                          capture_output=True, text=True, timeout=30)


def base_config(route_filters: list) -> str:
    return gateway_config(free_port(), clusters={"mesh": [free_port()]}, routes=[dict(ROUTE, filters=route_filters)])


def refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert "Fatal error" not in result.stderr and "Stack dump" not in result.stderr
    return result.stderr


def future_abi_plugin(directory: Path) -> Path:
    """A C plugin that declares filter ABI 2.3, which no 1.x host loads."""
    source = directory / "abi2.c"
    source.write_text('#include "meshgate_filter.h"\n'
                      "static void *cfg(mg_config_ctx *c, mg_str j, char *e, size_t n) { (void)c; (void)j; (void)e; (void)n; return (void *)1; }\n"
                      "static const mg_plugin p = { .size = sizeof(mg_plugin), .abi_major = 2, .abi_minor = 3, .kinds = MG_KIND_FILTER,\n"
                      '  .name = "future", .version = "9", .config_new = cfg };\n'
                      "const mg_plugin *meshgate_plugin_v1(const mg_host *h) { (void)h; return &p; }\n")
    return cc(source, directory / "libfuture.so")


def test_refuses_a_plugin_built_for_another_abi_major(bins, tmp_path):
    lib = future_abi_plugin(tmp_path)
    err = refused(validate(bins, tmp_path, with_plugins(base_config([{"plugin": "future"}]), {"future": lib})),
                  str(lib), "built for filter ABI 2.3", "this host supports 1.0", "filters[0].plugin")
    # Located at the filter that names the plugin: file, line and column.
    import re
    assert re.search(r"plugins\.yaml:\d+:\d+", err), err


def test_refuses_a_library_without_the_entry_symbol(bins, tmp_path):
    source = tmp_path / "noentry.c"
    source.write_text("int not_a_plugin(void) { return 1; }\n")
    lib = cc(source, tmp_path / "libnoentry.so")
    refused(validate(bins, tmp_path, with_plugins(base_config([{"plugin": "noentry"}]), {"noentry": lib})),
            str(lib), "missing the entry symbol meshgate_plugin_v1")


def test_refuses_a_file_that_is_not_a_shared_object(bins, tmp_path):
    fake = tmp_path / "libfake.so"
    fake.write_text("this is not ELF\n")
    refused(validate(bins, tmp_path, with_plugins(base_config([{"plugin": "fake"}]), {"fake": fake})),
            str(fake), "not a loadable shared object")


def test_refuses_a_config_the_plugin_rejects(bins, tmp_path, require_header):
    text = with_plugins(base_config([{"plugin": "require_header", "config": {"wrong": 1}}]), {"require_header": require_header})
    err = refused(validate(bins, tmp_path, text), "plugins.yaml:", "filters[0].config",
                  "rejected its config", 'config needs "header"')
    assert "require_header" in err


def test_refuses_an_undeclared_plugin(bins, tmp_path):
    refused(validate(bins, tmp_path, base_config([{"plugin": "nope"}])),
            "plugins.yaml:", "filters[0].plugin", "plugin 'nope' is not declared")


def test_refuses_two_balancers_in_one_chain(bins, tmp_path):
    refused(validate(bins, tmp_path, base_config([{"plugin": "round_robin"}, {"plugin": "round_robin"}])),
            "filters[1].plugin", "a chain holds one balancer")


def test_validate_accepts_and_names_the_plugins(bins, tmp_path, require_header):
    text = with_plugins(base_config([{"plugin": "require_header", "config": {"header": "x-k"}}]), {"require_header": require_header})
    result = validate(bins, tmp_path, text)
    assert result.returncode == 0, result.stderr
    assert "require_header 1.0" in result.stdout and "round_robin 1.0.0" in result.stdout


CANCEL_ALL = r'''
#include <stddef.h>
#include "meshgate_filter.h"
static const mg_host *host;
static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t size) {
    (void)ctx; (void)json; (void)error; (void)size; return (void *)1;
}
static void config_destroy(void *c) { (void)c; }
static void *instance_new(void *c, uint32_t loop, mg_str cluster) { (void)loop; (void)cluster; return c; }
static void on_attempt_start(void *instance, void *state, mg_call *call, mg_attempt *attempt) {
    (void)instance; (void)state; (void)attempt;
    host->call_cancel_attempts(call, NULL);  /* cancel everything, schedule nothing */
}
static const mg_plugin plugin = {
    .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .abi_minor = 0, .kinds = MG_KIND_FILTER,
    .name = "cancel_all", .version = "1.0", .config_new = config_new, .config_destroy = config_destroy,
    .instance_new = instance_new, .on_attempt_start = on_attempt_start,
};
const mg_plugin *meshgate_plugin_v1(const mg_host *h) { host = h; return &plugin; }
'''


def test_a_filter_cancelling_every_attempt_ends_the_call_at_once(mesh, launcher, tmp_path):
    """call_cancel_attempts(NULL) with nothing scheduled: the client gets
    CANCELLED at once (the route has no deadline that would end it)."""
    source = tmp_path / "cancel_all.c"
    source.write_text(CANCEL_ALL)
    lib = cc(source, tmp_path / "libcancel_all.so")
    port = free_port()
    route = dict(ROUTE, filters=[{"plugin": "cancel_all"}])
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route])
    launcher.gateway(with_plugins(config, {"cancel_all": lib}), port, name="gw-cancel-all")
    import time
    with insecure_channel(port) as channel:
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            mesh.pb2_grpc.MeshServiceStub(channel).Process(mesh.pb2.ProcessRequest(request_id="c"), timeout=10)
        assert info.value.code() == grpc.StatusCode.CANCELLED, info.value
        assert "cancelled every attempt" in info.value.details()
        assert time.monotonic() - started < 2


def test_a_c_balancer_routes_by_endpoint_metadata(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """ABI 1.2: the plain-C example balancer (Plugins/examples/subset_by_label.c)
    reads each endpoint's labels from a watched endpoints file. Calls with
    `x-version` go only to replicas labelled with it, and the response says
    which label served them; calls without it use every replica; a version
    nobody has gets UNAVAILABLE with the balancer's reason; relabelling a
    replica in the file moves its calls."""
    import os
    plugin = cc(REPO_ROOT / "Plugins" / "examples" / "subset_by_label.c", tmp_path / "libsubset_by_label.so")
    replicas = {rid: launcher.replica(rid) for rid in ("a1", "a2", "b1")}
    labels = {"a1": "v1", "a2": "v1", "b1": "v2"}
    endpoints = tmp_path / "endpoints.yaml"

    def write_endpoints():
        text = "endpoints:\n" + "".join(f"  - {{ address: \"127.0.0.1:{r.port}\", metadata: {{ version: {labels[rid]} }} }}\n"
                                        for rid, r in replicas.items())
        (tmp_path / "endpoints.tmp").write_text(text)
        os.replace(tmp_path / "endpoints.tmp", endpoints)
    write_endpoints()
    port = free_port()
    config = (f"plugins:\n  - {{ name: subset_by_label, path: {plugin} }}\n"
              f"listeners:\n  - name: public\n    address: 127.0.0.1:{port}\n    routes:\n"
              f"      - match: {{ service: mesh.v1.MeshService }}\n        cluster: mesh\n"
              f"        filters: [ {{ plugin: subset_by_label, config: {{ label: version, header: x-version }} }} ]\n"
              f"clusters:\n  - name: mesh\n    discovery: {{ file: {{ path: {endpoints}, refresh_interval: 100ms }} }}\n")
    launcher.gateway(config, port, name="gw-subset")

    def served(version, n=12):
        seen = collections.Counter()
        metadata = [("x-version", version)] if version else []
        with insecure_channel(port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(n):
                response, call = stub.Process.with_call(mesh_pb2.ProcessRequest(request_id=str(i)), metadata=metadata, timeout=5)
                seen[(response.replica_id, dict(call.initial_metadata()).get("x-upstream-version"))] += 1
        return seen

    assert served("v2") == {("b1", "v2"): 12}
    assert served("v1") == {("a1", "v1"): 6, ("a2", "v1"): 6}
    assert {rid for rid, _ in served(None)} == {"a1", "a2", "b1"}
    with insecure_channel(port) as channel:
        with pytest.raises(grpc.RpcError) as info:
            mesh_pb2_grpc.MeshServiceStub(channel).Process(mesh_pb2.ProcessRequest(), metadata=[("x-version", "v3")], timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert info.value.details() == "no usable endpoint has label version=v3"

    labels["a2"] = "v2"
    write_endpoints()
    from meshkit import wait_until
    wait_until(lambda: {rid for rid, _ in served("v2", 8)} == {"a2", "b1"}, timeout=5, message="a2 relabelled v2 to take v2 calls")
    assert served("v1") == {("a1", "v1"): 12}


SET_HEADERS = r'''
#include <stddef.h>
#include "meshgate_filter.h"
static const mg_host *host;
static mg_str s(const char *text) { size_t n = 0; while (text[n]) n++; return (mg_str){ text, n }; }
static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t size) {
    (void)ctx; (void)json; (void)error; (void)size; return (void *)1;
}
static void config_destroy(void *c) { (void)c; }
static void *instance_new(void *c, uint32_t loop, mg_str cluster) { (void)loop; (void)cluster; return c; }
static void on_attempt_start(void *instance, void *state, mg_call *call, mg_attempt *attempt) {
    (void)instance; (void)state; (void)call;
    host->attempt_set_request_header(attempt, s("X-Set-By-Filter"), s("on"));
    host->attempt_set_request_header(attempt, s("user-agent"), s("filter-ua"));
    host->attempt_set_request_header(attempt, s("grpc-timeout"), s("7S"));
    if (host->attempt_set_request_header(attempt, s("connection"), s("close")) == -1 &&
        host->attempt_set_request_header(attempt, s("x-bad-value"), s("a\r\nb")) == -1)
        host->attempt_set_request_header(attempt, s("x-invalid-refused"), s("yes"));
}
static const mg_plugin plugin = {
    .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .abi_minor = 0, .kinds = MG_KIND_FILTER,
    .name = "set_headers", .version = "1.0", .config_new = config_new, .config_destroy = config_destroy,
    .instance_new = instance_new, .on_attempt_start = on_attempt_start,
};
const mg_plugin *meshgate_plugin_v1(const mg_host *h) { host = h; return &plugin; }
'''


def test_request_headers_a_filter_sets_replace_the_clients_and_the_gateways(mesh, launcher, tmp_path):
    """attempt_set_request_header: names lower-cased; a field the client sent
    (user-agent) or the gateway sets (grpc-timeout from the deadline) is
    replaced, not doubled; invalid names and values are refused."""
    source = tmp_path / "set_headers.c"
    source.write_text(SET_HEADERS)
    lib = cc(source, tmp_path / "libset_headers.so")
    port = free_port()
    route = dict(ROUTE, filters=[{"plugin": "set_headers"}])
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route])
    launcher.gateway(with_plugins(config, {"set_headers": lib}), port, name="gw-set-headers")
    with insecure_channel(port) as channel:
        response = mesh.pb2_grpc.MeshServiceStub(channel).Process(
            mesh.pb2.ProcessRequest(request_id="h"), metadata=[("x-mesh-echo-headers", "1")], timeout=10)
    seen = dict(response.request_headers)
    assert seen.get("x-set-by-filter") == "on", seen
    assert seen.get("user-agent") == "filter-ua", seen
    assert seen.get("grpc-timeout") == "7S", seen
    assert seen.get("x-invalid-refused") == "yes", seen
    assert "connection" not in seen and "x-bad-value" not in seen, seen


SMALL_DESCRIPTOR = r'''
#include <stddef.h>
#include <string.h>
#include "meshgate_filter.h"
static const mg_host *host;
static mg_str s(const char *text) { mg_str r = { text, strlen(text) }; return r; }
static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t size) {
    (void)ctx; (void)json; (void)error; (void)size; return (void *)1;
}
static void on_attempt_start(void *instance, void *state, mg_call *call, mg_attempt *attempt) {
    (void)instance; (void)state; (void)call;
    host->attempt_set_request_header(attempt, s("x-small-descriptor"), s("seen"));
}
/* The descriptor of a plugin built when mg_plugin ended before
   on_call_done: what lies after the size it declares is not its own (here
   bytes that are no function), and the host must not read it as hooks. */
static union { mg_plugin p; unsigned char bytes[sizeof(mg_plugin)]; } d;
const mg_plugin *meshgate_plugin_v1(const mg_host *h) {
    host = h;
    memset(d.bytes, 0xAB, sizeof d.bytes);
    memset(d.bytes, 0, offsetof(mg_plugin, on_call_done));
    d.p.size = DECLARED_SIZE;
    d.p.abi_major = MG_ABI_MAJOR;
    d.p.abi_minor = 0;
    d.p.kinds = MG_KIND_FILTER;
    d.p.name = "small_descriptor";
    d.p.version = "0.9";
    d.p.config_new = config_new;
    d.p.on_attempt_start = on_attempt_start;
    return &d.p;
}
'''


def small_descriptor_plugin(tmp_path: Path, declared_size: str) -> Path:
    source = tmp_path / "small_descriptor.c"
    source.write_text(SMALL_DESCRIPTOR.replace("DECLARED_SIZE", declared_size))
    return cc(source, tmp_path / "libsmall_descriptor.so")


def test_an_older_smaller_descriptor_loads_and_what_lies_past_its_size_is_not_read(mesh, launcher, tmp_path):
    """A plugin whose mg_plugin is shorter than today's (an older minor)
    loads; its hooks inside the size run, and the bytes past it — garbage
    here, where on_call_done, lb_update and lb_pick would be — are never
    called (the host copies only `size` bytes and zeroes the rest)."""
    lib = small_descriptor_plugin(tmp_path, "offsetof(mg_plugin, on_call_done)")
    port = free_port()
    route = dict(ROUTE, filters=[{"plugin": "small_descriptor"}])
    config = gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]}, routes=[route])
    gateway = launcher.gateway(with_plugins(config, {"small_descriptor": lib}), port, name="gw-small-descriptor")
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        for i in range(20):
            response = stub.Process(mesh.pb2.ProcessRequest(request_id=f"s{i}"),
                                    metadata=[("x-mesh-echo-headers", "1")], timeout=10)
            assert dict(response.request_headers).get("x-small-descriptor") == "seen"
    assert gateway.proc.alive(), gateway.proc.tail()


def test_refuses_a_descriptor_too_small_for_the_first_fields(bins, tmp_path):
    lib = small_descriptor_plugin(tmp_path, "16")
    refused(validate(bins, tmp_path, with_plugins(base_config([{"plugin": "small_descriptor"}]), {"small_descriptor": lib})),
            str(lib), "descriptor says it is 16 bytes", "too small")
