"""Run inside `unshare -n` by test_grpc_web.py (Chromium looks outside
otherwise): brings loopback up, starts one replica (b1) and a gateway whose
listener speaks gRPC-Web with CORS for the page's origin, serves a page
from another loopback port, and lets headless Chromium load it. The page's
script calls Process through the gateway with fetch() (grpc-web-text, then
binary grpc-web+proto), decoding everything by hand, and writes the results
into the DOM, which goes into OUT_DIR/dom.html.

    unshare -n python3 grpc_web_browser_scenario.py MESHGATE MESH_SAMPLE OUT_DIR
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpc_web_client import call_http1  # noqa: E402
from meshkit import ProcessGroup, free_port, to_yaml, wait_until  # noqa: E402

HOST = "127.0.0.1"
CHROMIUM = "/usr/bin/chromium"

# The page. Everything protocol-related is written by hand: the
# ProcessRequest protobuf, the length-prefixed frame, base64, and the
# parsing of frames, trailer frame and ProcessResponse.
PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>gRPC-Web from a browser</title></head>
<body>
<pre id="text">pending</pre>
<pre id="binary">pending</pre>
<script>
const GATEWAY = "__GATEWAY__";
const utf8 = new TextEncoder(), fromUtf8 = new TextDecoder();

// protobuf: a length-delimited field (wire type 2) of a short string
function stringField(number, value) {
  const bytes = utf8.encode(value);
  if (bytes.length > 127) throw new Error("keep strings short: one-byte length");
  return [(number << 3) | 2, bytes.length, ...bytes];
}
// mesh.v1.ProcessRequest { request_id = 1; data = 2; }
function processRequest(requestId, data) {
  return new Uint8Array([...stringField(1, requestId), ...stringField(2, data)]);
}
// gRPC frame: flag 0, 4-byte big-endian length, message
function frame(message) {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}
function toBase64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}
// A text body may be several padded base64 segments: decode 4 chars at a time.
function fromBase64Segments(text) {
  if (text.length % 4) throw new Error("text body length " + text.length + " is not a multiple of 4");
  const out = [];
  for (let i = 0; i < text.length; i += 4) {
    for (const c of atob(text.slice(i, i + 4))) out.push(c.charCodeAt(0));
  }
  return new Uint8Array(out);
}
function readVarint(bytes, at) {
  let value = 0, shift = 0;
  for (;;) {
    const b = bytes[at.pos++];
    if (b === undefined) throw new Error("truncated varint");
    value += (b & 0x7f) * 2 ** shift;
    if (!(b & 0x80)) return value;
    shift += 7;
  }
}
// mesh.v1.ProcessResponse: request_id = 1, result = 2, replica_id = 3 (others skipped)
function decodeProcessResponse(bytes) {
  const names = {1: "requestId", 2: "result", 3: "replicaId"};
  const out = {}, at = {pos: 0};
  while (at.pos < bytes.length) {
    const tag = readVarint(bytes, at), field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 2) {
      const length = readVarint(bytes, at);
      const value = bytes.subarray(at.pos, at.pos + length);
      at.pos += length;
      if (names[field]) out[names[field]] = fromUtf8.decode(value);
    } else if (wire === 0) {
      readVarint(bytes, at);
    } else {
      throw new Error("unexpected wire type " + wire);
    }
  }
  return out;
}
// Frames: 0x00 a message, 0x80 the trailer frame (name:value lines), last.
function parseBody(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const messages = [];
  let trailers = null, pos = 0;
  while (pos < bytes.length) {
    if (trailers) throw new Error("a frame after the trailer frame");
    if (pos + 5 > bytes.length) throw new Error("truncated frame header");
    const flag = bytes[pos], length = view.getUint32(pos + 1);
    const payload = bytes.subarray(pos + 5, pos + 5 + length);
    if (payload.length !== length) throw new Error("truncated frame");
    pos += 5 + length;
    if (flag === 0x00) {
      messages.push(payload);
    } else if (flag === 0x80) {
      trailers = {};
      for (const line of fromUtf8.decode(payload).split("\r\n")) {
        if (!line) continue;
        const colon = line.indexOf(":");
        if (colon <= 0) throw new Error("bad trailer line " + JSON.stringify(line));
        trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
    } else {
      throw new Error("unexpected frame flag " + flag);
    }
  }
  return {messages, trailers: trailers || {}};
}
async function call(mode) {
  const text = mode === "text";
  const body = frame(processRequest("browser-" + mode, "hello from chromium (" + mode + ")"));
  const headers = {"content-type": text ? "application/grpc-web-text" : "application/grpc-web+proto",
                   "x-grpc-web": "1", "x-user-agent": "grpc-web-javascript/0.1"};
  if (text) headers["accept"] = "application/grpc-web-text";
  const response = await fetch(GATEWAY + "/mesh.v1.MeshService/Process",
                               {method: "POST", mode: "cors", headers, body: text ? toBase64(body) : body});
  const bytes = text ? fromBase64Segments(await response.text()) : new Uint8Array(await response.arrayBuffer());
  const {messages, trailers} = parseBody(bytes);
  // A Trailers-Only answer carries the status in (exposed) headers.
  let status = response.headers.get("grpc-status"), message = response.headers.get("grpc-message");
  if (status === null) {
    status = trailers["grpc-status"];
    message = trailers["grpc-message"];
  }
  return {httpStatus: response.status, contentType: response.headers.get("content-type"),
          grpcStatus: status === undefined ? null : Number(status),
          grpcMessage: decodeURIComponent(message || ""),
          messages: messages.map(decodeProcessResponse)};
}
async function main() {
  for (const mode of ["text", "binary"]) {
    let result;
    try {
      result = await call(mode);
    } catch (e) {
      result = {error: String(e)};
    }
    document.getElementById(mode).textContent = JSON.stringify(result);
  }
  document.body.dataset.done = "1";
}
main();
</script>
</body></html>
"""


class PageHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # into OUT_DIR/page-server.log
        with open(self.server.log_path, "a") as log:
            log.write((format % args) + "\n")


def main() -> int:
    meshgate, sample, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    group = ProcessGroup(out / "logs")
    pages = None
    try:
        replica, port, page_port = free_port(), free_port(), free_port()
        group.start("b1", [sample, "--host", HOST, "--port", str(replica), "--replica-id", "b1"], port=replica)
        page_origin = f"http://{HOST}:{page_port}"
        config = out / "gateway.yaml"
        config.write_text(to_yaml({
            "runtime": {"drain_timeout": "1s"},
            "listeners": [{"name": "web", "address": f"{HOST}:{port}", "grpc_web": True,
                           "cors": {"allowed_origins": [page_origin]},
                           "routes": [{"match": {"service": "mesh.v1.MeshService"}, "cluster": "mesh"}]}],
            "clusters": [{"name": "mesh", "endpoints": [{"address": f"{HOST}:{replica}"}]}]}))
        group.start("gateway", [meshgate, "run", "--config", str(config)], port=port)

        last = [None]

        def answers() -> bool:  # a gRPC-Web call through the gateway succeeds
            try:
                last[0] = call_http1(port, "/mesh.v1.MeshService/Process", [b"\x0a\x05probe"], timeout=2)
                return last[0].status == 0
            except Exception as e:  # noqa: BLE001 - reported below
                last[0] = e
                return False

        try:
            wait_until(answers, timeout=20, interval=0.2, message="a gRPC-Web call through the gateway")
        except AssertionError as e:
            print(f"{e}; last answer: {last[0]!r}", file=sys.stderr)
            return 1

        site = out / "site"
        site.mkdir()
        (site / "index.html").write_text(PAGE.replace("__GATEWAY__", f"http://{HOST}:{port}"))
        pages = http.server.ThreadingHTTPServer((HOST, page_port), functools.partial(PageHandler, directory=str(site)))
        pages.log_path = out / "page-server.log"
        pages.log_path.write_text("")
        threading.Thread(target=pages.serve_forever, daemon=True).start()

        # --virtual-time-budget: the DOM is dumped once the page's fetches
        # have finished (virtual time stands still while they are pending).
        dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              "--no-first-run", "--enable-logging=stderr", "--virtual-time-budget=20000", "--dump-dom",
                              f"{page_origin}/index.html"], capture_output=True, text=True, timeout=120)
        (out / "dom.html").write_text(dom.stdout)
        (out / "chromium.log").write_text(dom.stderr)
        return 0
    finally:
        if pages is not None:
            pages.shutdown()
        group.stop_all()


if __name__ == "__main__":
    sys.exit(main())
