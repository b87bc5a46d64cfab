"""An upstream that reads slowly, for the backpressure tests: a raw HTTP/2
gRPC server that gives the gateway no window credit until told to."""

from __future__ import annotations

import socket
import threading
from typing import Callable

from meshkit import HOST, grpc_frame, grpc_messages


def collect_metrics(pb, body: bytes) -> bytes:
    """CollectMetrics' answer to a request body: the MetricsSummary of its messages (replica "slow")."""
    summary = pb.MetricsSummary(replica_id="slow")
    for message in grpc_messages(body):
        summary.count += 1
        summary.sum += pb.Metric.FromString(message).value
    return summary.SerializeToString()


class SlowReadingUpstream:
    """A raw HTTP/2 gRPC server (the `h2` package) that takes nothing while
    `reading` is clear: it gives no window credit, so the gateway can send
    it only its initial 64 KiB windows. Once `reading` is set it credits
    every byte, and at the end of each request answers the message
    `answer(request body)` returns, with grpc-status 0."""

    def __init__(self, answer: Callable[[bytes], bytes]):
        self.answer = answer
        self.reading = threading.Event()
        self.received = 0  # DATA bytes received
        self._server = socket.socket()
        self._server.bind((HOST, 0))
        self._server.listen(8)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
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
            while not self._stop.is_set():
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
        finally:
            sock.close()

    def _answer(self, conn, sid: int, body: bytes) -> None:
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        conn.send_data(sid, grpc_frame(self.answer(body)))
        conn.send_headers(sid, [("grpc-status", "0")], end_stream=True)

    def stop(self) -> None:
        self._stop.set()
        self._server.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
