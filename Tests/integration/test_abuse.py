"""Abusive HTTP/2 peers, crafted with the `h2` package and raw frames: the
gateway refuses them (GOAWAY and/or close) and keeps serving everybody else."""

from __future__ import annotations

import socket
import struct
import time

import grpc
import pytest
import h2.settings

from meshkit import HOST, grpc_frame, insecure_channel, read_until_close

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def drain(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Reads for up to `seconds`; returns what came and whether the peer closed."""
    return read_until_close(sock, seconds)


def still_serving(mesh) -> None:
    with insecure_channel(mesh.port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        assert stub.Process(mesh.pb2.ProcessRequest(request_id="ok", data="x"), timeout=5).result == "processed: x"


def goaway_of(data: bytes):
    """(last stream id, error code) of the first GOAWAY in `data`, or None;
    and whether a PING ACK came."""
    i, goaway, ping_ack = 0, None, False
    while i + 9 <= len(data):
        length, kind, flags = int.from_bytes(data[i:i + 3], "big"), data[i + 3], data[i + 4]
        payload = data[i + 9:i + 9 + length]
        if kind == 0x7 and goaway is None and len(payload) >= 8:
            goaway = (int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF, int.from_bytes(payload[4:8], "big"))
        if kind == 0x6 and flags & 0x1:
            ping_ack = True
        i += 9 + length
    return goaway, ping_ack


def rapid_resets(mesh, count: int) -> tuple[tuple | None, bool, bool]:
    """One connection opens `count` streams and resets each at once (HEADERS
    then RST_STREAM CANCEL, all in one write, a few ms), then sends a PING:
    (GOAWAY as (last stream id, code) or None, PING answered, closed)."""
    from attacks import END_HEADERS, HEADERS, PING, RST_STREAM, SETTINGS, request_head
    from attacks import frame as raw_frame
    block = request_head()
    out = bytearray(PREFACE + raw_frame(SETTINGS, 0, 0, b""))
    for i in range(count):
        out += raw_frame(HEADERS, END_HEADERS, 1 + 2 * i, block)
        out += raw_frame(RST_STREAM, 0, 1 + 2 * i, (0x8).to_bytes(4, "big"))  # CANCEL
    out += raw_frame(PING, 0, 0, b"rr-probe")
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        try:
            sock.sendall(bytes(out))
        except (BrokenPipeError, ConnectionResetError):
            pass
        data, closed = read_until_close(sock, 3)
    goaway, ping_ack = goaway_of(data)
    return goaway, ping_ack, closed


def test_rapid_reset_is_cut_off(mesh):
    """Streams opened and reset at once (CVE-2023-44487), against the
    documented limit (docs/limits.md: an RST_STREAM bucket of 1,000, +33/s;
    HTTP2Settings.streamResetBurst/streamResetRate): 1,000 resets in a few
    ms are within it (the connection answers a PING and stays open); the
    1,001st empties the bucket and the gateway ends the connection with
    GOAWAY INTERNAL_ERROR (nghttp2's code for it) naming that stream (id
    2,001) as the last it saw, instead of working through the rest. Other
    clients are served meanwhile."""
    goaway, ping_ack, closed = rapid_resets(mesh, 1000)
    assert (goaway, ping_ack, closed) == (None, True, False), (goaway, ping_ack, closed)
    goaway, _, closed = rapid_resets(mesh, 1001)
    assert goaway == (2001, 0x2) and closed, (goaway, closed)
    goaway, _, closed = rapid_resets(mesh, 5000)
    assert goaway == (2001, 0x2) and closed, (goaway, closed)
    still_serving(mesh)


def continuation_flood(mesh, continuations: int, end_headers: bool) -> tuple[bytes, bool]:
    """A valid request head split over HEADERS and `continuations`
    CONTINUATION frames, END_HEADERS on the last one or on none; then the
    request's message. (What came back, closed?)"""
    from attacks import CONTINUATION, END_HEADERS, END_STREAM, HEADERS, SETTINGS, request_head
    from attacks import frame as raw_frame
    # Enough fields that every frame carries some of the block (a flood of
    # 2,000 frames never gets past its first few fields).
    block = request_head(extra=[(f"x-field-{i}", "v" * 16) for i in range(max(20, continuations // 25))])
    pieces = continuations + 1
    chunks = [block[i * len(block) // pieces:(i + 1) * len(block) // pieces] for i in range(pieces)]
    assert all(chunks), "the block must fill every frame"
    out = bytearray(PREFACE + raw_frame(SETTINGS, 0, 0, b"") + raw_frame(HEADERS, 0, 1, chunks[0]))
    for i, chunk in enumerate(chunks[1:], start=1):
        out += raw_frame(CONTINUATION, END_HEADERS if end_headers and i == continuations else 0, 1, chunk)
    if end_headers:
        out += raw_frame(0x0, END_STREAM, 1, grpc_frame(mesh.pb2.ProcessRequest(request_id="c", data="x").SerializeToString()))
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        try:
            sock.sendall(bytes(out))
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_close(sock, 3, done=lambda data: b"grpc-status" in data)


def test_continuation_flood_is_cut_off(mesh):
    """The documented CONTINUATION limit (docs/limits.md: 8 per header
    block; HTTP2Settings.maxContinuations): a request head in HEADERS + 8
    CONTINUATION frames is served; one more CONTINUATION (9, the block
    still open) ends the connection at once, as do 2,000. (The GOAWAY the
    page promises is test_a_continuation_flood_ends_with_a_goaway.)"""
    from meshkit import parse_h2_frames
    data, closed = continuation_flood(mesh, 8, end_headers=True)
    kinds = [kind for kind, _, _ in parse_h2_frames(data) or []]
    assert not closed and "HEADERS" in kinds and b"processed: x" in data, (kinds, closed)
    for count in (9, 2000):
        data, closed = continuation_flood(mesh, count, end_headers=False)
        kinds = [kind for kind, _, _ in parse_h2_frames(data) or []]
        assert closed and "HEADERS" not in kinds, (count, kinds, closed)
    # 9 with END_HEADERS on the 9th: the limit counts frames, not open blocks.
    data, closed = continuation_flood(mesh, 9, end_headers=True)
    assert closed and b"processed" not in data, closed
    still_serving(mesh)


def test_a_continuation_flood_ends_with_a_goaway(mesh):
    """docs/limits.md: past 8 CONTINUATION frames in one header block the
    connection ends with GOAWAY ENHANCE_YOUR_CALM (the client learns why)."""
    data, closed = continuation_flood(mesh, 9, end_headers=False)
    goaway, _ = goaway_of(data)
    assert closed and goaway is not None and goaway[1] == 0xB, (goaway, closed)


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


# --------------------------------------------------------------------------
# Zero-progress frames, stream ids, and nghttp2's explicit limits

GOAWAY, SETTINGS, HEADERS, DATA, RST_STREAM = 0x7, 0x4, 0x1, 0x0, 0x3
END_STREAM, END_HEADERS = 0x1, 0x4
PROTOCOL_ERROR, ENHANCE_YOUR_CALM = 0x1, 0xB


def parse_frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, stream id, payload) of each whole frame in `data`."""
    frames, i = [], 0
    while i + 9 <= len(data):
        length = int.from_bytes(data[i:i + 3], "big")
        if i + 9 + length > len(data):
            break
        stream = int.from_bytes(data[i + 5:i + 9], "big") & 0x7FFFFFFF
        frames.append((data[i + 3], data[i + 4], stream, data[i + 9:i + 9 + length]))
        i += 9 + length
    return frames


def goaway_codes(data: bytes) -> list[int]:
    return [int.from_bytes(p[4:8], "big") for kind, _, _, p in parse_frames(data) if kind == GOAWAY]


class WellBehavedClient:
    """A grpcio server-streaming call that runs while an abuser works on its
    own connection: `finish` asserts it got every event, in order."""

    def __init__(self, mesh, count: int = 20, interval_ms: int = 50):
        self.channel = insecure_channel(mesh.port)
        stub = mesh.pb2_grpc.MeshServiceStub(self.channel)
        self.count = count
        self.stream = stub.StreamEvents(mesh.pb2.StreamRequest(count=count, interval_ms=interval_ms), timeout=20)
        self.first = next(self.stream)

    def finish(self) -> None:
        try:
            rest = list(self.stream)
            assert self.stream.code() == grpc.StatusCode.OK
            assert [self.first.sequence] + [e.sequence for e in rest] == list(range(self.count))
        finally:
            self.channel.close()


def request_headers(encoder, path: str = "/mesh.v1.MeshService/Process", extra=()) -> bytes:
    return encoder.encode([(":method", "POST"), (":scheme", "http"), (":authority", HOST), (":path", path),
                           ("content-type", "application/grpc"), ("te", "trailers"), *extra])


def read_until(sock: socket.socket, done, seconds: float = 5) -> bytes:
    """Reads until `done(data)`, a close or the deadline; returns what came."""
    return read_until_close(sock, seconds, done)[0]


def stream_ended(stream: int):
    return lambda data: any(kind == HEADERS and flags & END_STREAM and sid == stream
                            for kind, flags, sid, _ in parse_frames(data))


def test_empty_data_flood_is_cut_off_with_enhance_your_calm(mesh):
    """20,000 empty DATA frames on one open stream (CVE-2019-9518 class):
    GOAWAY ENHANCE_YOUR_CALM and close, while a grpcio client on its own
    connection keeps getting its stream."""
    import hpack
    client = WellBehavedClient(mesh)
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") +
                     frame(HEADERS, END_HEADERS, 1, request_headers(hpack.Encoder())))
        flood = frame(DATA, 0, 1, b"") * 1000
        closed = False
        for _ in range(20):
            try:
                sock.sendall(flood)
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
        data, closed_after = drain(sock, 5)
    assert ENHANCE_YOUR_CALM in goaway_codes(data), f"GOAWAY codes {goaway_codes(data)}"
    assert closed or closed_after, "the connection stayed open after the flood"
    client.finish()
    still_serving(mesh)


def test_a_few_empty_data_frames_among_real_ones_are_fine(mesh):
    """The budget counts consecutive empty frames: a client that sends an
    empty DATA frame between real ones is served."""
    import hpack
    message = grpc_frame(mesh.pb2.ProcessRequest(request_id="e", data="x").SerializeToString())
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") +
                     frame(HEADERS, END_HEADERS, 1, request_headers(hpack.Encoder())) +
                     frame(DATA, 0, 1, b"") + frame(DATA, 0, 1, message[:3]) + frame(DATA, 0, 1, b"") +
                     frame(DATA, END_STREAM, 1, message[3:]))
        data = read_until(sock, stream_ended(1))
    assert stream_ended(1)(data), f"no trailers on stream 1: frames {[f[:3] for f in parse_frames(data)]}"
    assert not goaway_codes(data)
    decoded = hpack.Decoder().decode(b"".join(p for kind, _, sid, p in parse_frames(data) if kind == HEADERS and sid == 1))
    assert ("grpc-status", "0") in decoded, decoded


def test_headers_on_a_lower_used_stream_id_is_a_protocol_error(mesh):
    """Stream 5 opened and answered, then HEADERS on stream 3 (RFC 9113
    §5.1.1: ids only grow): GOAWAY PROTOCOL_ERROR, not silence."""
    import hpack
    encoder = hpack.Encoder()
    message = grpc_frame(mesh.pb2.ProcessRequest(request_id="s5", data="x").SerializeToString())
    client = WellBehavedClient(mesh)
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") +
                     frame(HEADERS, END_HEADERS, 5, request_headers(encoder)) + frame(DATA, END_STREAM, 5, message))
        answered = read_until(sock, stream_ended(5))
        assert stream_ended(5)(answered), "stream 5 was not answered"
        sock.sendall(frame(HEADERS, END_HEADERS, 3, request_headers(encoder)) + frame(DATA, END_STREAM, 3, message))
        data, closed = drain(sock, 5)
    goaways = [p for kind, _, _, p in parse_frames(data) if kind == GOAWAY]
    assert goaways, f"no GOAWAY after HEADERS on a lower stream id: frames {[f[:3] for f in parse_frames(data)]}"
    assert int.from_bytes(goaways[0][4:8], "big") == PROTOCOL_ERROR
    assert int.from_bytes(goaways[0][:4], "big") == 5, "the GOAWAY's last stream id is the highest processed"
    assert closed
    assert not stream_ended(3)(data), "stream 3 was served"
    client.finish()


def test_trailers_on_a_stream_the_gateway_reset_are_ignored(mesh):
    """The gateway ends a call early (deadline) while the client still
    sends: the client's late HEADERS (trailers) on that stream must be
    ignored (RFC 9113 §5.1), not taken for a lower-id violation, and the
    connection keeps serving."""
    import hpack
    encoder = hpack.Encoder()
    message = grpc_frame(mesh.pb2.ProcessRequest(request_id="late", data="x").SerializeToString())
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") +
                     frame(HEADERS, END_HEADERS, 1, request_headers(
                         encoder, extra=[("grpc-timeout", "100m"), ("x-mesh-delay-ms", "1000")])) +
                     frame(DATA, 0, 1, message))
        ended = read_until(sock, stream_ended(1))
        assert stream_ended(1)(ended), "the deadline did not end stream 1"
        ended += read_until(sock, lambda d: any(kind == RST_STREAM for kind, _, _, _ in parse_frames(d)), 2)
        assert any(kind == RST_STREAM and sid == 1 for kind, _, sid, _ in parse_frames(ended)), \
            "the gateway did not reset stream 1, whose request side was still open"
        time.sleep(0.2)
        sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 1, encoder.encode([("x-late-trailer", "1")])) +
                     frame(HEADERS, END_HEADERS, 3, request_headers(encoder)) + frame(DATA, END_STREAM, 3, message))
        data = read_until(sock, stream_ended(3))
    assert not goaway_codes(data), f"GOAWAY {goaway_codes(data)} for trailers on a reset stream"
    assert stream_ended(3)(data), "stream 3 was not served after the late trailers"


def test_a_settings_frame_with_too_many_entries_is_refused(mesh):
    """nghttp2's SETTINGS entry limit (32, set explicitly in HTTP2Settings):
    a SETTINGS frame of 40 entries ends the connection with GOAWAY
    ENHANCE_YOUR_CALM."""
    entries = b"".join(struct.pack(">HI", 0x3, 100) for _ in range(40))  # MAX_CONCURRENT_STREAMS x40
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, entries))
        data, closed = drain(sock, 5)
    assert ENHANCE_YOUR_CALM in goaway_codes(data), f"GOAWAY codes {goaway_codes(data)}"
    assert closed
    still_serving(mesh)


def test_a_client_that_never_opens_its_window_has_its_streams_reset(mesh, launcher):
    """Window-zero slowloris: a client announces an initial window of 0,
    opens 20 calls whose replies are 60 KB, and never reads. With
    `send_timeout: 1s` each stream is reset (RST_STREAM CANCEL) within
    about a second and a quarter of stalling, freeing what it buffered;
    a grpcio client on its own connection is served meanwhile, and the
    abuser's connection stays usable for calls that fit its window."""
    import hpack
    from meshkit import free_port, gateway_config, to_yaml
    import yaml
    port = free_port()
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]))
    doc["listeners"][0]["send_timeout"] = "1s"
    launcher.gateway(to_yaml(doc), port, name="gw-send-timeout")

    client = WellBehavedClient(type("M", (), {"port": port, "pb2_grpc": mesh.pb2_grpc, "pb2": mesh.pb2})(),
                               count=30, interval_ms=100)
    encoder = hpack.Encoder()
    # Under 65,535 bytes: the stream window a client may use before it has
    # acknowledged the gateway's SETTINGS (this one never does).
    big = grpc_frame(mesh.pb2.ProcessRequest(request_id="big", data="x" * 60000).SerializeToString())
    window_zero = struct.pack(">HI", 0x4, 0)  # SETTINGS_INITIAL_WINDOW_SIZE = 0
    streams = list(range(1, 41, 2))
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, window_zero))
        opened = time.monotonic()
        for sid in streams:
            chunks = [big[i:i + 16384] for i in range(0, len(big), 16384)]  # the default max frame size
            sock.sendall(frame(HEADERS, END_HEADERS, sid, request_headers(encoder)) +
                         b"".join(frame(DATA, END_STREAM if i == len(chunks) - 1 else 0, sid, c) for i, c in enumerate(chunks)))

        def all_reset(data: bytes) -> bool:
            reset = {sid for kind, _, sid, _ in parse_frames(data) if kind == RST_STREAM}
            return set(streams) <= reset
        data = read_until(sock, all_reset, seconds=8)
        elapsed = time.monotonic() - opened
        frames = parse_frames(data)
        resets = {sid: int.from_bytes(p[:4], "big") for kind, _, sid, p in frames if kind == RST_STREAM}
        assert set(streams) <= set(resets), f"streams not reset: {sorted(set(streams) - set(resets))}"
        assert all(resets[sid] == 0x8 for sid in streams), resets  # CANCEL
        assert 0.7 < elapsed < 4, f"reset after {elapsed:.2f} s with send_timeout 1s"
        assert not any(kind == DATA and sid in streams and p for kind, _, sid, p in frames), "DATA beyond a zero window"
        # The connection itself is fine: a call whose reply needs no window
        # (an unknown method: Trailers-Only) is answered on it.
        sock.sendall(frame(HEADERS, END_HEADERS | END_STREAM, 41, request_headers(encoder, path="/mesh.v1.MeshService/Nope")))
        answered = read_until(sock, stream_ended(41))
        assert stream_ended(41)(answered) and not goaway_codes(answered)
    client.finish()


def test_random_and_mutated_frames_do_not_hurt_the_gateway(mesh, launcher):
    """A frame-level fuzzer (seeded, bounded: 300 connections of up to 24
    frames each, ~10 s): valid request frames with mutated types, flags,
    stream ids, lengths and payloads, and plain random frames. The gateway
    survives, a grpcio stream running meanwhile gets every event, and new
    clients are served afterwards."""
    import random
    import hpack
    from meshkit import free_port, gateway_config
    port = free_port()
    gateway = launcher.gateway(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                                              routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]),
                               port, name="gw-frame-fuzz")
    mesh_here = type("M", (), {"port": port, "pb2_grpc": mesh.pb2_grpc, "pb2": mesh.pb2})()
    client = WellBehavedClient(mesh_here, count=40, interval_ms=200)
    rng = random.Random(0xF2A3E)
    message = grpc_frame(mesh.pb2.ProcessRequest(request_id="f", data="x").SerializeToString())
    started = time.monotonic()
    for case in range(300):
        encoder = hpack.Encoder()
        valid = [frame(HEADERS, END_HEADERS, 1, request_headers(encoder)), frame(DATA, END_STREAM, 1, message),
                 frame(0x8, 0, 0, struct.pack(">I", 1000)), frame(0x6, 0, 0, b"12345678"),
                 frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 65535)), frame(0x2, 0, 1, b"\x00\x00\x00\x00\x10"),
                 frame(RST_STREAM, 0, 1, b"\x00\x00\x00\x08"), frame(0x9, 0, 1, b"\x82")]
        frames = []
        for _ in range(rng.randint(1, 24)):
            f = bytearray(rng.choice(valid))
            mutation = rng.randrange(7)
            if mutation == 0:
                f[3] = rng.randrange(256)  # type, unknown ones included
            elif mutation == 1:
                f[4] = rng.randrange(256)  # flags
            elif mutation == 2:
                f[5:9] = struct.pack(">I", rng.choice([0, 1, 2, 3, 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 31)]))
            elif mutation == 3:
                f[0:3] = rng.randrange(1 << 24).to_bytes(3, "big")  # a length that lies
            elif mutation == 4 and len(f) > 9:
                i = rng.randrange(9, len(f))
                f[i] = rng.randrange(256)  # a payload byte
            elif mutation == 5:
                f = bytearray(frame(rng.randrange(256), rng.randrange(256), rng.randrange(1 << 31),
                                    bytes(rng.randrange(256) for _ in range(rng.randrange(64)))))
            frames.append(bytes(f))
        try:
            with socket.create_connection((HOST, port), timeout=2) as sock:
                sock.sendall(PREFACE + frame(SETTINGS, 0, 0, b"") + b"".join(frames))
                drain(sock, 0.02)
        except OSError:
            pass  # the gateway may close on us at any point: that is its right
        assert gateway.proc.alive(), f"the gateway died on case {case}:\n{gateway.proc.tail()}"
    assert time.monotonic() - started < 60
    client.finish()
    with insecure_channel(port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        assert stub.Process(mesh.pb2.ProcessRequest(request_id="ok", data="x"), timeout=5).result == "processed: x"


def test_a_connections_queued_response_bytes_are_capped(mesh, launcher):
    """per_connection_buffer_limit_bytes: 150000. A client at window 0
    opens 5 calls with ~60 KB replies: at most two replies' worth stays
    queued; each stream whose bytes would pass the cap is reset with
    ENHANCE_YOUR_CALM at once (not after send_timeout), and a grpcio
    client on its own connection is served meanwhile."""
    import hpack
    import yaml
    from meshkit import free_port, gateway_config, to_yaml
    port = free_port()
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]))
    doc["listeners"][0]["per_connection_buffer_limit_bytes"] = 150000
    launcher.gateway(to_yaml(doc), port, name="gw-buffer-cap")
    client = WellBehavedClient(type("M", (), {"port": port, "pb2_grpc": mesh.pb2_grpc, "pb2": mesh.pb2})(),
                               count=20, interval_ms=100)
    encoder = hpack.Encoder()
    big = grpc_frame(mesh.pb2.ProcessRequest(request_id="big", data="x" * 60000).SerializeToString())
    streams = [1, 3, 5, 7, 9]
    with socket.create_connection((HOST, port), timeout=5) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))
        for sid in streams:
            chunks = [big[i:i + 16384] for i in range(0, len(big), 16384)]
            sock.sendall(frame(HEADERS, END_HEADERS, sid, request_headers(encoder)) +
                         b"".join(frame(DATA, END_STREAM if i == len(chunks) - 1 else 0, sid, c) for i, c in enumerate(chunks)))
        data = read_until(sock, lambda d: len({s for k, _, s, _ in parse_frames(d) if k == RST_STREAM}) >= 3, seconds=5)
    resets = {sid: int.from_bytes(p[:4], "big") for kind, _, sid, p in parse_frames(data) if kind == RST_STREAM}
    kept = [sid for sid in streams if sid not in resets]
    assert 3 <= len(resets) <= 4 and 1 <= len(kept) <= 2, f"resets {resets}, kept {kept}"
    assert all(code == ENHANCE_YOUR_CALM for code in resets.values()), resets
    assert not goaway_codes(data), "the connection itself was ended"
    client.finish()


BUDGET_WARNING = "runtime.global_buffer_limit_bytes is below one client connection's receive window"


@pytest.mark.parametrize("limit,warned", [(8 << 20, True), (16 << 20, False), (0, False)])
def test_a_global_buffer_limit_below_one_window_is_warned_about(mesh, launcher, limit, warned):
    """docs/limits.md: a global budget below one connection's 16 MiB
    receive window is valid, and logged as a warning with both figures;
    the window itself, and no cap (0), are not."""
    import yaml
    from meshkit import free_port, gateway_config, to_yaml, wait_until
    port = free_port()
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]))
    doc["runtime"]["global_buffer_limit_bytes"] = limit
    gateway = launcher.gateway(to_yaml(doc), port, name=f"gw-budget-{limit}")
    wait_until(lambda: "listening" in gateway.proc.log_text(), timeout=10, message="the gateway to listen")
    log = gateway.proc.log_text()
    assert (BUDGET_WARNING in log) == warned, log[-2000:]
    if warned:
        line = next(line for line in log.splitlines() if BUDGET_WARNING in line)
        assert str(limit) in line and str(16 << 20) in line, line


def test_bytes_queued_on_all_connections_are_capped(mesh, launcher):
    """runtime.global_buffer_limit_bytes: 196608 (three 64 KiB granules;
    each connection's first granule is not counted). Clients at window 0
    each open 3 calls with ~60 KB replies (~180 KB queued: two counted
    granules). The first keeps all its replies (/metrics shows 2 granules);
    the second has room for one more granule: one of its streams is reset
    with ENHANCE_YOUR_CALM, or two when its open calls' own charge (head and
    4 KiB each, counted with the queued bytes) tips it over, and the
    connection stays up. The per-connection
    cap (32 MiB by default) plays no part. A grpcio client is served all
    along; once the abusers leave, the budget is whole again and a third
    such client keeps all its replies."""
    import hpack
    import urllib.request
    import yaml
    from meshkit import addr, free_port, gateway_config, to_yaml, wait_until
    port, admin = free_port(), free_port()
    doc = yaml.safe_load(gateway_config(port, clusters={"mesh": [r.port for r in mesh.replicas.values()]},
                                        routes=[{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]))
    doc["runtime"]["global_buffer_limit_bytes"] = 196608
    doc["admin"] = {"address": addr(admin)}
    launcher.gateway(to_yaml(doc), port, name="gw-global-buffer-cap")
    # Every event loop gets its upstream connections first: a call that
    # waits for one holds its request bytes against the same tiny budget
    # (and would be refused for it), which is not what this test is about.
    from meshkit import insecure_channel
    for _ in range(8):
        with insecure_channel(port) as channel:
            stub = mesh.pb2_grpc.MeshServiceStub(channel)
            for i in range(6):
                stub.Process(mesh.pb2.ProcessRequest(request_id=f"warm{i}"), timeout=5)
    client = WellBehavedClient(type("M", (), {"port": port, "pb2_grpc": mesh.pb2_grpc, "pb2": mesh.pb2})(),
                               count=40, interval_ms=100)
    big = grpc_frame(mesh.pb2.ProcessRequest(request_id="big", data="x" * 60000).SerializeToString())

    def metric(name: str) -> int:
        text = urllib.request.urlopen(f"http://{HOST}:{admin}/metrics", timeout=5).read().decode()
        return int(next(line.split()[1] for line in text.splitlines() if line.startswith(name + " ")))

    def window_zero_client(resets: int) -> tuple[socket.socket, dict[int, int]]:
        """Opens 3 calls at window 0; returns, with the RST_STREAM codes by
        stream, once each has its response head and `resets` of them were
        reset (a head leaves before the reply's bytes are queued), and
        half a second more has brought no other reset."""
        encoder = hpack.Encoder()
        sock = socket.create_connection((HOST, port), timeout=5)
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 0x4, 0)))
        streams = [1, 3, 5]
        for sid in streams:
            chunks = [big[i:i + 16384] for i in range(0, len(big), 16384)]
            sock.sendall(frame(HEADERS, END_HEADERS, sid, request_headers(encoder)) +
                         b"".join(frame(DATA, END_STREAM if i == len(chunks) - 1 else 0, sid, c) for i, c in enumerate(chunks)))

        def settled(data: bytes) -> bool:
            frames = parse_frames(data)
            return ({sid for kind, _, sid, _ in frames if kind in (HEADERS, RST_STREAM)} >= set(streams) and
                    sum(1 for kind, _, _, _ in frames if kind == RST_STREAM) >= resets)
        data = read_until(sock, settled, seconds=5)
        assert settled(data), f"not every stream got a head or {resets} resets: {parse_frames(data)}"
        data += read_until(sock, lambda _: False, seconds=0.5)
        assert not goaway_codes(data), "the connection itself was ended"
        assert not any(kind == DATA and p for kind, _, _, p in parse_frames(data)), "DATA beyond a zero window"
        return sock, {sid: int.from_bytes(p[:4], "big") for kind, _, sid, p in parse_frames(data) if kind == RST_STREAM}

    first, first_resets = window_zero_client(0)
    assert first_resets == {}, f"the first client fits the budget, yet: {first_resets}"
    assert wait_until(lambda: metric("meshgate_buffered_bytes") == 2 * 65536, timeout=3,
                      message="three replies queued = the free granule + two reserved")
    second, second_resets = window_zero_client(1)
    assert len(second_resets) in (1, 2) and set(second_resets.values()) == {ENHANCE_YOUR_CALM}, second_resets
    # The whole budget, or a granule less when a second reset made room.
    assert wait_until(lambda: metric("meshgate_buffered_bytes") in (131072, 196608), timeout=3, message="the budget reserved")
    assert metric("meshgate_buffer_limit_refusals_total") >= 1
    first.close()
    second.close()
    assert wait_until(lambda: metric("meshgate_buffered_bytes") == 0, timeout=5,
                      message="the closed connections gave their share back")
    third, third_resets = window_zero_client(0)
    assert third_resets == {}, f"the budget was not whole again: {third_resets}"
    third.close()
    client.finish()
