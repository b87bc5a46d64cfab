"""A raw HTTP/2 server (the `h2` package) standing in for a mirror's shadow
cluster in test_traffic.py: it records every request it receives (head
and body) as a JSON line, so a test sees the shadow's :authority.

    python3 shadow_server.py MODE PORT LOG

MODE "ok" answers each finished request with an empty OK gRPC response;
"stall" never answers and never gives flow-control window back.
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events


def serve(conn: socket.socket, mode: str, log, lock: threading.Lock) -> None:
    h2conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=False))
    h2conn.initiate_connection()
    conn.sendall(h2conn.data_to_send())
    streams: dict[int, dict] = {}
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            for event in h2conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    streams[event.stream_id] = {"headers": {k.decode(): v.decode() for k, v in event.headers}, "body": b""}
                elif isinstance(event, h2.events.DataReceived):
                    streams[event.stream_id]["body"] += event.data
                    if mode == "ok":
                        h2conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded):
                    request = streams.pop(event.stream_id)
                    request["body"] = request["body"].decode("latin-1")
                    with lock:
                        log.write(json.dumps(request) + "\n")
                        log.flush()
                    if mode == "ok":
                        h2conn.send_headers(event.stream_id, [(":status", "200"), ("content-type", "application/grpc")])
                        h2conn.send_data(event.stream_id, b"\x00\x00\x00\x00\x00")
                        h2conn.send_headers(event.stream_id, [("grpc-status", "0")], end_stream=True)
                elif isinstance(event, h2.events.StreamReset):
                    streams.pop(event.stream_id, None)
            conn.sendall(h2conn.data_to_send())
    except Exception:
        return
    finally:
        conn.close()


def main() -> None:
    mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen(64)
    lock = threading.Lock()
    with open(path, "a") as log:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn, mode, log, lock), daemon=True).start()


if __name__ == "__main__":
    main()
