"""The access log (`runtime.access_log`): one JSON line per RPC on stderr
with the call's fields, strings escaped so that any status message parses
back exactly, lines whole under concurrent calls from both event loops,
and no line at all when it is off."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import grpc

from meshkit import HOST, RecordingUpstream, free_port, insecure_channel, to_yaml, wait_until

NASTY = 'bad "quote" \\ back\nnew line\ttab \x01 ünïcode ✓'


def gateway(launcher, upstream_port: int, access_log: bool):
    port = free_port()
    doc = {"runtime": {"access_log": access_log},
           "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
           "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{upstream_port}"}]}]}
    return launcher.gateway(to_yaml(doc), port, name=f"gw-access-{'on' if access_log else 'off'}")


def rpc_lines(gw) -> list[dict]:
    """Every access line, parsed; any line that is not whole JSON fails here."""
    lines = []
    for text in gw.proc.log_text().splitlines():
        if '"msg":"rpc"' in text:
            lines.append(json.loads(text))
    return lines


def test_access_lines_carry_the_call_and_parse_back(launcher, mesh_pb2, mesh_pb2_grpc):
    def behaviour(n, body, context):
        if mesh_pb2.ProcessRequest.FromString(body).request_id == "fail":
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, NASTY)
        return mesh_pb2.ProcessResponse(replica_id="u").SerializeToString()
    upstream = RecordingUpstream(behaviour)
    try:
        gw = gateway(launcher, upstream.port, access_log=True)
        with insecure_channel(gw.port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            stub.Process(mesh_pb2.ProcessRequest(request_id="ok", data="x" * 100), timeout=5)
            try:
                stub.Process(mesh_pb2.ProcessRequest(request_id="fail"), timeout=5)
                raise AssertionError("the call should fail")
            except grpc.RpcError as error:
                assert error.details() == NASTY

            ok, failed = wait_until(lambda: len(rpc_lines(gw)) >= 2 and rpc_lines(gw), timeout=5, message="two access lines")
            assert ok["level"] == "info" and isinstance(ok["ts"], float)
            assert ok["service"] == "mesh.v1.MeshService" and ok["method"] == "Process"
            assert ok["status"] == "OK" and ok["grpc_status"] == 0 and "grpc_message" not in ok
            assert ok["listener"] == "public" and ok["cluster"] == "mesh" and ok["upstream"] == f"{HOST}:{upstream.port}"
            # DATA bytes, gRPC's 5-byte message prefix included.
            assert ok["attempts"] == 1
            assert ok["request_bytes"] == 5 + len(mesh_pb2.ProcessRequest(request_id="ok", data="x" * 100).SerializeToString())
            assert ok["response_bytes"] == 5 + len(mesh_pb2.ProcessResponse(replica_id="u").SerializeToString())
            assert failed["response_bytes"] == 0, "a failed call sent no message"
            assert isinstance(ok["duration_ms"], float) and 0 <= ok["duration_ms"] < 5000
            assert failed["status"] == "FAILED_PRECONDITION" and failed["grpc_status"] == 9
            assert failed["grpc_message"] == NASTY, failed

            # Many calls at once, on both loops: one whole line each.
            before = len(rpc_lines(gw))

            def one(i):
                stub.Process(mesh_pb2.ProcessRequest(request_id=str(i), data="y" * (i % 7) * 300), timeout=10)
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(one, range(400)))
            wait_until(lambda: len(rpc_lines(gw)) - before >= 400, timeout=5, message="400 more access lines")
            assert len(rpc_lines(gw)) - before == 400
    finally:
        upstream.stop()


def test_no_access_lines_when_off(launcher, mesh_pb2, mesh_pb2_grpc):
    upstream = RecordingUpstream(lambda n, body, context: mesh_pb2.ProcessResponse(replica_id="u").SerializeToString())
    try:
        gw = gateway(launcher, upstream.port, access_log=False)
        with insecure_channel(gw.port) as channel:
            stub = mesh_pb2_grpc.MeshServiceStub(channel)
            for i in range(20):
                stub.Process(mesh_pb2.ProcessRequest(request_id=str(i)), timeout=5)
        assert len(upstream.calls) == 20
        assert rpc_lines(gw) == []
        assert '"msg":"meshgate started"' in gw.proc.log_text()
    finally:
        upstream.stop()


CALL_RESULT_TO_LOG = r"""
#include <stdio.h>
#include <string.h>
#include "meshgate_filter.h"
static const mg_host *host;
static mg_str s(const char *text) { mg_str r = { text, strlen(text) }; return r; }
static void *config_new(mg_config_ctx *ctx, mg_str json, char *error, size_t size) {
    (void)ctx; (void)json; (void)error; (void)size; return (void *)1;
}
static void on_call_done(void *instance, void *state, mg_call *call, const mg_call_result *result) {
    (void)instance; (void)state;
    char text[64];
    snprintf(text, sizeof text, "%llu/%llu", (unsigned long long)result->request_bytes,
             (unsigned long long)result->response_bytes);
    host->call_set_log_field(call, s("seen_bytes"), s(text));
}
static const mg_plugin plugin = {
    .size = sizeof(mg_plugin), .abi_major = MG_ABI_MAJOR, .abi_minor = 1, .kinds = MG_KIND_FILTER,
    .name = "call_result_to_log", .version = "1.0", .config_new = config_new, .on_call_done = on_call_done,
};
const mg_plugin *meshgate_plugin_v1(const mg_host *h) { host = h; return &plugin; }
"""


def test_filters_get_the_calls_request_and_response_bytes(launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """mg_call_result.request_bytes/response_bytes reach on_call_done with
    the figures the access line has (a C filter writes them into its own
    log field)."""
    import subprocess
    from conftest import REPO_ROOT
    source = tmp_path / "call_result_to_log.c"
    source.write_text(CALL_RESULT_TO_LOG)
    lib = tmp_path / "libcall_result_to_log.so"
    subprocess.run(["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-I", str(REPO_ROOT / "Sources/FilterABI/include"),
                    str(source), "-o", str(lib)], check=True, capture_output=True, timeout=60)
    upstream = RecordingUpstream(lambda n, body, context: mesh_pb2.ProcessResponse(replica_id="r" * 300).SerializeToString())
    try:
        port = free_port()
        doc = {"plugins": [{"name": "call_result_to_log", "path": str(lib)}],
               "runtime": {"access_log": True},
               "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                              "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                                          "filters": [{"plugin": "call_result_to_log"}]}]}],
               "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{upstream.port}"}]}]}
        gw = launcher.gateway(to_yaml(doc), port, name="gw-call-result")
        with insecure_channel(gw.port) as channel:
            mesh_pb2_grpc.MeshServiceStub(channel).Process(mesh_pb2.ProcessRequest(request_id="b", data="z" * 50), timeout=5)
        line, = wait_until(lambda: rpc_lines(gw), timeout=5, message="an access line")
        request = 5 + len(mesh_pb2.ProcessRequest(request_id="b", data="z" * 50).SerializeToString())
        response = 5 + len(mesh_pb2.ProcessResponse(replica_id="r" * 300).SerializeToString())
        assert line["seen_bytes"] == f"{request}/{response}", line
        assert (line["request_bytes"], line["response_bytes"]) == (request, response), line
    finally:
        upstream.stop()
