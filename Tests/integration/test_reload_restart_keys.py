"""Restart-only settings and reload (README "Reload and hot swap":
"Changes to listeners or the admin address still need a restart; /reload
says so", and the keys the configuration reference marks restart-only).

One gateway (admin address, a listener, one replica); for each restart-only
key the config file is changed and `POST /reload` must answer 400 naming
the key and "needs a restart", the generation must stay, and calls must go
on. A reloadable change (a route timeout) is the control: it reloads."""

from __future__ import annotations

import copy

import grpc
import pytest

import pki
from conftest import Launcher
from coverkit import admin_json, config_doc, mesh_route, post_reload
from meshkit import HOST, addr, free_port, insecure_channel, to_yaml


class RunningGateway:
    def __init__(self, launch: Launcher, doc: dict, port: int, admin: int, gateway, pb2, pb2_grpc, certs):
        self.launch, self.doc, self.port, self.admin = launch, doc, port, admin
        self.gateway, self.pb2, self.pb2_grpc, self.certs = gateway, pb2, pb2_grpc, certs

    def write(self, doc: dict) -> None:
        self.gateway.config_path.write_text(to_yaml(doc))

    def generation(self) -> int:
        return admin_json(self.admin, "/config")["generation"]

    def failed_reloads(self) -> int:
        events = admin_json(self.admin, "/events")["events"]
        return sum(1 for e in events if e["message"] == "reload failed; the running config stays")

    def call_ok(self) -> None:
        with insecure_channel(self.port) as ch:
            reply = self.pb2_grpc.MeshServiceStub(ch).Process(self.pb2.ProcessRequest(request_id="rk"), timeout=10)
        assert reply.replica_id == "rk1"


@pytest.fixture(scope="module")
def running(bins, mesh_pb2, mesh_pb2_grpc, tmp_path_factory):
    work = tmp_path_factory.mktemp("restart_keys")
    certs = pki.dev_pki(work / "certs")
    launch = Launcher(bins, work)
    try:
        replica = launch.replica("rk1")
        port, admin = free_port(), free_port()
        doc = config_doc(port, admin, {"mesh": [replica.port]}, [mesh_route()],
                         runtime={"max_metric_series": 100, "metric_series_idle_timeout": "5m"})
        doc["admin"].update({"max_connections": 16, "idle_timeout": "30s", "request_timeout": "5s"})
        gateway = launch.gateway(to_yaml(doc), port, name="gw-restart-keys")
        r = RunningGateway(launch, doc, port, admin, gateway, mesh_pb2, mesh_pb2_grpc, certs)
        r.call_ok()
        yield r
    finally:
        launch.stop_all()


def _listener(doc: dict) -> dict:
    return doc["listeners"][0]


def change_listener_address(doc, r):
    _listener(doc)["address"] = addr(free_port())


def change_listener_name(doc, r):
    _listener(doc)["name"] = "renamed"


def change_max_concurrent_streams(doc, r):
    _listener(doc)["max_concurrent_streams"] = 7


def add_listener_tls(doc, r):
    _listener(doc)["tls"] = {"cert": str(r.certs / "server.pem"), "key": str(r.certs / "server.key")}


def change_admin_address(doc, r):
    doc["admin"]["address"] = addr(free_port())


def add_read_only_address(doc, r):
    doc["admin"]["read_only_addresses"] = [addr(free_port())]


def change_admin_max_connections(doc, r):
    doc["admin"]["max_connections"] = 4


def change_admin_idle_timeout(doc, r):
    doc["admin"]["idle_timeout"] = "5s"


def change_admin_request_timeout(doc, r):
    doc["admin"]["request_timeout"] = "2s"


def change_max_metric_series(doc, r):
    doc["runtime"]["max_metric_series"] = 10


def change_metric_series_idle_timeout(doc, r):
    doc["runtime"]["metric_series_idle_timeout"] = "1s"


def change_event_loops(doc, r):
    doc["runtime"]["event_loops"] = 1


def add_admin_allowed_host(doc, r):
    doc["admin"]["allowed_hosts"] = ["gateway.internal"]


def change_listener_max_connections(doc, r):
    _listener(doc)["max_connections"] = 1


@pytest.mark.parametrize("change, named", [
    (change_listener_address, "the listeners"),
    (change_listener_name, "the listeners"),
    (change_max_concurrent_streams, "the listeners"),
    (add_listener_tls, "a listener's tls block"),
    (change_admin_address, "the admin address"),
    (add_read_only_address, "admin.read_only_addresses"),
    (change_admin_max_connections, "admin.max_connections, idle_timeout or request_timeout"),
    (change_admin_idle_timeout, "admin.max_connections, idle_timeout or request_timeout"),
    (change_admin_request_timeout, "admin.max_connections, idle_timeout or request_timeout"),
    (change_max_metric_series, "runtime.max_metric_series or metric_series_idle_timeout"),
    (change_metric_series_idle_timeout, "runtime.max_metric_series or metric_series_idle_timeout"),
    (change_event_loops, "runtime.event_loops"),
    (add_admin_allowed_host, "admin.allowed_hosts"),
    (change_listener_max_connections, "a listener's max_connections"),
])
def test_a_restart_only_change_is_refused_by_reload(running, change, named):
    """The changed file is refused: 400, the key named, "needs a restart";
    the generation stays, the failure is counted, calls go on."""
    r = running
    before = r.generation()
    failed_before = r.failed_reloads()
    changed = copy.deepcopy(r.doc)
    change(changed, r)
    r.write(changed)
    try:
        status, body = post_reload(r.admin)
    finally:
        r.write(r.doc)
    assert status == 400, (status, body)
    assert named in body and "needs a restart" in body, body
    assert r.generation() == before
    assert r.failed_reloads() == failed_before + 1
    r.call_ok()


def test_a_reloadable_change_reloads(running):
    """The control: runtime.drain_timeout is not restart-only, so the same
    reload path answers 200 and the generation moves on (this is what every
    case above would see if the key were not checked)."""
    r = running
    before = r.generation()
    changed = copy.deepcopy(r.doc)
    changed["runtime"]["drain_timeout"] = "7s"
    r.write(changed)
    try:
        status, body = post_reload(r.admin)
    finally:
        r.write(r.doc)
    assert status == 200, (status, body)
    assert r.generation() == before + 1
    assert admin_json(r.admin, "/config")["runtime"]["drain_timeout"].startswith("7"), admin_json(r.admin, "/config")
    r.call_ok()
    # Back to the original file, so the other cases compare against it.
    assert post_reload(r.admin)[0] == 200
