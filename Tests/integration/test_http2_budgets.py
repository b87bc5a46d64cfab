"""HTTP/2 budgets from README "Limits", end to end with raw frames:
SETTINGS/PING floods from a client that does not read (1,000 queued ACKs,
then the connection is closed) and frames nghttp2 rejects (100 per
connection, then GOAWAY ENHANCE_YOUR_CALM). Each abuser loses only its own
connection: a grpcio client is served afterwards."""

from __future__ import annotations

import socket
import struct
import time

import grpc
import pytest
from hpack import Encoder

from coverkit import PROCESS, config_doc, mesh_route
from meshkit import HOST, free_port, grpc_frame, insecure_channel, parse_h2_frames, read_until_close, to_yaml

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
ENHANCE_YOUR_CALM = 0xB


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def whole_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream, payload) of every complete frame."""
    out, i = [], 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + length > len(data):
            break
        out.append((data[i + 3], data[i + 4], int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF,
                    data[i + 9:i + 9 + length]))
        i += 9 + length
    return out


@pytest.fixture
def gateway(launcher, mesh_pb2, mesh_pb2_grpc):
    replica = launcher.replica("b1")
    port = free_port()
    launcher.gateway(to_yaml(config_doc(port, None, {"mesh": [replica.port]}, [mesh_route()])), port, name="gw-budgets")

    def serves() -> None:
        with insecure_channel(port) as ch:
            reply = mesh_pb2_grpc.MeshServiceStub(ch).Process(mesh_pb2.ProcessRequest(request_id="ok", data="x"), timeout=5)
        assert reply.result == "processed: x"
    serves()
    return port, serves


# --------------------------------------------------------------------------
# ACK floods


def flood_without_reading(port: int, ack_demanding: bytes, max_frames: int) -> tuple[int, bytes, bool]:
    """Sends up to `max_frames` frames that each demand an ACK, in batches of
    1,000, on a socket with a 4 KiB receive buffer that is never read.
    Returns (frames sent, bytes then received, whether the gateway closed)."""
    batch = ack_demanding * 1000
    sent = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.settimeout(5)
        sock.connect((HOST, port))
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        while sent < max_frames:
            try:
                sock.sendall(batch)
            except (BrokenPipeError, ConnectionResetError):
                return sent, b"", True
            except socket.timeout:
                break  # the gateway stopped reading us
            sent += 1000
        data, closed = read_until_close(sock, 15)
        return sent, data, closed
    finally:
        sock.close()


def paced_flood(port: int, ack_demanding: bytes, batches: int, per_batch: int) -> tuple[int, bool]:
    """`batches` bursts of `per_batch` ACK-demanding frames, each burst's
    ACKs read before the next: (ACKs received, whether the gateway closed)."""
    acks = 0
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b""))
        data = b""
        for n in range(1, batches + 1):
            sock.sendall(ack_demanding * per_batch)

            def acked(d: bytes) -> bool:
                return sum(1 for k, f, _, _ in whole_frames(data + d) if f & ACK and k in (PING, SETTINGS)) >= n * per_batch
            more, closed = read_until_close(sock, 10, done=acked)
            data += more
            acks = sum(1 for k, f, _, _ in whole_frames(data) if f & ACK and k in (PING, SETTINGS))
            if closed or acks < n * per_batch:
                return acks, closed
    return acks, False


@pytest.mark.parametrize("kind", ["PING", "SETTINGS"])
def test_an_ack_flood_from_a_client_that_does_not_read_is_closed(gateway, kind):
    """A client sends PINGs (or empty SETTINGS) and reads nothing: once its
    socket is full the gateway's ACKs queue up, and past 1,000 queued the
    gateway closes the connection instead of queueing more. The control: a
    client that reads each burst's ACKs (40 bursts of 500) gets all 20,000
    and keeps its connection, so the close is the queue budget, not a cap
    on frames. Others are served after both."""
    port, serves = gateway
    ack_demanding = frame(PING, 0, 0, b"12345678") if kind == "PING" else frame(SETTINGS, 0, 0, b"")
    sent, data, closed = flood_without_reading(port, ack_demanding, max_frames=1_500_000)
    assert closed, f"{sent} {kind} frames without reading: the gateway neither closed nor stopped reading"
    acks = sum(1 for k, f, _, _ in whole_frames(data) if f & ACK)
    assert acks < sent, (acks, sent)
    serves()

    acks, closed = paced_flood(port, ack_demanding, batches=40, per_batch=500)
    assert not closed and acks >= 20_000, f"a reading client got {acks} ACKs of 20,000 (closed: {closed})"
    serves()


# --------------------------------------------------------------------------
# Invalid frames


def test_the_101st_frame_nghttp2_rejects_ends_the_connection(gateway):
    """100 request heads without :path (a stream error nghttp2 rejects:
    RST_STREAM PROTOCOL_ERROR, on_invalid_frame_recv) leave the connection
    usable: it answers a PING, with no GOAWAY. The 101st ends it with
    GOAWAY ENHANCE_YOUR_CALM (README: 100 per connection).

    (README's example, a WINDOW_UPDATE of 0 on a stream, is no such frame
    with the nghttp2 the gateway runs: nghttp2 answers the first one with
    GOAWAY PROTOCOL_ERROR, a connection error.)"""
    port, serves = gateway
    encoder = Encoder()

    def open_and_poison(stream: int) -> bytes:
        block = encoder.encode([(":method", "POST"), (":scheme", "http"), (":authority", HOST),
                                ("content-type", "application/grpc"), ("te", "trailers")])  # no :path
        return frame(HEADERS, END_HEADERS | END_STREAM, stream, block)

    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + b"".join(open_and_poison(2 * i + 1) for i in range(100))
                     + frame(PING, 0, 0, b"budget99"))

        def pinged(data: bytes) -> bool:
            return any(k == PING and f & ACK and p == b"budget99" for k, f, _, p in whole_frames(data))
        data, closed = read_until_close(sock, 10, done=pinged)
        frames = whole_frames(data)
        assert pinged(data) and not closed, f"no PING ACK after 100 rejected frames: {parse_h2_frames(data)}"
        assert not any(k == GOAWAY for k, _, _, _ in frames), parse_h2_frames(data)
        resets = {s for k, _, s, _ in frames if k == RST_STREAM}
        assert resets == {2 * i + 1 for i in range(100)}, f"each head without :path resets its stream: {sorted(resets)[:10]}"

        sock.sendall(open_and_poison(201))
        more, closed = read_until_close(sock, 10, done=lambda d: any(k == GOAWAY for k, _, _, _ in whole_frames(d)))
        goaways = [int.from_bytes(p[4:8], "big") for k, _, _, p in whole_frames(more) if k == GOAWAY]
        assert goaways == [ENHANCE_YOUR_CALM], f"after the 101st rejected frame: {parse_h2_frames(more)}"
    serves()
