"""Attack tools for issue 26 (no untrusted input grows the gateway's memory
without bound), shared by test_adversarial.py and bench/attack_soak.py.

Everything here speaks raw HTTP/2 bytes (HPACK encoded by hand where the
attack needs full control of the dynamic table) or the `h2` package, to
127.0.0.1 only, and every loop is bounded in count and time:

  frames and HPACK     frame(), Hpack, request_head(), header_frames(), hpack_bomb_block()
  a raw client         RawH2Client: sends bytes, decodes what comes back per stream
  memory               proc_kib(), RssSampler (peak RSS, with a kill switch)
  a control client     ControlCalls: grpcio unary calls through the gateway while an attack runs
  a raw upstream       AbusiveUpstream: an `h2` server whose answers break the header limits
  the attacks          hpack_bomb(), oversize_heads(), own_service_flood(), own_service_partials(),
                       replay_pending_calls(), replay_pinning(), grpc_calls(); each runs N
                       attackers at once and returns an AttackOutcome
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
import time
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from meshkit import HOST, RawServer

KiB = 1024
MiB = 1024 * 1024
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x2, 0x8, 0xB
SETTINGS_HEADER_TABLE_SIZE, SETTINGS_MAX_CONCURRENT_STREAMS = 0x1, 0x3
SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE, SETTINGS_MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
DEFAULT_MAX_FRAME = 16384
# The gateway's CONTINUATION limit per header block (HTTP2Settings.maxContinuations).
MAX_CONTINUATIONS = 8
RESOURCE_EXHAUSTED, INTERNAL = 8, 13

PROCESS = "/mesh.v1.MeshService/Process"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"


# --------------------------------------------------------------------------
# Frames and HPACK, by hand


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings_frame(entries: Iterable[tuple[int, int]] = ()) -> bytes:
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in entries))


def window_update(stream: int, increment: int) -> bytes:
    return frame(WINDOW_UPDATE, 0, stream, struct.pack(">I", increment))


def data_frame(stream: int, payload: bytes, end: bool = False, padding: int = 0) -> bytes:
    """A DATA frame; `padding` (0..255) bytes of padding with the PADDED flag."""
    flags = END_STREAM if end else 0
    if padding:
        assert 0 < padding <= 255, "the Pad Length field is one byte (RFC 9113 §6.1)"
        return frame(DATA, flags | PADDED, stream, bytes([padding]) + payload + b"\x00" * padding)
    return frame(DATA, flags, stream, payload)


def grpc_frame(message: bytes, declared: Optional[int] = None) -> bytes:
    """One uncompressed gRPC length-prefixed message; `declared` lies about its length."""
    return b"\x00" + struct.pack(">I", len(message) if declared is None else declared) + message


class Hpack:
    """HPACK representations (RFC 7541), no Huffman coding, so each byte is
    exactly where the attack wants it."""

    STATIC_METHOD_POST = 3
    STATIC_SCHEME_HTTP = 6
    STATIC_PATH = 4
    STATIC_AUTHORITY = 1
    STATIC_CONTENT_TYPE = 31
    STATIC_STATUS_200 = 8
    FIRST_DYNAMIC = 62

    @staticmethod
    def integer(value: int, prefix_bits: int, flags: int = 0) -> bytes:
        limit = (1 << prefix_bits) - 1
        if value < limit:
            return bytes([flags | value])
        out = bytearray([flags | limit])
        value -= limit
        while value >= 128:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
        return bytes(out)

    @classmethod
    def string(cls, text) -> bytes:
        raw = text.encode() if isinstance(text, str) else bytes(text)
        return cls.integer(len(raw), 7) + raw

    @classmethod
    def indexed(cls, index: int) -> bytes:
        return cls.integer(index, 7, 0x80)

    @classmethod
    def literal(cls, name, value) -> bytes:
        """Literal without indexing, new name: the decoder's table is untouched."""
        return b"\x00" + cls.string(name) + cls.string(value)

    @classmethod
    def literal_name_index(cls, index: int, value) -> bytes:
        """Literal without indexing, name from the table."""
        return cls.integer(index, 4) + cls.string(value)

    @classmethod
    def literal_incremental(cls, name, value) -> bytes:
        """Literal with incremental indexing, new name: the field enters the
        decoder's dynamic table at index 62."""
        return b"\x40" + cls.string(name) + cls.string(value)


def request_head(path: str = PROCESS, extra: Iterable[tuple[str, str]] = (), authority: str = HOST) -> bytes:
    """A gRPC request head that leaves the gateway's HPACK table alone
    (6 fields: 4 pseudo-headers, content-type, te; then `extra`)."""
    block = (Hpack.indexed(Hpack.STATIC_METHOD_POST) + Hpack.indexed(Hpack.STATIC_SCHEME_HTTP) +
             Hpack.literal_name_index(Hpack.STATIC_PATH, path) +
             Hpack.literal_name_index(Hpack.STATIC_AUTHORITY, authority) +
             Hpack.literal_name_index(Hpack.STATIC_CONTENT_TYPE, "application/grpc") +
             Hpack.literal("te", "trailers"))
    return block + b"".join(Hpack.literal(n, v) for n, v in extra)


REQUEST_HEAD_FIELDS = 6


def header_frames(stream: int, block: bytes, end_stream: bool = False, max_frame: int = DEFAULT_MAX_FRAME,
                  kind: int = HEADERS) -> bytes:
    """`block` as HEADERS (or trailers) plus as many CONTINUATION frames as it needs."""
    chunks = [block[i:i + max_frame] for i in range(0, len(block), max_frame)] or [b""]
    out = bytearray()
    for i, chunk in enumerate(chunks):
        flags = (END_HEADERS if i == len(chunks) - 1 else 0)
        if i == 0:
            out += frame(kind, flags | (END_STREAM if end_stream else 0), stream, chunk)
        else:
            out += frame(CONTINUATION, flags, stream, chunk)
    return bytes(out)


def fields_block(fields: Iterable[tuple[str, str]]) -> bytes:
    return b"".join(Hpack.literal(n, v) for n, v in fields)


def rfc9113_size(fields: Iterable[tuple[str, str]]) -> int:
    """Header list size as RFC 9113 §6.5.2 counts it: name + value + 32 per field."""
    return sum(len(n) + len(v) + 32 for n, v in fields)


def hpack_bomb_block(head: bytes, value_bytes: int = 4000, frames: int = 1 + MAX_CONTINUATIONS,
                     max_frame: int = DEFAULT_MAX_FRAME, name: str = "x-b") -> tuple[bytes, int]:
    """The issue's HPACK bomb: after `head`, one field of `value_bytes`
    inserted into the dynamic table, then referenced (index 62, one byte
    each) until the block fills `frames` frames of `max_frame` bytes
    (HEADERS + 8 CONTINUATION: ~147 KB). Returns (block, references): the
    block decodes to references x (name + value + 32) bytes, ~590 MB."""
    prefix = head + Hpack.literal_incremental(name, b"a" * value_bytes)
    references = frames * max_frame - len(prefix)
    assert references > 0
    return prefix + Hpack.indexed(Hpack.FIRST_DYNAMIC) * references, references


# --------------------------------------------------------------------------
# A raw client that decodes what the gateway answers


@dataclass
class StreamResult:
    blocks: list[list[tuple[str, str]]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    end_stream: bool = False
    reset: Optional[int] = None  # RST_STREAM code from the gateway
    first_answer_at: Optional[float] = None

    @property
    def done(self) -> bool:
        return self.end_stream or self.reset is not None

    def header(self, name: str) -> Optional[str]:
        for block in reversed(self.blocks):
            for n, v in block:
                if n == name:
                    return v
        return None

    @property
    def grpc_status(self) -> Optional[int]:
        value = self.header("grpc-status")
        return int(value) if value is not None else None

    @property
    def grpc_message(self) -> str:
        return urllib.parse.unquote(self.header("grpc-message") or "")

    def describe(self) -> str:
        return (f"blocks={self.blocks!r:.600} data={len(self.data)}B end_stream={self.end_stream} "
                f"reset={self.reset}")


class RawH2Client:
    """One HTTP/2 connection driven frame by frame. What comes back is
    parsed per stream (header blocks decoded with the `hpack` package, in
    order, since the gateway's encoder uses its dynamic table); SETTINGS
    and PINGs are acknowledged; DATA is acknowledged with WINDOW_UPDATE
    when `auto_window`."""

    def __init__(self, port: int, settings: Iterable[tuple[int, int]] = (), timeout: float = 5.0,
                 auto_window: bool = True, connect: bool = True, send_preface: bool = True):
        import hpack
        self.port = port
        self.auto_window = auto_window
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.streams: dict[int, StreamResult] = defaultdict(StreamResult)
        self.server_settings: dict[int, int] = {}
        self.settings_frames = 0
        self.goaway: Optional[tuple[int, int]] = None  # (last stream id, code)
        self.closed = False
        self.send_window = 65535  # connection-level, towards the gateway
        self.stream_windows: dict[int, int] = {}
        self.initial_window = 65535
        self.sent_data = 0  # flow-controlled bytes sent (payload + padding)
        self._buffer = bytearray()
        self._pending: Optional[tuple[int, int, bytearray]] = None  # open header block
        self.sock: Optional[socket.socket] = None
        if connect:
            self.sock = socket.create_connection((HOST, port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if send_preface:
                self.send(PREFACE + settings_frame(settings))

    # -- sending

    def send(self, data: bytes) -> bool:
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError):
            self.closed = True
            return False

    def ready(self, timeout: float = 3.0) -> bool:
        """Waits for the gateway's SETTINGS and its connection WINDOW_UPDATE,
        so that sending more than 64 KiB is no flow-control error."""
        return self.wait(lambda: self.settings_frames > 0 and self.send_window > 65535, timeout)

    def window(self, stream: int) -> int:
        return min(self.send_window, self.stream_windows.get(stream, self.initial_window))

    def spend(self, stream: int, flow_bytes: int) -> None:
        self.send_window -= flow_bytes
        self.stream_windows[stream] = self.stream_windows.get(stream, self.initial_window) - flow_bytes
        self.sent_data += flow_bytes

    # -- receiving

    def pump(self, timeout: float) -> bool:
        """Reads once (waiting up to `timeout`) and handles whole frames.
        False when nothing came or the connection is closed."""
        if self.closed:
            return False
        self.sock.settimeout(max(timeout, 0.0001))
        try:
            chunk = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except (ConnectionResetError, BrokenPipeError, OSError):
            self.closed = True
            return False
        if not chunk:
            self.closed = True
            return False
        self._buffer += chunk
        self._parse()
        return True

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed:
                return predicate()
            self.pump(min(remaining, 0.2))
        return True

    def wait_streams(self, streams: Iterable[int], timeout: float) -> bool:
        wanted = list(streams)
        return self.wait(lambda: all(self.streams[s].done for s in wanted), timeout)

    def _parse(self) -> None:
        buf = self._buffer
        offset = 0
        replies = bytearray()
        while offset + 9 <= len(buf):
            length = int.from_bytes(buf[offset:offset + 3], "big")
            if offset + 9 + length > len(buf):
                break
            kind, flags = buf[offset + 3], buf[offset + 4]
            sid = int.from_bytes(buf[offset + 5:offset + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[offset + 9:offset + 9 + length])
            offset += 9 + length
            replies += self._handle(kind, flags, sid, payload)
        del buf[:offset]
        if replies:
            self.send(bytes(replies))

    def _handle(self, kind: int, flags: int, sid: int, payload: bytes) -> bytes:
        now = time.monotonic()
        if kind == SETTINGS and not flags & ACK:
            self.settings_frames += 1
            for i in range(0, len(payload) - 5, 6):
                key, value = struct.unpack(">HI", payload[i:i + 6])
                self.server_settings[key] = value
                if key == SETTINGS_INITIAL_WINDOW_SIZE:
                    delta = value - self.initial_window
                    self.initial_window = value
                    for s in self.stream_windows:
                        self.stream_windows[s] += delta
            return frame(SETTINGS, ACK, 0)
        if kind == PING and not flags & ACK:
            return frame(PING, ACK, 0, payload)
        if kind == WINDOW_UPDATE:
            increment = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if sid == 0:
                self.send_window += increment
            else:
                self.stream_windows[sid] = self.stream_windows.get(sid, self.initial_window) + increment
            return b""
        if kind == GOAWAY:
            self.goaway = (struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF, struct.unpack(">I", payload[4:8])[0])
            return b""
        if kind == RST_STREAM:
            self.streams[sid].reset = struct.unpack(">I", payload[:4])[0]
            return b""
        if kind == HEADERS:
            body = payload
            if flags & PADDED:
                body = body[1:len(body) - body[0]]
            if flags & PRIORITY_FLAG:
                body = body[5:]
            stream = self.streams[sid]
            stream.first_answer_at = stream.first_answer_at or now
            if flags & END_STREAM:
                stream.end_stream = True
            if flags & END_HEADERS:
                stream.blocks.append(self._decode(body))
            else:
                self._pending = (sid, flags, bytearray(body))
            return b""
        if kind == CONTINUATION and self._pending:
            self._pending[2].extend(payload)
            if flags & END_HEADERS:
                psid, _, block = self._pending
                self._pending = None
                self.streams[psid].blocks.append(self._decode(bytes(block)))
            return b""
        if kind == DATA:
            body = payload[1:len(payload) - payload[0]] if flags & PADDED else payload
            stream = self.streams[sid]
            stream.first_answer_at = stream.first_answer_at or now
            stream.data += body
            if flags & END_STREAM:
                stream.end_stream = True
            if self.auto_window and payload:
                return window_update(0, len(payload)) + (b"" if flags & END_STREAM else window_update(sid, len(payload)))
            return b""
        return b""

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        return [(n.decode() if isinstance(n, bytes) else n, v.decode() if isinstance(v, bytes) else v)
                for n, v in self.decoder.decode(block, raw=True)]

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.closed = True

    def __enter__(self) -> "RawH2Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------
# Memory of a process


def proc_kib(pid: int, key: str = "VmRSS") -> int:
    """A /proc/PID/status figure in KiB (VmRSS, VmHWM, ...); 0 once gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


def settle_rss(pid: int, seconds: float = 0.5) -> int:
    """RSS in KiB once it has stopped moving (allocator caches warmed)."""
    last = proc_kib(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = proc_kib(pid)
        if abs(now - last) < 256:
            return now
        last = now
    return last


def reset_peak_rss(pid: int) -> bool:
    """Resets the process's VmHWM to its current RSS (Linux: "5" into
    /proc/PID/clear_refs); False where that is not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's VmRSS every `interval` s in a thread: `peak_kib`
    is the highest seen, and on exit also the kernel's VmHWM (reset on
    entry where allowed), so a spike between two samples counts too. A kill
    switch: above `kill_above_kib` the process (one this test run started)
    gets SIGKILL, so that an unfixed gateway cannot take the machine with
    it; `killed` says so."""

    def __init__(self, pid: int, interval: float = 0.01, kill_above_kib: Optional[int] = None):
        self.pid = pid
        self.interval = interval
        self.kill_above_kib = kill_above_kib
        self.baseline_kib = proc_kib(pid)
        self.peak_kib = self.baseline_kib
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_kib(self.pid)
            if rss == 0:
                return
            self.peak_kib = max(self.peak_kib, rss)
            if self.kill_above_kib and rss > self.kill_above_kib and not self.killed:
                self.killed = True
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            self._stop.wait(self.interval)

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.baseline_kib) / 1024

    def __enter__(self) -> "RssSampler":
        self._hwm_reset = reset_peak_rss(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        if self._hwm_reset and not self.killed:
            self.peak_kib = max(self.peak_kib, proc_kib(self.pid, "VmHWM"))

    def describe(self) -> str:
        return (f"RSS {self.baseline_kib / 1024:.1f} -> peak {self.peak_kib / 1024:.1f} MiB "
                f"(+{self.growth_mib:.1f} MiB){' — KILLED by the kill switch' if self.killed else ''}")


# --------------------------------------------------------------------------
# A grpcio client beside the attack


class ControlCalls:
    """grpcio unary Process calls through the gateway in a loop, on
    `channels` channels (each its own connection, so event loops other than
    the attacker's are covered too), each with `deadline` seconds, while an
    attack runs; failures are kept with their status."""

    def __init__(self, port: int, pb2, pb2_grpc, channels: int = 2, deadline: float = 3.0, pause: float = 0.02):
        import grpc
        self._grpc = grpc
        self.pb2 = pb2
        self.deadline = deadline
        self.pause = pause
        self.ok = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0)]
        self._channels = [grpc.insecure_channel(f"{HOST}:{port}", options=options) for _ in range(channels)]
        self._stubs = [pb2_grpc.MeshServiceStub(ch) for ch in self._channels]
        self._threads = [threading.Thread(target=self._run, args=(i, stub), daemon=True)
                         for i, stub in enumerate(self._stubs)]

    def _run(self, i: int, stub) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                reply = stub.Process(self.pb2.ProcessRequest(request_id=f"c{i}-{n}", data="ctl"), timeout=self.deadline)
                with self._lock:
                    if reply.result == "processed: ctl":
                        self.ok += 1
                    else:
                        self.failures.append(f"wrong reply {reply.result!r}")
            except self._grpc.RpcError as e:
                with self._lock:
                    self.failures.append(f"{e.code().name}: {e.details()}")
            self._stop.wait(self.pause)

    def start(self) -> "ControlCalls":
        # Connected and served once before the attack starts.
        for stub in self._stubs:
            stub.Process(self.pb2.ProcessRequest(request_id="warm", data="ctl"), timeout=10)
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> "ControlCalls":
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.deadline + 5)
        for ch in self._channels:
            ch.close()
        return self

    def __enter__(self) -> "ControlCalls":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------
# Admin


def metric_samples(admin_port: int, name: str) -> dict[str, float]:
    """{labels text: value} of every sample of `name` on /metrics."""
    text = urllib.request.urlopen(f"http://{HOST}:{admin_port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            out[key[len(name):]] = float(value)
    return out


# --------------------------------------------------------------------------
# An upstream that answers with oversize heads or trailers


class AbusiveUpstream(RawServer):
    """A raw HTTP/2 gRPC server (the `h2` package) on 127.0.0.1 that answers
    each request, once it has ended, in one of these ways:

      head_bytes      a response head of `size` bytes (RFC 9113 count) in fields of 5,000
      head_fields     a response head of `count` small fields
      trailers_bytes  a normal head and message, then trailers of `size` bytes
      head_bomb       a response head that is an HPACK bomb (written raw; the
                      connection's HPACK state is then the bomb's, so every
                      later answer on it is a bomb too)
      ok              a normal answer (an empty message, grpc-status 0)
    """

    def __init__(self, mode: str, size: int = 70_000, count: int = 150):
        self.mode = mode
        self.size = size
        self.count = count
        self.requests = 0
        self._lock = threading.Lock()
        super().__init__()

    def big_fields(self, size: int) -> list[tuple[str, str]]:
        fields, total, i = [], 0, 0
        while total < size:
            value = "v" * min(5000, max(1, size - total - 32 - 8))
            fields.append((f"x-big-{i:02d}", value))
            total += rfc9113_size([fields[-1]])
            i += 1
        return fields

    def serve_connection(self, sock: socket.socket) -> None:
        import h2.config
        import h2.connection
        import h2.events
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                                                    validate_outbound_headers=False))
        conn.initiate_connection()
        try:
            sock.sendall(conn.data_to_send())
            while not self.stopped:
                data = sock.recv(65536)
                if not data:
                    return
                raw_after = b""
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    elif isinstance(event, h2.events.StreamEnded):
                        with self._lock:
                            self.requests += 1
                        raw_after += self._answer(conn, event.stream_id)
                sock.sendall(conn.data_to_send() + raw_after)
        except Exception:
            return

    def _answer(self, conn, sid: int) -> bytes:
        head = [(":status", "200"), ("content-type", "application/grpc")]
        if self.mode == "head_bomb":
            block, _ = hpack_bomb_block(Hpack.indexed(Hpack.STATIC_STATUS_200) +
                                        Hpack.literal_name_index(Hpack.STATIC_CONTENT_TYPE, "application/grpc"))
            return header_frames(sid, block, end_stream=False)
        if self.mode == "head_bytes":
            conn.send_headers(sid, head + self.big_fields(self.size))
        elif self.mode == "head_fields":
            conn.send_headers(sid, head + [(f"x-f{i}", "1") for i in range(self.count)])
        else:
            conn.send_headers(sid, head)
        conn.send_data(sid, grpc_frame(b""))
        trailers = [("grpc-status", "0")]
        if self.mode == "trailers_bytes":
            trailers += self.big_fields(self.size)
        conn.send_headers(sid, trailers, end_stream=True)
        return b""


# --------------------------------------------------------------------------
# The attacks. Each runs `connections` attackers at once (a thread each),
# is bounded in time, and reports what the gateway did to them.


@dataclass
class AttackOutcome:
    """What the attackers saw: every attacked stream's result (by
    (connection, stream)), bytes the gateway let them send, connections
    closed or sent GOAWAY, and how long the attack took."""

    streams: dict[tuple[int, int], StreamResult] = field(default_factory=dict)
    sent_bytes: int = 0
    goaways: list[tuple[int, int]] = field(default_factory=list)
    closed: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)
    calls_ok: int = 0  # grpcio attacks: calls that succeeded

    def statuses(self) -> dict[Optional[int], int]:
        out: dict[Optional[int], int] = defaultdict(int)
        for s in self.streams.values():
            out[s.grpc_status] += 1
        return dict(out)

    def resets(self) -> dict[Optional[int], int]:
        out: dict[Optional[int], int] = defaultdict(int)
        for s in self.streams.values():
            out[s.reset] += 1
        return dict(out)

    def ended(self) -> int:
        return sum(1 for s in self.streams.values() if s.done)

    def summary(self) -> str:
        return (f"{len(self.streams)} streams, {self.ended()} ended, grpc-status {self.statuses()}, "
                f"RST_STREAM {self.resets()}, sent {self.sent_bytes / MiB:.1f} MiB, GOAWAY {self.goaways[:3]}, "
                f"closed {self.closed}, {self.elapsed:.1f} s, calls ok {self.calls_ok}, errors {self.errors[:3]}")


def _run_attackers(count: int, body: Callable[[int, AttackOutcome, threading.Lock], None]) -> AttackOutcome:
    outcome = AttackOutcome()
    lock = threading.Lock()
    started = time.monotonic()

    def guarded(i: int) -> None:
        try:
            body(i, outcome, lock)
        except Exception as e:  # an attacker's own failure is reported, not raised in a thread
            with lock:
                outcome.errors.append(f"attacker {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcome.elapsed = time.monotonic() - started
    return outcome


def _record(client: RawH2Client, i: int, streams: Iterable[int], outcome: AttackOutcome, lock: threading.Lock) -> None:
    with lock:
        for sid in streams:
            outcome.streams[(i, sid)] = client.streams[sid]
        outcome.sent_bytes += client.sent_data
        if client.goaway:
            outcome.goaways.append(client.goaway)
        if client.closed:
            outcome.closed += 1


def hpack_bomb(port: int, connections: int = 1, timeout: float = 15.0, follow_up: bool = False,
               start: Optional[threading.Barrier] = None) -> AttackOutcome:
    """Each attacker sends the issue's HPACK bomb (HEADERS + 8 CONTINUATION,
    ~147 KB decoding to ~580 MB) on stream 1, with a gRPC message and
    END_STREAM after it, and waits up to `timeout` s for the stream to end.
    `follow_up`: then a plain call on stream 3 of the same connection
    (recorded as stream 3)."""
    block, _ = hpack_bomb_block(request_head())
    bomb = header_frames(1, block) + data_frame(1, grpc_frame(b""), end=True)
    deadline = time.monotonic() + timeout

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        with RawH2Client(port, timeout=timeout) as c:
            c.send(bomb)
            c.wait_streams([1], max(0.1, deadline - time.monotonic()))
            streams = [1]
            if follow_up and c.streams[1].done and not c.closed:
                c.send(header_frames(3, request_head()) + data_frame(3, grpc_frame(b""), end=True))
                c.wait_streams([3], max(1.0, deadline - time.monotonic()))
                streams.append(3)
            _record(c, i, streams, outcome, lock)

    return _run_attackers(connections, attacker)


def own_service_flood(port: int, connections: int = 1, streams: int = 4, seconds: float = 2.0,
                      path: str = HEALTH_CHECK, declared: int = 64 * MiB) -> AttackOutcome:
    """The issue's flood of the gateway's own services, with the `h2`
    package: on each connection `streams` calls to `path` each declaring a
    message of `declared` bytes, then DATA as fast as flow control lets
    (never more than declared) for `seconds`. `sent_bytes` is what the
    gateway's windows let through."""
    import select

    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        conn.initiate_connection()
        results: dict[int, StreamResult] = defaultdict(StreamResult)
        left: dict[int, int] = {}
        sent = 0
        goaway = None
        closed = False
        chunk = b"\x00" * 16384
        with socket.create_connection((HOST, port), timeout=5) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for _ in range(streams):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", HOST), (":path", path),
                                        ("content-type", "application/grpc"), ("te", "trailers")])
                conn.send_data(sid, b"\x00" + struct.pack(">I", declared))
                left[sid] = declared
            sock.sendall(conn.data_to_send())
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not closed:
                progressed = False
                for sid in list(left):
                    if results[sid].done or left[sid] <= 0:
                        continue
                    try:
                        n = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size, left[sid])
                        if n > 0:
                            conn.send_data(sid, chunk[:n])
                            left[sid] -= n
                            sent += n
                            progressed = True
                    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                        left[sid] = 0
                out = conn.data_to_send()
                try:
                    if out:
                        sock.sendall(out)
                    readable, _, _ = select.select([sock], [], [], 0 if progressed else 0.02)
                    data = sock.recv(1 << 20) if readable else None
                except OSError:
                    closed = True
                    break
                if data == b"":
                    closed = True
                    break
                if data:
                    try:
                        events = conn.receive_data(data)
                    except h2.exceptions.ProtocolError as e:
                        outcome.errors.append(f"h2: {e}")
                        break
                    for ev in events:
                        if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                            results[ev.stream_id].blocks.append(list(ev.headers))
                            if ev.stream_ended:
                                results[ev.stream_id].end_stream = True
                        elif isinstance(ev, h2.events.StreamEnded):
                            results[ev.stream_id].end_stream = True
                        elif isinstance(ev, h2.events.StreamReset):
                            results[ev.stream_id].reset = int(ev.error_code)
                        elif isinstance(ev, h2.events.ConnectionTerminated):
                            goaway = (ev.last_stream_id or 0, int(ev.error_code))
                        elif isinstance(ev, h2.events.DataReceived):
                            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        with lock:
            for sid in left:
                outcome.streams[(i, sid)] = results[sid]
            outcome.sent_bytes += sent
            if goaway:
                outcome.goaways.append(goaway)
            if closed:
                outcome.closed += 1

    return _run_attackers(connections, attacker)


def own_service_partials(port: int, connections: int = 1, streams: int = 1000, path: str = HEALTH_CHECK,
                         declared: int = 4091, send: int = 4000, hold: float = 2.0) -> AttackOutcome:
    """On each connection, `streams` calls to `path`, each sending `send` of
    a `declared`-byte message and then stalling (no END_STREAM) for `hold`
    s: what the gateway holds for them is what it buffers for partial
    messages."""

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        with RawH2Client(port) as c:
            c.ready()
            payload = grpc_frame(b"\x0a" * send, declared=declared)[:5 + send]
            ids = [1 + 2 * k for k in range(streams)]
            batch = bytearray()
            for sid in ids:
                batch += header_frames(sid, request_head(path)) + data_frame(sid, payload)
                c.spend(sid, len(payload))
                if len(batch) > 256 * KiB:
                    c.send(bytes(batch))
                    batch.clear()
                    c.pump(0)
            c.send(bytes(batch))
            c.wait(lambda: False, hold)
            _record(c, i, ids, outcome, lock)

    return _run_attackers(connections, attacker)


# Unknown frame types must be ignored (RFC 9113 §5.5): a filler that makes
# the gateway read a whole 64 KiB socket buffer around each 1-byte DATA frame.
FILLER_FRAME_TYPE = 0xFA


def replay_pinning(port: int, connections: int = 4, streams: int = 1000, filler: bool = True,
                   hold: float = 1.5, path: str = PROCESS) -> AttackOutcome:
    """The pinning attack: `streams` calls over `connections` connections,
    each a request head and ONE DATA frame with a 1-byte payload (and 255
    bytes of padding, the most a PADDED frame can carry), then a stall
    without END_STREAM. With `filler`, ~64 KiB of unknown-type frames
    precede each stream's frames, so each 1-byte payload arrives in its own
    large socket read: a kept slice of it pins the whole read buffer."""
    per_connection = max(1, streams // connections)
    gap = frame(FILLER_FRAME_TYPE, 0, 0, b"\x00" * 16384) * 4 if filler else b""

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        with RawH2Client(port) as c:
            c.ready()
            ids = [1 + 2 * k for k in range(per_connection)]
            batch = bytearray()
            for sid in ids:
                batch += gap + header_frames(sid, request_head(path)) + data_frame(sid, b"\x00", padding=255)
                c.spend(sid, 1 + 1 + 255)
                if len(batch) >= 1 * MiB:
                    c.send(bytes(batch))
                    batch.clear()
            c.send(bytes(batch))
            c.wait(lambda: False, hold)
            _record(c, i, ids, outcome, lock)

    return _run_attackers(connections, attacker)


def unknown_field_request(pb2, size: int, request_id: str = "p") -> bytes:
    """A ProcessRequest with `size` bytes in an unknown field (15): the
    replica ignores it and does not echo it, so the answer stays small."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)
    return pb2.ProcessRequest(request_id=request_id, data="x").SerializeToString() + b"\x7a" + varint(size) + b"f" * size


def replay_pending_calls(port: int, pb2, channels: int = 1, calls: int = 400, size: int = 250_000,
                         delay_ms: int = 6000, timeout: float = 40.0) -> AttackOutcome:
    """The issue's measurement: on each of `channels` grpcio channels,
    `calls` unary calls of `size` bytes at once, to replicas that answer
    after `delay_ms` (x-mesh-delay-ms). calls_ok counts the successes."""
    import grpc
    body = unknown_field_request(pb2, size)

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        options = [("grpc.use_local_subchannel_pool", 1), ("grpc.enable_retries", 0),
                   ("grpc.max_send_message_length", 16 * MiB), ("grpc.max_receive_message_length", 16 * MiB)]
        with grpc.insecure_channel(f"{HOST}:{port}", options=options) as channel:
            call = channel.unary_unary(PROCESS, request_serializer=lambda b: b,
                                       response_deserializer=pb2.ProcessResponse.FromString)
            futures = [call.future(body, timeout=timeout, metadata=[("x-mesh-delay-ms", str(delay_ms))])
                       for _ in range(calls)]
            ok, errors = 0, []
            for f in futures:
                try:
                    if f.result().result == "processed: x":
                        ok += 1
                    else:
                        errors.append("wrong reply")
                except grpc.RpcError as e:
                    errors.append(f"{e.code().name}: {e.details()}")
        with lock:
            outcome.calls_ok += ok
            outcome.sent_bytes += calls * (len(body) + 5)
            outcome.errors.extend(errors[:10])

    return _run_attackers(channels, attacker)


def oversize_heads(port: int, connections: int = 1, streams: int = 10, fields_over: int = 14) -> AttackOutcome:
    """On each connection, `streams` calls whose heads break a listener
    limit: odd ones ~66 KB (`fields_over` fields of 4,740 bytes), even ones
    101 small fields; each with a message and END_STREAM."""
    big = [(f"x-big-{i:02d}", "v" * 4700) for i in range(fields_over)]
    many = [(f"x-f{i:03d}", "1") for i in range(101 - REQUEST_HEAD_FIELDS)]

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        with RawH2Client(port) as c:
            c.ready()
            ids = [1 + 2 * k for k in range(streams)]
            for k, sid in enumerate(ids):
                c.send(header_frames(sid, request_head(extra=big if k % 2 == 0 else many)) +
                       data_frame(sid, grpc_frame(b""), end=True))
            c.wait_streams(ids, 10)
            _record(c, i, ids, outcome, lock)

    return _run_attackers(connections, attacker)


def grpc_calls(port: int, pb2, channels: int = 1, calls: int = 1, metadata=(), timeout: float = 10.0) -> AttackOutcome:
    """`calls` unary Process calls at once on each of `channels` grpcio
    channels (e.g. to a route whose upstream abuses the gateway);
    the outcome's `errors` holds each failure's status."""
    import grpc

    def attacker(i: int, outcome: AttackOutcome, lock: threading.Lock) -> None:
        with grpc.insecure_channel(f"{HOST}:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = channel.unary_unary(PROCESS, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=pb2.ProcessResponse.FromString)
            futures = [stub.future(pb2.ProcessRequest(request_id=f"a{i}-{k}", data="x"), timeout=timeout,
                                   metadata=list(metadata)) for k in range(calls)]
            ok, errors = 0, []
            for f in futures:
                try:
                    f.result()
                    ok += 1
                except grpc.RpcError as e:
                    errors.append(f"{e.code().name}: {(e.details() or '')[:120]}")
        with lock:
            outcome.calls_ok += ok
            outcome.errors.extend(errors)

    return _run_attackers(channels, attacker)
