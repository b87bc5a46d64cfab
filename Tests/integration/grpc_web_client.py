"""A small gRPC-Web client for the tests, written from gRPC's
doc/PROTOCOL-WEB.md (not from Meshgate's code).

What it follows from that document:
  - content types `application/grpc-web[+proto]` (binary) and
    `application/grpc-web-text[+proto]` (the same bytes, base64);
  - the body is gRPC length-prefixed frames; the MSB of a frame's flag byte
    marks the trailer frame (0x80), which must be the last one, and holds
    the trailers as an HTTP/1 header block (`name: value\\r\\n` lines);
  - a text body may be several base64 segments, each padded where the
    server flushed, so it is decoded 4 characters at a time;
  - a Trailers-Only answer may carry grpc-status/grpc-message in the HTTP
    response headers with no body (these take precedence);
  - any HTTP version: HTTP/1.1 (`http.client`) or HTTP/2 (`h2`, prior
    knowledge); the end of the body ends the call (no HTTP trailers).

Every call returns a GrpcWebResponse; anything that breaks the protocol
raises ProtocolError.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Iterable, Optional

HOST = "127.0.0.1"
BINARY = "application/grpc-web+proto"
TEXT = "application/grpc-web-text"
USER_AGENT = "grpc-web-python-tests/1.0"
DATA_FLAG, TRAILER_FLAG = 0x00, 0x80

Headers = Iterable[tuple[str, str]]


class ProtocolError(Exception):
    """The response does not follow the gRPC-Web protocol."""


# --------------------------------------------------------------------------
# Encoding and decoding


def frame(message: bytes, flag: int = DATA_FLAG) -> bytes:
    """One length-prefixed frame: flag byte, 4-byte big-endian length, bytes."""
    return bytes([flag]) + len(message).to_bytes(4, "big") + message


def encode_body(messages: Iterable[bytes], text: bool) -> bytes:
    raw = b"".join(frame(m) for m in messages)
    return base64.b64encode(raw) if text else raw


class Base64Stream:
    """Decodes a text body as it arrives. Segments are padded independently,
    so the body is decoded one 4-character group at a time."""

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        data = self.pending + data
        usable = len(data) - len(data) % 4
        self.pending = data[usable:]
        try:
            return b"".join(base64.b64decode(data[i:i + 4], validate=True)
                            for i in range(0, usable, 4))
        except binascii.Error as e:
            raise ProtocolError(f"text body is not base64 ({e}): {data[:80]!r}") from e

    def close(self) -> None:
        if self.pending:
            raise ProtocolError(f"text body ends with {len(self.pending)} stray characters")


class FrameReader:
    """Splits the (decoded) body into (flag, payload) frames as bytes arrive."""

    def __init__(self) -> None:
        self.buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= 5:
            length = int.from_bytes(self.buffer[1:5], "big")
            if len(self.buffer) < 5 + length:
                break
            frames.append((self.buffer[0], self.buffer[5:5 + length]))
            self.buffer = self.buffer[5 + length:]
        return frames

    def close(self) -> None:
        if self.buffer:
            raise ProtocolError(f"body ends inside a frame ({len(self.buffer)} bytes left)")


def parse_trailer_block(payload: bytes) -> dict[str, str]:
    """The trailer frame's `name:value\\r\\n` lines; names kept as sent."""
    try:
        text = payload.decode("ascii")
    except UnicodeDecodeError as e:
        raise ProtocolError(f"trailer frame is not ASCII: {payload!r}") from e
    trailers: dict[str, str] = {}
    for line in text.split("\r\n"):
        if not line:
            continue  # tolerate a terminating empty line
        name, colon, value = line.partition(":")
        if not colon or "\n" in line or "\r" in line or not name or name != name.strip():
            raise ProtocolError(f"bad trailer line {line!r} in {payload!r}")
        trailers[name] = value.strip()
    return trailers


# --------------------------------------------------------------------------
# The response


@dataclass
class GrpcWebResponse:
    http_status: int
    headers: dict[str, str]  # lower-case names, repeated ones joined with ", "
    text: bool  # the request was text (the body was decoded as base64)
    messages: list[bytes] = field(default_factory=list)
    message_times: list[float] = field(default_factory=list)  # monotonic, when each was complete
    trailers: dict[str, str] = field(default_factory=dict)  # the trailer frame's, names as sent
    trailer_frame: bool = False
    status: Optional[int] = None
    message: str = ""
    status_source: str = "none"  # "headers", "trailer-frame" or "none"
    body: bytes = b""  # as received (base64 for text)
    http_trailers: dict[str, str] = field(default_factory=dict)  # HTTP/2 trailers: gRPC-Web uses none
    chunked: Optional[bool] = None  # HTTP/1.1: Transfer-Encoding: chunked
    started: float = field(default_factory=time.monotonic)
    ended: float = 0.0

    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


class _BodyParser:
    """Feeds body chunks through base64 (text) and the frame reader."""

    def __init__(self, response: GrpcWebResponse) -> None:
        self.response = response
        self.text = Base64Stream() if response.text else None
        self.frames = FrameReader()

    def feed(self, chunk: bytes) -> None:
        now = time.monotonic()
        self.response.body += chunk
        for flag, payload in self.frames.feed(self.text.feed(chunk) if self.text else chunk):
            if self.response.trailer_frame:
                raise ProtocolError(f"a frame (flag {flag:#04x}) after the trailer frame")
            if flag == DATA_FLAG:
                self.response.messages.append(payload)
                self.response.message_times.append(now)
            elif flag == TRAILER_FLAG:
                self.response.trailer_frame = True
                self.response.trailers = parse_trailer_block(payload)
            else:  # 0x01/0x81: compressed, which this client never asked for
                raise ProtocolError(f"unexpected frame flag {flag:#04x}")

    def finish(self) -> GrpcWebResponse:
        r = self.response
        r.ended = time.monotonic()
        if self.text:
            self.text.close()
        self.frames.close()
        lowered = {k.lower(): v for k, v in r.trailers.items()}
        if "grpc-status" in r.headers:  # Trailers-Only: headers first
            source, status, message = "headers", r.headers["grpc-status"], r.headers.get("grpc-message", "")
        elif r.trailer_frame:
            source, status, message = "trailer-frame", lowered.get("grpc-status"), lowered.get("grpc-message", "")
        else:
            return r
        try:
            r.status = int(status)
        except (TypeError, ValueError):
            raise ProtocolError(f"grpc-status {status!r} ({source}) is not a number") from None
        r.status_source = source
        r.message = urllib.parse.unquote(message)  # grpc-message is percent-encoded
        return r


def _request_headers(content_type: str, text: bool, extra: Headers) -> list[tuple[str, str]]:
    headers = [("content-type", content_type), ("x-grpc-web", "1"), ("x-user-agent", USER_AGENT)]
    if text:
        headers.append(("accept", TEXT))
    return headers + [(k.lower(), v) for k, v in extra]


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


# --------------------------------------------------------------------------
# HTTP/1.1


@dataclass
class PlainResponse:
    """A non-gRPC HTTP/1.1 answer (e.g. to a CORS preflight)."""
    status: int
    headers: dict[str, str]
    body: bytes


class Http1Connection:
    """One HTTP/1.1 connection (kept alive between calls)."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 10.0) -> None:
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    @property
    def sock(self) -> Optional[socket.socket]:
        return self.conn.sock

    def _send(self, method: str, path: str, headers: Headers, body: Optional[bytes]) -> http.client.HTTPResponse:
        self.conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers:
            self.conn.putheader(name, value)
        if body is not None:
            self.conn.putheader("content-length", str(len(body)))
        self.conn.endheaders(body)
        return self.conn.getresponse()

    def request(self, method: str, path: str, headers: Headers = (), body: Optional[bytes] = None) -> PlainResponse:
        response = self._send(method, path, list(headers), body)
        return PlainResponse(response.status, _joined(response.getheaders()), response.read())

    def call(self, path: str, messages: Iterable[bytes], text: bool = False,
             content_type: Optional[str] = None, headers: Headers = ()) -> GrpcWebResponse:
        content_type = content_type or (TEXT if text else BINARY)
        started = time.monotonic()
        raw = self._send("POST", path, _request_headers(content_type, text, headers), encode_body(messages, text))
        result = GrpcWebResponse(raw.status, _joined(raw.getheaders()), text, started=started,
                                 chunked=bool(raw.chunked))
        parser = _BodyParser(result)
        while chunk := raw.read1(65536):  # one chunk at a time, as it arrives
            parser.feed(chunk)
        return parser.finish()

    def close(self) -> None:
        self.conn.close()


def call_http1(port: int, path: str, messages: Iterable[bytes], text: bool = False,
               content_type: Optional[str] = None, headers: Headers = (), timeout: float = 10.0) -> GrpcWebResponse:
    """One call on a new HTTP/1.1 connection."""
    conn = Http1Connection(port, timeout=timeout)
    try:
        return conn.call(path, messages, text, content_type, headers)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# HTTP/2 (prior knowledge, plaintext)


def call_http2(port: int, path: str, messages: Iterable[bytes], text: bool = False,
               content_type: Optional[str] = None, headers: Headers = (), timeout: float = 10.0,
               host: str = HOST) -> GrpcWebResponse:
    """One call on a new HTTP/2 connection; the stream's end ends the call."""
    import h2.config
    import h2.connection
    import h2.events

    content_type = content_type or (TEXT if text else BINARY)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    started = time.monotonic()
    result: Optional[GrpcWebResponse] = None
    parser: Optional[_BodyParser] = None
    with socket.create_connection((host, port), timeout=timeout) as sock:
        conn.initiate_connection()
        stream_id = conn.get_next_available_stream_id()
        conn.send_headers(stream_id, [(":method", "POST"), (":scheme", "http"), (":authority", f"{host}:{port}"),
                                      (":path", path), *_request_headers(content_type, text, headers)])
        conn.send_data(stream_id, encode_body(messages, text), end_stream=True)
        sock.sendall(conn.data_to_send())
        deadline = started + timeout
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                raise ProtocolError(f"stream not ended within {timeout}s") from None
            if not chunk:
                raise ProtocolError("connection closed before the stream ended")
            for event in conn.receive_data(chunk):
                if getattr(event, "stream_id", stream_id) != stream_id:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    result = GrpcWebResponse(int(dict(event.headers)[":status"]),
                                             _joined(event.headers), text, started=started)
                    parser = _BodyParser(result)
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, stream_id)
                    if parser is None:
                        raise ProtocolError("DATA before the response headers")
                    parser.feed(event.data)
                elif isinstance(event, h2.events.TrailersReceived):
                    result.http_trailers = _joined(event.headers)
                elif isinstance(event, h2.events.StreamReset):
                    raise ProtocolError(f"stream reset: {event.error_code!r}")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise ProtocolError(f"GOAWAY: {event.error_code!r}")
                elif isinstance(event, h2.events.StreamEnded):
                    if parser is None:
                        raise ProtocolError("stream ended without response headers")
                    return parser.finish()
            sock.sendall(conn.data_to_send())
