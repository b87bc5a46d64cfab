"""The admin server on several addresses: the full one (loopback) and
read-only ones (the ports a container publishes: the description's
:8080/dashboard and :9090/metrics). Read-only addresses serve every view
and refuse what changes state; no address shows key material."""

from __future__ import annotations

import http.client
import json
import re
import socket
from pathlib import Path

import pki
from conftest import Launcher
from meshkit import HOST, free_port, insecure_channel, read_until_close, to_yaml, wait_until


def request(port: int, method: str, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def test_read_only_admin_addresses_serve_views_and_refuse_changes(bins, mesh, tmp_path):
    certs = pki.dev_pki(tmp_path / "certs")
    port, admin, dashboard, metrics = free_port(), free_port(), free_port(), free_port()
    doc = {
        "admin": {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{dashboard}", f"{HOST}:{metrics}"]},
        "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                       "tls": {"cert": "certs/server.pem", "key": "certs/server.key", "ca": "certs/ca.pem", "client_auth": "required"},
                       "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh",
                                   "filters": [{"plugin": "retry", "config": {"max_attempts": 2}}]}]}],
        "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{r.port}"} for r in mesh.replicas.values()]}],
    }
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-admin")
        key_text = (certs / "server.key").read_text()
        for read_only in (dashboard, metrics):
            for path, marker in (("/metrics", "grpc_active_connections"), ("/dashboard", "<html"), ("/dashboard/data", "{"),
                                 ("/healthz", "ok"), ("/ready", "ready"), ("/clusters", "mesh"), ("/plugins", "retry"),
                                 ("/config", "read_only_addresses")):
                status, body = request(read_only, "GET", path)
                assert status == 200 and marker in body, (read_only, path, status, body[:200])
            status, body = request(read_only, "POST", "/reload")
            # The refusal names the setting, not its value (issue 26).
            assert status == 403 and "admin.address" in body and str(admin) not in body, (status, body)
            for method in ("PUT", "DELETE", "PATCH"):
                status, body = request(read_only, method, "/config")
                assert status == 405 and "read-only" in body, (method, status, body)
            status, body = request(read_only, "GET", "/reload")
            assert status == 403, (status, body)
            # /config names no private key path and holds no key material.
            config = json.loads(request(read_only, "GET", "/config")[1])
            assert config["listeners"][0]["tls"]["key"] == "[redacted]"
            text = json.dumps(config)
            assert "server.key" not in text and "PRIVATE KEY" not in text and key_text[40:80] not in text
        # The full address still reloads, and refuses other methods.
        status, body = request(admin, "POST", "/reload")
        assert status == 200 and "generation 2" in body, (status, body)
        status, _ = request(admin, "DELETE", "/config")
        assert status == 405
        # The reload was one: the read-only addresses saw no change.
        assert "meshgate_config_reloads_total{result=\"ok\"} 1" in request(metrics, "GET", "/metrics")[1]
    finally:
        launch.stop_all()


def test_a_read_only_address_that_cannot_bind_stops_startup(bins, tmp_path):
    import socket
    import subprocess
    holder = socket.socket()
    holder.bind((HOST, 0))
    holder.listen()
    taken = holder.getsockname()[1]
    try:
        config = tmp_path / "mesh.yaml"
        config.write_text(to_yaml({
            "admin": {"address": f"{HOST}:{free_port()}", "read_only_addresses": [f"{HOST}:{taken}"]},
            "listeners": [{"name": "l", "address": f"{HOST}:{free_port()}", "routes": []}], "clusters": []}))
        result = subprocess.run([str(bins.meshgate), "run", "--config", str(config)], capture_output=True, text=True, timeout=30)
        assert result.returncode == 1
        assert f"admin: cannot listen on {HOST}:{taken}" in result.stderr, result.stderr
    finally:
        holder.close()


# --------------------------------------------------------------------------
# Issue 26: the admin addresses may be public (the description's :8080 and
# :9090); nobody may hold them, reload through a browser, read secrets from
# them, or slow calls down by hammering them.


def request_with(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> tuple[int, str]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def plain_gateway(launch: Launcher, admin: dict, replica_port: int | None = None, runtime: dict | None = None,
                  filters: list | None = None) -> int:
    port = free_port()
    doc: dict = {"admin": admin,
                 "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": []}],
                 "clusters": []}
    if runtime:
        doc["runtime"] = runtime
    if replica_port:
        doc["listeners"][0]["routes"] = [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh", "filters": filters or []}]
        doc["clusters"] = [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{replica_port}"}]}]
    launch.gateway(to_yaml(doc), port, name=f"gw-admin-{port}")
    return port


def metric(port: int, name: str) -> float:
    text = request(port, "GET", "/metrics")[1]
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not on /metrics")


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True when the peer closes `sock` (EOF or reset) within `within` s."""
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def test_reload_refuses_csrf_and_dns_rebinding(bins, tmp_path):
    """POST /reload needs a Host naming the admin address (its own host,
    localhost or an IP literal) and no Origin of another
    site: a page's form post or fetch (CSRF) and a DNS-rebinding page are
    refused with 403 and a reason; curl-style clients and `meshgate
    reload` still reload."""
    import subprocess
    admin = free_port()
    launch = Launcher(bins, tmp_path)
    try:
        plain_gateway(launch, {"address": f"{HOST}:{admin}"})
        refused = [
            ({"Host": f"rebound.example:{admin}"}, "DNS-rebinding"),
            ({"Host": f"{HOST}:{admin}", "Origin": "http://evil.example"}, "Origin"),
            ({"Host": f"{HOST}:{admin}", "Origin": "null"}, "Origin"),
            ({"Host": f"localhost:{admin}", "Origin": f"http://{HOST}:{admin}"}, "Origin"),
            ({"Host": f"{HOST}:{admin}", "Origin": "http://evil.example",
              "Content-Type": "application/x-www-form-urlencoded"}, "Origin"),
            ({"Host": f"{HOST}.nip.io:{admin}"}, "does not name"),
        ]
        for headers, reason in refused:
            status, body = request_with(admin, "POST", "/reload", headers, body=b"a=b")
            assert status == 403 and reason in body, (headers, status, body)
        assert metric(admin, 'meshgate_config_reloads_total{result="ok"}') == 0
        for headers in ({"Host": f"{HOST}:{admin}"}, {"Host": f"localhost:{admin}", "Origin": f"http://localhost:{admin}"},
                        {"Host": f"[::1]:{admin}"}, {"Host": "127.0.0.1:19901"}):  # the last: through a port-forward
            status, body = request_with(admin, "POST", "/reload", headers)
            assert status == 200 and "generation" in body, (headers, status, body)
        result = subprocess.run([str(bins.meshgate), "reload", "--admin", f"{HOST}:{admin}"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and "generation 6" in result.stdout, result.stdout + result.stderr
    finally:
        launch.stop_all()


def test_an_admin_address_holds_at_most_max_connections(bins, tmp_path):
    """With the defaults, a read-only address keeps 64 connections open at
    once: idle ones and event streams (`/dashboard/events`) alike. The
    65th is accepted and closed at once; the full address, with its own
    cap, still answers and counts the refusals; a freed slot serves again."""
    admin, public = free_port(), free_port()
    launch = Launcher(bins, tmp_path)
    held: list[socket.socket] = []
    try:
        plain_gateway(launch, {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{public}"]})
        for _ in range(32):
            held.append(socket.create_connection((HOST, public), timeout=5))
        for _ in range(32):
            stream = socket.create_connection((HOST, public), timeout=5)
            stream.sendall(f"GET /dashboard/events HTTP/1.1\r\nHost: {HOST}:{public}\r\n\r\n".encode())
            first = b""
            while b"data: " not in first:
                chunk = stream.recv(65536)
                assert chunk, "an event stream within the cap was closed"
                first += chunk
            held.append(stream)
        # The idle ones were accepted before the streams answered (accepts
        # are served in order); one more is over the cap.
        extra = socket.create_connection((HOST, public), timeout=5)
        assert closed_by_peer(extra, within=3), "a 65th connection stayed open"
        extra.close()
        try:
            status, _ = request(public, "GET", "/healthz")
            raise AssertionError(f"a request past the cap was answered ({status})")
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            pass
        # The full address has its own slots, and says what happened.
        assert metric(admin, "meshgate_admin_connections_refused_total") >= 2
        for sock in held[:8]:
            sock.close()
        wait_until(lambda: _answers(public), timeout=5, message="a freed slot to serve again")
    finally:
        for sock in held:
            sock.close()
        launch.stop_all()


def _answers(port: int) -> bool:
    try:
        return request(port, "GET", "/healthz")[0] == 200
    except (http.client.RemoteDisconnected, ConnectionError):
        return False


def test_idle_and_unfinished_admin_connections_are_closed(bins, tmp_path):
    """admin.idle_timeout closes a connection that sends nothing (or nothing
    more after an answer); admin.request_timeout one whose request never
    ends, however slowly it keeps sending (a head a byte at a time, a body
    shorter than its content-length)."""
    import time
    admin = free_port()
    launch = Launcher(bins, tmp_path)
    try:
        plain_gateway(launch, {"address": f"{HOST}:{admin}", "idle_timeout": "1s", "request_timeout": "1s"})
        started = time.monotonic()
        silent = socket.create_connection((HOST, admin), timeout=5)
        assert closed_by_peer(silent, within=4), "a silent connection stayed open"
        assert time.monotonic() - started >= 0.8
        # Keep-alive: an answer, then idle.
        connection = http.client.HTTPConnection(HOST, admin, timeout=5)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b"ok\n"
        assert closed_by_peer(connection.sock, within=4), "an idle keep-alive connection stayed open"
        connection.close()
        # A head sent a byte at a time keeps no connection past request_timeout.
        dribble = socket.create_connection((HOST, admin), timeout=5)
        started = time.monotonic()
        closed = False
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40:
            try:
                dribble.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 4:
                break
        assert closed or closed_by_peer(dribble, within=1), "a request sent a byte at a time held its connection"
        assert time.monotonic() - started < 4
        # A body that never arrives whole.
        body = socket.create_connection((HOST, admin), timeout=5)
        body.sendall(f"POST /reload HTTP/1.1\r\nHost: {HOST}:{admin}\r\nContent-Length: 1000\r\n\r\n0123456789".encode())
        assert closed_by_peer(body, within=4), "a request with a stalled body held its connection"
        # The address still serves.
        assert request(admin, "GET", "/healthz")[0] == 200
    finally:
        launch.stop_all()


def test_the_open_file_limit_is_raised_and_logged(bins, tmp_path):
    """Started with a soft open-file limit of 256, the gateway raises it to
    the hard limit and logs both; a listener without max_connections gets
    the documented default (10,000, or three quarters of the limit)."""
    import json as json_module
    import resource
    import pytest
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard open-file limit is {hard}")
    port, admin = free_port(), free_port()
    config = tmp_path / "mesh.yaml"
    config.write_text(to_yaml({"admin": {"address": f"{HOST}:{admin}"},
                               "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": []}], "clusters": []}))
    launch = Launcher(bins, tmp_path)
    try:
        proc = launch.group.start("gw-nofile", ["sh", "-c", f'ulimit -Sn 256 && exec "{bins.meshgate}" run --config "{config}"'], port=port)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        soft_now, hard_now = re.search(r"Max open files\s+(\d+)\s+(\d+)", limits).groups()
        assert soft_now == hard_now and int(soft_now) > 256, limits
        lines = [json_module.loads(line) for line in proc.log_text().splitlines() if line.startswith("{")]
        limit = next(line for line in lines if line.get("msg") == "open file limit")
        assert limit["soft_at_start"] == "256" and limit["soft"] == soft_now and limit["hard"] == hard_now, limit
        listening = next(line for line in lines if line.get("msg") == "listening")
        expected = min(10_000, (int(soft_now) - int(soft_now) // 4))
        assert listening["max_connections"] == f"{expected} (default)", listening
    finally:
        launch.stop_all()


def test_read_only_addresses_show_no_filter_settings_or_error_texts(bins, launcher, tmp_path):
    """Filter configs are free-form: a read-only address shows their keys
    with every value redacted; the full address redacts what is named or
    shaped like a secret (here a mirror's value for an `authorization`
    header and a collector URL with a password). Error texts that may
    quote config values (a failed reload) are left out of read-only
    /events, /dashboard/data and /clusters."""
    replica = launcher.replica("r")
    admin, public = free_port(), free_port()
    filters = [{"plugin": "tracing", "config": {"collector": "http://tracer:s3cr3t-pw@127.0.0.1:9/v1/traces", "sampling_ratio": 0.5}},
               {"plugin": "mirror", "config": {"cluster": "mesh", "percent": 0, "header": "authorization",
                                               "header_value": "Bearer opaque-token-77"}},
               {"plugin": "retry", "config": {"max_attempts": 3}}]
    launch = Launcher(launcher.bins, tmp_path)
    try:
        plain_gateway(launch, {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{public}"]},
                      replica_port=replica.port, filters=filters)
        secrets = ("s3cr3t-pw", "opaque-token-77")
        shown = json.loads(request(public, "GET", "/config")[1])
        chain = shown["listeners"][0]["routes"][0]["filters"]
        assert chain[2] == {"plugin": "retry", "config": {"max_attempts": "[redacted]"}}, chain
        assert set(chain[1]["config"]) == {"cluster", "percent", "header", "header_value"}
        assert all(v == "[redacted]" for f in chain for v in f["config"].values()), chain
        full = request(admin, "GET", "/config")[1]
        assert not any(s in full for s in secrets), full
        assert json.loads(full)["listeners"][0]["routes"][0]["filters"][2]["config"] == {"max_attempts": 3}
        # A reload that fails on a value: the full address shows why, a
        # read-only one does not quote it.
        config_path = next(tmp_path.glob("gw-admin-*.yaml"))
        good = config_path.read_text()
        config_path.write_text(good.replace("admin:", "runtime:\n  drain_timeout: hunter2-value\nadmin:", 1))
        status, body = request(admin, "POST", "/reload")
        assert status == 400 and "hunter2-value" in body, body
        assert "hunter2-value" in request(admin, "GET", "/events")[1]
        for path in ("/events", "/dashboard/data", "/dashboard"):
            status, body = request(public, "GET", path)
            assert status == 200 and "reload failed" in body and "hunter2-value" not in body, (path, body[-500:])
            assert str(config_path) not in body, path
        config_path.write_text(good)
    finally:
        launch.stop_all()


def test_hammering_metrics_neither_fails_calls_nor_gathers_per_request(bins, launcher, mesh_pb2, mesh_pb2_grpc, tmp_path):
    """180 clients (h2load, HTTP/1.1 keep-alive) ask for /metrics on the
    three admin addresses as fast as they are answered for 4 s while a
    grpcio client calls through the gateway: every call succeeds, and the
    event loops copy their counters at most about once a second
    (`meshgate_metrics_gathers_total`) however many scrapes come."""
    import subprocess
    import threading
    import time
    import grpc
    replica = launcher.replica("r")
    admin, public1, public2 = free_port(), free_port(), free_port()
    launch = Launcher(launcher.bins, tmp_path)
    try:
        port = plain_gateway(launch, {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{public1}", f"{HOST}:{public2}"]},
                             replica_port=replica.port)
        gathers_before = metric(admin, "meshgate_metrics_gathers_total")
        failures: list[str] = []
        calls = [0]
        stop = threading.Event()

        def traffic() -> None:
            with insecure_channel(port) as channel:
                stub = mesh_pb2_grpc.MeshServiceStub(channel)
                while not stop.is_set():
                    try:
                        stub.Process(mesh_pb2.ProcessRequest(request_id="c", data="x"), timeout=5)
                        calls[0] += 1
                    except grpc.RpcError as error:
                        failures.append(f"{error.code()}: {error.details()}")
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        started = time.monotonic()
        loads = [subprocess.Popen(["h2load", "--h1", "-c", "60", "-D", "4", f"http://{HOST}:{p}/metrics"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for p in (admin, public1, public2)]
        outputs = [load.communicate(timeout=60)[0] for load in loads]
        elapsed = time.monotonic() - started
        stop.set()
        sender.join(timeout=10)
        succeeded = 0
        for output in outputs:
            m = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", output)
            assert m, output
            succeeded += int(m.group(1))
        gathers = metric(admin, "meshgate_metrics_gathers_total") - gathers_before
        assert not failures, failures[:5]
        assert calls[0] > 50, calls[0]
        assert succeeded >= 180, outputs
        # One gather a second at most (plus the one this check asked for).
        assert 1 <= gathers <= elapsed + 3, (gathers, elapsed, succeeded)
        assert metric(admin, "meshgate_metrics_scrapes_total") >= succeeded
    finally:
        launch.stop_all()


# --------------------------------------------------------------------------
# Review of issue 26: read-only events, DNS rebinding on the full address,
# pipelined requests, answers and event streams nobody reads.


class FailingHealth:
    """An independent grpcio server whose grpc.health.v1 Check fails with
    INTERNAL and a message quoting something private, as an upstream's
    error may."""

    SECRET = "db password hunter3-value rejected"

    def __init__(self):
        import grpc
        from concurrent import futures

        def check(request, context):
            context.abort(grpc.StatusCode.INTERNAL, self.SECRET)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
            "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)})])
        self.port = free_port()
        self.server.add_insecure_port(f"{HOST}:{self.port}")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None)


def test_read_only_events_show_only_allowed_fields(bins, tmp_path):
    """A health check fails with what the upstream said (INTERNAL and a
    message quoting a password): the full address's /events shows the
    reason; read-only /events, /dashboard/data and /dashboard show the
    event, its cluster and endpoint, and the reason redacted."""
    upstream = FailingHealth()
    admin, public = free_port(), free_port()
    port = free_port()
    doc = {"admin": {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{public}"]},
           "listeners": [{"name": "public", "address": f"{HOST}:{port}",
                          "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
           "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{upstream.port}"}],
                         "health_check": {"mode": "check", "interval": "200ms", "timeout": "1s", "unhealthy_threshold": 1}}]}
    launch = Launcher(bins, tmp_path)
    try:
        launch.gateway(to_yaml(doc), port, name="gw-events")
        wait_until(lambda: FailingHealth.SECRET in request(admin, "GET", "/events")[1], timeout=10,
                   message="the failed check's reason on the full address's /events")
        events = json.loads(request(public, "GET", "/events")[1])["events"]
        unhealthy = next(e for e in events if e["message"] == "endpoint unhealthy")
        assert unhealthy["fields"]["cluster"] == "mesh" and unhealthy["fields"]["endpoint"] == f"{HOST}:{upstream.port}", unhealthy
        assert unhealthy["fields"]["reason"].startswith("[redacted"), unhealthy
        for path in ("/events", "/dashboard/data", "/dashboard"):
            status, body = request(public, "GET", path)
            assert status == 200 and "endpoint unhealthy" in body and "hunter3" not in body and "INTERNAL" not in body, (path, body[-600:])
    finally:
        launch.stop_all()
        upstream.stop()


def raw_request(port: int, text: str, timeout: float = 5) -> tuple[int, str]:
    """One request as written (any Host, or none); status and body."""
    sock = socket.create_connection((HOST, port), timeout=timeout)
    try:
        sock.sendall(text.encode())
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode()


def test_the_full_admin_address_answers_only_requests_that_name_it(bins, tmp_path):
    """A page that rebinds its own DNS name to the admin's address would
    read /config, /events and /clusters as its own origin: the full
    address answers 403 to every request whose Host is not its host,
    localhost, an IP literal or a name in admin.allowed_hosts. Read-only
    addresses answer any Host (their content is redacted; Prometheus
    scrapes by name). POST /reload from a page of another site is refused
    by its Sec-Fetch-Site."""
    admin, public = free_port(), free_port()
    launch = Launcher(bins, tmp_path)
    try:
        plain_gateway(launch, {"address": f"{HOST}:{admin}", "read_only_addresses": [f"{HOST}:{public}"],
                               "allowed_hosts": ["gateway.internal"]})
        for path in ("/config", "/events", "/clusters", "/metrics", "/dashboard", "/dashboard/events", "/healthz"):
            status, body = request_with(admin, "GET", path, {"Host": f"rebound.example:{admin}"})
            assert status == 403 and "DNS-rebinding" in body and "admin.allowed_hosts" in body, (path, status, body[:200])
            assert "generation" not in body
        for host in (f"{HOST}:{admin}", f"localhost:{admin}", f"gateway.internal:{admin}", "GATEWAY.INTERNAL.", f"[::1]:{admin}"):
            status, body = request_with(admin, "GET", "/config", {"Host": host})
            assert status == 200 and "generation" in body, (host, status, body[:200])
        for host in (f"rebound.example:{public}", f"prometheus-target.example:{public}"):
            status, body = request_with(public, "GET", "/config", {"Host": host})
            assert status == 200 and "generation" in body, (host, status)
        # HTTP/1.0 without Host is no browser's request.
        status, body = raw_request(admin, "GET /healthz HTTP/1.0\r\n\r\n")
        assert status == 200 and body == "ok\n", (status, body)
        # Sec-Fetch-Site: a page elsewhere, even with no Origin.
        for site in ("cross-site", "same-site"):
            status, body = request_with(admin, "POST", "/reload", {"Host": f"{HOST}:{admin}", "Sec-Fetch-Site": site})
            assert status == 403 and "Sec-Fetch-Site" in body, (site, status, body)
        assert metric(admin, 'meshgate_config_reloads_total{result="ok"}') == 0
        for site in ("same-origin", "none"):
            status, body = request_with(admin, "POST", "/reload", {"Host": f"{HOST}:{admin}", "Origin": f"http://{HOST}:{admin}",
                                                                    "Sec-Fetch-Site": site})
            assert status == 200 and "generation" in body, (site, status, body)
    finally:
        launch.stop_all()


def read_events(sock: socket.socket, seconds: float) -> tuple[int, bool]:
    """Reads `sock` for `seconds`: (event-stream updates seen, closed?)."""
    import time
    deadline = time.monotonic() + seconds
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return data.count(b"data: "), True
        if not chunk:
            return data.count(b"data: "), True
        data += chunk
    return data.count(b"data: "), False


def test_an_event_stream_pipelined_after_an_answer_stays_open_while_read(bins, tmp_path):
    """Two requests in one write: GET /metrics, then GET /dashboard/events.
    /metrics is answered later (after a gather), so the second request
    waits in NIO's pipelining handler, which hands it over while the first
    answer's end is being written; the stream must still be a stream (no
    idle or request timer: idle_timeout and request_timeout are 1 s here)
    for as long as its client reads: 3.5 s, an update a second."""
    admin = free_port()
    launch = Launcher(bins, tmp_path)
    try:
        plain_gateway(launch, {"address": f"{HOST}:{admin}", "idle_timeout": "1s", "request_timeout": "1s"})
        sock = socket.create_connection((HOST, admin), timeout=5)
        try:
            sock.sendall((f"GET /metrics HTTP/1.1\r\nHost: {HOST}:{admin}\r\n\r\n"
                          f"GET /dashboard/events HTTP/1.1\r\nHost: {HOST}:{admin}\r\n\r\n").encode())
            updates, closed = read_events(sock, 3.5)
            assert not closed, f"the pipelined event stream was closed after {updates} updates"
            assert updates >= 3, updates
        finally:
            sock.close()
    finally:
        launch.stop_all()


def test_answers_and_event_streams_nobody_reads_are_closed(bins, tmp_path):
    """A client that pipelines /config requests for 2 s and never reads:
    an answer leaves before the next request is answered, so the gateway
    holds one answer, not all of them (its memory stays flat: it grew by
    40 MiB a second here before, a gigabyte in seconds with /dashboard),
    and the answer that cannot leave closes the connection after
    admin.request_timeout. An event stream whose
    client reads nothing is closed after admin.idle_timeout (its socket
    holds 16 KiB at most, so the stop shows at once, not after megabytes
    of updates). The address serves others meanwhile."""
    import time
    admin, port = free_port(), free_port()
    launch = Launcher(bins, tmp_path)
    try:
        # 300 endpoints (never called) make each dashboard update ~40 KB, so
        # that a client that reads nothing stops taking them at once.
        gateway = launch.gateway(to_yaml({"admin": {"address": f"{HOST}:{admin}", "idle_timeout": "2s", "request_timeout": "1s"},
                                          "listeners": [{"name": "public", "address": f"{HOST}:{port}", "routes": []}],
                                          "clusters": [{"name": "many", "endpoints": [{"address": f"{HOST}:{20000 + i}"} for i in range(300)]}]}),
                                 port, name="gw-unread")
        assert request(admin, "GET", "/config")[0] == 200
        rss_before = _rss_mib(gateway.proc.pid)
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        silent.connect((HOST, admin))
        silent.setblocking(False)
        batch = f"GET /config HTTP/1.1\r\nHost: {HOST}:{admin}\r\n\r\n".encode() * 256
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 2 and not closed:
            try:
                silent.send(batch)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        time.sleep(1)  # what was read is answered by now
        grown = _rss_mib(gateway.proc.pid) - rss_before
        assert grown < 24, f"the gateway grew by {grown} MiB holding answers nobody reads"
        silent.setblocking(True)
        # Reading nothing, so the close shows through poll.
        assert closed or _peer_closes_without_reading(silent, within=5), "an answer nobody reads held its connection"
        assert _answers(admin)
        silent.close()
        # An event stream whose client reads nothing at all. Its close is
        # seen in the gateway's descriptors: the FIN waits behind the
        # updates the client's closed window holds back.
        pid = gateway.proc.pid
        time.sleep(0.3)  # the closed connections' descriptors are gone
        before = _open_files(pid)
        stream = socket.socket()
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stream.connect((HOST, admin))
        stream.sendall(f"GET /dashboard/events HTTP/1.1\r\nHost: {HOST}:{admin}\r\n\r\n".encode())
        started = time.monotonic()
        wait_until(lambda: _open_files(pid) > before, timeout=5, message="the stream's connection accepted")
        wait_until(lambda: _open_files(pid) <= before, timeout=10, interval=0.05, message="the gateway to close a stream nobody reads")
        assert time.monotonic() - started >= 1.5
        # Read now: a few updates (what the socket buffers held), then the end.
        data, closed = read_until_close(stream, 5)
        assert closed and data.count(b"data: ") <= 3, (closed, len(data))
        assert _answers(admin)
        stream.close()
    finally:
        launch.stop_all()


def _open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def _rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _peer_closes_without_reading(sock: socket.socket, within: float) -> bool:
    """Whether the peer closes `sock` within `within` s, seen without
    reading what it sent: poll's POLLRDHUP (its FIN) or POLLHUP/POLLERR
    (a reset), whatever data waits unread."""
    import select
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return bool(poller.poll(int(within * 1000)))
