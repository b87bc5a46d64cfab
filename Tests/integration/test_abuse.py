"""Abusive HTTP/2 peers, crafted with the `h2` package and raw frames: the
gateway refuses them (GOAWAY and/or close) and keeps serving everybody else."""

from __future__ import annotations

import socket
import struct
import time

import grpc
import h2.settings

from meshkit import HOST, grpc_frame, insecure_channel

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def drain(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Reads for up to `seconds`; returns what came and whether the peer closed."""
    data, deadline = b"", time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def still_serving(mesh) -> None:
    with insecure_channel(mesh.port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        assert stub.Process(mesh.pb2.ProcessRequest(request_id="ok", data="x"), timeout=5).result == "processed: x"


def test_rapid_reset_is_cut_off(mesh):
    """5,000 streams opened and reset at once (CVE-2023-44487): the gateway
    ends that connection with GOAWAY instead of working through them all,
    and serves other clients meanwhile."""
    import h2.config
    import h2.connection
    import h2.errors

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100})
    body = grpc_frame(mesh.pb2.ProcessRequest(request_id="rr").SerializeToString())
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", HOST), (":path", "/mesh.v1.MeshService/Process"),
               ("content-type", "application/grpc"), ("te", "trailers"), ("x-mesh-delay-ms", "200")]
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(conn.data_to_send())
        for _ in range(5000):
            stream = conn.get_next_available_stream_id()
            conn.send_headers(stream, headers)
            conn.send_data(stream, body)
            conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        try:
            sock.sendall(conn.data_to_send())
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = drain(sock, 5)
    frames = []
    i = 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        frames.append(data[i + 3])
        i += 9 + length
    assert 0x7 in frames or closed, f"no GOAWAY and no close after a rapid reset flood: frame types {sorted(set(frames))}"
    still_serving(mesh)


def test_continuation_flood_is_cut_off(mesh):
    """A HEADERS frame followed by endless CONTINUATION frames never ending
    the header block: the connection is closed early, not buffered forever."""
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(0x4, 0, 0, b""))
        sock.sendall(frame(0x1, 0x0, 1, b"\x82"))  # HEADERS without END_HEADERS (:method GET)
        closed = False
        for _ in range(2000):
            try:
                sock.sendall(frame(0x9, 0x0, 1, b"\x00" * 64 + b"x" * 1000))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        if not closed:
            _, closed = drain(sock, 5)
    assert closed, "the gateway kept reading CONTINUATION frames"
    still_serving(mesh)


def test_garbage_frames_do_not_hurt_other_streams(mesh):
    """While one client streams normally, another sends an invalid frame
    (DATA on stream 0): only the offender's connection is closed."""
    with insecure_channel(mesh.port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        stream = stub.StreamEvents(mesh.pb2.StreamRequest(count=20, interval_ms=50), timeout=10)
        first = next(stream)
        with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
            sock.sendall(PREFACE + frame(0x4, 0, 0, b"") + frame(0x0, 0x0, 0, b"bad"))
            _, closed = drain(sock, 5)
        assert closed
        rest = list(stream)
        assert stream.code() == grpc.StatusCode.OK
        assert [first.sequence] + [e.sequence for e in rest] == list(range(20))
