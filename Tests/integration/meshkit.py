"""Plain helpers for Meshgate's integration tests (no pytest fixtures here).

conftest.py builds its fixtures from these, and the test modules import the
few they call directly (`from meshkit import ...`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import grpc

HOST = "127.0.0.1"
PORT_WAIT_S = 20.0  # how long a process may take to accept TCP connections
STOP_GRACE_S = 5.0  # SIGTERM grace before SIGKILL at teardown
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
LOG_TAIL_LINES = 60

_handed_out_ports: set[int] = set()


# --------------------------------------------------------------------------
# Ports and polling


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now.

    Binds port 0 and closes the socket; a port is never handed out twice in
    one test session, so two processes started together cannot collide.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = s.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("could not find a fresh free port")


def port_is_free(port: int) -> bool:
    """Whether `port` can be bound on every address (for tests that must
    use the fixed ports the product description or the demo name)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """True when a TCP connect to host:port succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, interval: float = 0.05,
               message: str = "condition") -> object:
    """Polls `predicate` until it returns something truthy; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {message}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# Processes


@dataclass
class Proc:
    """One child process whose stdout and stderr go to `log_path`."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen
    port: Optional[int] = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(no log: {e})"
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited with {self.popen.returncode}"
        return (f"--- {self.name} (pid {self.pid}, {state}): {' '.join(self.argv)}\n"
                f"--- last lines of {self.log_path}:\n{self.tail()}")

    def send_signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code; raises subprocess.TimeoutExpired if still running."""
        return self.popen.wait(timeout=timeout)

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds. Always reaps the child."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


# Every process started by any ProcessGroup, for the failure report hook.
ALL_PROCS: list[Proc] = []


def wait_for_port(proc: Proc, port: int, timeout: float = PORT_WAIT_S) -> None:
    """Waits until `port` accepts TCP connections; fails early if `proc` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(
                f"{proc.name} exited with {proc.popen.returncode} before listening on "
                f"{HOST}:{port}\n{proc.describe()}")
        if port_accepts(port, timeout=0.3):
            return
        time.sleep(0.05)
    raise AssertionError(f"{proc.name} did not accept TCP on {HOST}:{port} within "
                         f"{timeout:.0f}s\n{proc.describe()}")


class ProcessGroup:
    """Starts processes, logs each to a file in `log_dir`, stops all of them."""

    def __init__(self, log_dir: Path):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], port: Optional[int] = None,
              env: Optional[dict] = None) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=env if env is not None else os.environ.copy(),
                start_new_session=True)  # a Ctrl-C to pytest does not hit it first
        proc = Proc(name=name, argv=list(argv), log_path=log_path, popen=popen, port=port)
        self.procs.append(proc)
        ALL_PROCS.append(proc)
        if port is not None:
            try:
                wait_for_port(proc, port)
            except BaseException:
                proc.stop()
                raise
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


# --------------------------------------------------------------------------
# Gateway config


_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./:\-]*$")


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in ("true", "false", "yes", "no", "null", "~"):
        return text
    return json.dumps(text)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value, indent: int = 0) -> str:
    """A small block-style YAML emitter for dicts, lists and scalars."""
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            elif isinstance(item, (dict, list)):
                out.append(f"{pad}{key}: {'{}' if isinstance(item, dict) else '[]'}\n")
            else:
                out.append(f"{pad}{key}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        out = []
        for item in value:
            body = to_yaml(item, indent + 2)
            # "- " takes the place of the first two spaces of the item's first line
            out.append(pad + "- " + body[indent + 2:])
        return "".join(out)
    return pad + _scalar(value) + "\n"


def addr(port: int) -> str:
    return f"{HOST}:{port}"


def gateway_config(listen_port: int, clusters: dict[str, Iterable], routes: list[dict],
                   drain_timeout: Optional[str] = "5s", listener_name: str = "public") -> str:
    """YAML for one listener on 127.0.0.1:`listen_port`.

    clusters: name -> endpoints, each a port or a (port, weight) pair.
    routes: dicts as in the config (match/cluster/timeout/max_timeout).
    """
    doc: dict = {}
    if drain_timeout:
        doc["runtime"] = {"drain_timeout": drain_timeout}
    doc["listeners"] = [{"name": listener_name, "address": addr(listen_port), "routes": routes}]
    doc["clusters"] = []
    for name, endpoints in clusters.items():
        eps = []
        for ep in endpoints:
            if isinstance(ep, tuple):
                eps.append({"address": addr(ep[0]), "weight": ep[1]})
            else:
                eps.append({"address": addr(ep)})
        doc["clusters"].append({"name": name, "endpoints": eps})
    return to_yaml(doc)


# --------------------------------------------------------------------------
# gRPC


def channel_options(extra: Optional[dict] = None) -> list[tuple[str, object]]:
    """Options for every test channel: 16 MiB messages, no retries, and a
    channel-private subchannel pool so each channel opens its own connection."""
    options = {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.enable_retries": 0,
        "grpc.use_local_subchannel_pool": 1,
    }
    options.update(extra or {})
    return list(options.items())


def insecure_channel(port: int, extra_options: Optional[dict] = None) -> grpc.Channel:
    return grpc.insecure_channel(addr(port), options=channel_options(extra_options))


_TIMEOUT_UNITS_NS = {"H": 3_600_000_000_000, "M": 60_000_000_000, "S": 1_000_000_000,
                     "m": 1_000_000, "u": 1_000, "n": 1}


def parse_grpc_timeout(value: str) -> int:
    """A `grpc-timeout` header value (1-8 digits and a unit H M S m u n) in ns."""
    match = re.fullmatch(r"(\d{1,8})([HMSmun])", value)
    if not match:
        raise ValueError(f"not a grpc-timeout value: {value!r}")
    return int(match.group(1)) * _TIMEOUT_UNITS_NS[match.group(2)]


def grpc_frame(message: bytes) -> bytes:
    """One uncompressed gRPC length-prefixed message."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


# --------------------------------------------------------------------------
# Raw HTTP/2 bytes


H2_FRAME_TYPES = {0: "DATA", 1: "HEADERS", 2: "PRIORITY", 3: "RST_STREAM", 4: "SETTINGS",
                  5: "PUSH_PROMISE", 6: "PING", 7: "GOAWAY", 8: "WINDOW_UPDATE",
                  9: "CONTINUATION"}


def parse_h2_frames(data: bytes) -> Optional[list[tuple[str, int, int]]]:
    """Splits server bytes into HTTP/2 frames: [(type name, flags, stream id)].

    Returns None when the bytes are not a sequence of known frame types (an
    incomplete last frame is tolerated: the peer may close mid-write)."""
    frames = []
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset:offset + 3], "big")
        ftype, flags = data[offset + 3], data[offset + 4]
        stream_id = int.from_bytes(data[offset + 5:offset + 9], "big") & 0x7FFFFFFF
        if ftype not in H2_FRAME_TYPES:
            return None
        frames.append((H2_FRAME_TYPES[ftype], flags, stream_id))
        offset += 9 + length
    return frames


def read_until_close(sock: socket.socket, timeout: float, done=None) -> tuple[bytes, bool]:
    """Reads until the peer closes, `done(bytes so far)` holds, or `timeout`
    s pass: (bytes, closed?). A connection reset counts as closed."""
    data = b""
    deadline = time.monotonic() + timeout
    while not (done and done(data)):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return data, False
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


@dataclass
class H2Response:
    """What came back for one raw HTTP/2 request."""

    blocks: list[dict[str, str]]  # header blocks in order: response headers, trailers
    data: bytes
    ended: str  # "end_stream", "reset ...", "goaway ..." or "connection closed"

    def header(self, name: str) -> Optional[str]:
        """The value of `name` in the last header block that has it."""
        for block in reversed(self.blocks):
            if name in block:
                return block[name]
        return None


def h2_request(port: int, headers: list[tuple[str, str]], body: bytes,
               timeout: float = 5.0, sock: Optional[socket.socket] = None) -> H2Response:
    """Sends one HTTP/2 request (prior knowledge, plaintext) with the `h2`
    package and reads until its stream ends, at most `timeout` seconds.
    With `sock` (e.g. a TLS socket the caller opened), the request goes
    there and the caller closes it."""
    import contextlib
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    blocks: list[dict[str, str]] = []
    data = b""
    ended: Optional[str] = None
    opened = contextlib.nullcontext(sock) if sock is not None else socket.create_connection((HOST, port), timeout=timeout)
    with opened as sock:
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, headers)
        conn.send_data(stream_id, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = time.monotonic() + timeout
        while ended is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream not ended within {timeout}s; got {blocks}")
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                ended = "connection closed"
                break
            for event in conn.receive_data(chunk):
                if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    blocks.append(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    ended = "end_stream"
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    ended = f"reset {event.error_code!r}"
                elif isinstance(event, h2.events.ConnectionTerminated):
                    ended = f"goaway {event.error_code!r}"
            sock.sendall(conn.data_to_send())
    return H2Response(blocks, data, ended)


def grpc_messages(data: bytes) -> list[bytes]:
    """Splits a gRPC response body into its (uncompressed) messages."""
    messages = []
    offset = 0
    while offset + 5 <= len(data):
        if data[offset] != 0:
            raise ValueError("compressed gRPC message")
        length = int.from_bytes(data[offset + 1:offset + 5], "big")
        messages.append(data[offset + 5:offset + 5 + length])
        offset += 5 + length
    if offset != len(data):
        raise ValueError(f"{len(data) - offset} trailing bytes after the last gRPC message")
    return messages


# --------------------------------------------------------------------------
# A recording upstream


def rss_kib(pid: int) -> int:
    """The process's resident memory in KiB; fails if it is gone (a growth
    measured against a dead process would pass)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RawServer:
    """A TCP server on 127.0.0.1 for the hand-written upstreams (python-h2
    servers that misbehave on purpose): a thread accepts, each connection is
    served on its own thread by `serve_connection(sock)`, the socket is
    closed when that returns or raises, and `stop()` closes the listener and
    every connection. A subclass sets its own fields, then calls
    `super().__init__()` (which starts accepting)."""

    def __init__(self, backlog: int = 64):
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(backlog)
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def serve_connection(self, sock: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        # A connection the gateway closed, or stop() closed under it, ends
        # its thread; either is how these servers' connections end.
        try:
            self.serve_connection(sock)
        except (OSError, ValueError):
            pass
        finally:
            sock.close()

    def stop(self) -> None:
        self._stopped.set()
        self._listener.close()
        for sock in self._connections:
            try:
                sock.close()
            except OSError:
                pass


class RecordingUpstream:
    """A grpcio server for MeshService that records when each call arrives,
    its request bytes and headers, and answers as `behaviour` says."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.calls = []  # (monotonic time, metadata dict, request bytes)
        self.lock = threading.Lock()
        self.port = free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        handlers = {
            "Process": grpc.unary_unary_rpc_method_handler(self.unary),
            "CollectMetrics": grpc.stream_unary_rpc_method_handler(self.client_stream),
        }
        self.server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("mesh.v1.MeshService", handlers)])
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def record(self, context, body):
        with self.lock:
            self.calls.append((time.monotonic(), dict(context.invocation_metadata()), body))
            return len(self.calls)

    def unary(self, request, context):
        n = self.record(context, request)
        return self.behaviour(n, request, context)

    def client_stream(self, iterator, context):
        body = b"".join(iterator)
        n = self.record(context, body)
        return self.behaviour(n, body, context)

    def stop(self):
        self.server.stop(0)
