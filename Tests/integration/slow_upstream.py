"""An upstream that reads slowly, for the backpressure tests: a raw HTTP/2
gRPC server that gives the gateway no window credit until told to."""

from __future__ import annotations

import socket
import threading
from typing import Callable

from meshkit import RawServer, grpc_frame, grpc_messages


def collect_metrics(pb, body: bytes) -> bytes:
    """CollectMetrics' answer to a request body: the MetricsSummary of its messages (replica "slow")."""
    summary = pb.MetricsSummary(replica_id="slow")
    for message in grpc_messages(body):
        summary.count += 1
        summary.sum += pb.Metric.FromString(message).value
    return summary.SerializeToString()


class SlowReadingUpstream(RawServer):
    """A raw HTTP/2 gRPC server (the `h2` package) that takes nothing while
    `reading` is clear: it gives no window credit, so the gateway can send
    it only its initial 64 KiB windows. Once `reading` is set it credits
    every byte, and at the end of each request answers the message
    `answer(request body)` returns, with grpc-status 0."""

    def __init__(self, answer: Callable[[bytes], bytes]):
        self.answer = answer
        self.reading = threading.Event()
        self.received = 0  # DATA bytes received
        super().__init__(backlog=8)

    def serve_connection(self, sock: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        bodies: dict[int, bytearray] = {}
        unacked: dict[int, int] = {}
        sock.settimeout(0.05)
        try:
            sock.sendall(conn.data_to_send())
            while not self.stopped:
                try:
                    data = sock.recv(65536)
                except socket.timeout:
                    data = None
                if data == b"":
                    return
                for event in conn.receive_data(data) if data else []:
                    if isinstance(event, h2.events.RequestReceived):
                        bodies[event.stream_id] = bytearray()
                    elif isinstance(event, h2.events.DataReceived):
                        self.received += len(event.data)
                        bodies[event.stream_id] += event.data
                        unacked[event.stream_id] = unacked.get(event.stream_id, 0) + event.flow_controlled_length
                    elif isinstance(event, h2.events.StreamEnded):
                        self._answer(conn, event.stream_id, bytes(bodies.pop(event.stream_id)))
                if self.reading.is_set():
                    for sid, n in list(unacked.items()):
                        if n:
                            conn.acknowledge_received_data(n, sid)
                        del unacked[sid]
                pending = conn.data_to_send()
                if pending:
                    sock.sendall(pending)
        except Exception:
            return

    def _answer(self, conn, sid: int, body: bytes) -> None:
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.send_data(sid, grpc_frame(self.answer(body)))
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)
