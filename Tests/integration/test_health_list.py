"""grpc.health.v1.Health/List on a listener (README "What the proxy does",
Health: the gateway serves Check, Watch and List; "" is the gateway
itself, a routed service is SERVING while every cluster its routes point
to has a healthy endpoint), with grpcio-health-checking's own stub."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coverkit import config_doc
from meshkit import free_port, insecure_channel, to_yaml, wait_until

CHECK = {"mode": "check", "interval": "200ms", "timeout": "300ms", "unhealthy_threshold": 1, "healthy_threshold": 1}
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_list_reports_the_gateway_and_every_routed_service(launcher, mesh_pb2, mesh_pb2_grpc):
    """Two routed services: mesh.v1.MeshService on a healthy replica and
    other.v1.Other on a cluster whose only endpoint refuses connections.
    List answers "" SERVING, MeshService SERVING, Other NOT_SERVING and
    nothing else; when the replica turns NOT_SERVING, List follows."""
    replica = launcher.replica("hl1")
    port = free_port()
    doc = config_doc(port, None, {"mesh": [replica.port], "dead": [free_port()]},
                     [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"},
                      {"match": {"service": "other.v1.Other"}, "cluster": "dead"}],
                     cluster_extra={"mesh": {"health_check": CHECK}, "dead": {"health_check": CHECK}})
    launcher.gateway(to_yaml(doc), port, name="gw-health-list")
    expected = {"": SERVING, "mesh.v1.MeshService": SERVING, "other.v1.Other": NOT_SERVING}
    with insecure_channel(port) as ch, insecure_channel(replica.port) as control_channel:
        health = health_pb2_grpc.HealthStub(ch)

        def listed() -> dict:
            reply = health.List(health_pb2.HealthListRequest(), timeout=5)
            return {name: response.status for name, response in reply.statuses.items()}
        seen: list[dict] = []

        def wait_listed(want: dict) -> None:
            try:
                wait_until(lambda: seen.append(listed()) or seen[-1] == want, timeout=10, interval=0.1,
                           message=f"List to show {want}")
            except AssertionError as e:
                raise AssertionError(f"{e}; last List: {seen[-1:]}") from None
        wait_listed(expected)

        control = mesh_pb2_grpc.SampleControlStub(control_channel)
        control.SetServing(mesh_pb2.SetServingRequest(serving=False), timeout=5)
        expected_down = {**expected, "mesh.v1.MeshService": NOT_SERVING}
        wait_listed(expected_down)
        # Check agrees with List, name by name.
        for name, status in expected_down.items():
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == status, name
        with_error = None
        try:
            health.Check(health_pb2.HealthCheckRequest(service="nobody.v1.Nothing"), timeout=5)
        except grpc.RpcError as error:
            with_error = error.code()
        assert with_error == grpc.StatusCode.NOT_FOUND
        assert "nobody.v1.Nothing" not in listed()
