"""Bad input: broken configs are refused with a located message (no crash),
a busy port stops `meshgate run`, and non-gRPC bytes against a running
gateway are answered or closed without hurting the next real call."""

from __future__ import annotations

import random
import re
import socket
import subprocess
from dataclasses import dataclass
from typing import Optional

import pytest

from conftest import REPO_ROOT
from meshkit import (
    HOST,
    free_port,
    h2_request,
    insecure_channel,
    parse_h2_frames,
    read_until_close,
)

CRASH_MARKERS = ("Fatal error", "Program crashed", "Current stack trace", "Stack dump",
                 "Backtrace", "Segmentation fault")

VALID = """\
listeners:
  - name: public
    address: 127.0.0.1:18080
    routes:
      - match: { service: mesh.v1.MeshService }
        cluster: mesh
clusters:
  - name: mesh
    endpoints:
      - address: 127.0.0.1:19001
      - address: 127.0.0.1:19002
        weight: 2
"""


@dataclass
class BrokenConfig:
    id: str
    text: str
    marker: str  # text on the line the error must point at
    field: Optional[str]  # dotted field path in the message (None: YAML syntax error)
    occurrence: int = 1  # which occurrence of `marker` is the bad one
    mentions: str = ""  # another fragment the message must contain

    def line(self) -> int:
        lines = self.text.splitlines()
        hits = [i + 1 for i, line in enumerate(lines) if self.marker in line]
        assert len(hits) >= self.occurrence, f"marker {self.marker!r} not in the config"
        return hits[self.occurrence - 1]


BROKEN = [
    BrokenConfig(
        "malformed-yaml",
        VALID.replace("    routes:\n", "   routes:\n"),
        marker="   routes:", field=None, mentions="YAML"),
    BrokenConfig(
        "unknown-key",
        VALID.replace("        cluster: mesh\n", "        cluster: mesh\n        clusterz: mesh\n"),
        marker="clusterz:", field="listeners[0].routes[0].clusterz", mentions="unknown key"),
    BrokenConfig(
        "address-as-list",
        VALID.replace("address: 127.0.0.1:18080", "address: [127.0.0.1, 18080]"),
        marker="address: [127.0.0.1, 18080]", field="listeners[0].address"),
    BrokenConfig(
        "weight-not-a-number",
        VALID.replace("weight: 2", 'weight: "abc"'),
        marker='weight: "abc"', field="clusters[0].endpoints[1].weight", mentions="abc"),
    BrokenConfig(
        "duplicate-listener",
        VALID.replace("clusters:\n", "  - name: public\n    address: 127.0.0.1:18081\n"
                                     "    routes: []\nclusters:\n"),
        marker="- name: public", occurrence=2, field="listeners[1].name", mentions="public"),
    BrokenConfig(
        "duplicate-cluster",
        VALID + "  - name: mesh\n    endpoints:\n      - address: 127.0.0.1:19003\n",
        marker="- name: mesh", occurrence=2, field="clusters[1].name", mentions="mesh"),
    BrokenConfig(
        "unknown-cluster",
        VALID.replace("        cluster: mesh\n", "        cluster: nope\n"),
        marker="cluster: nope", field="listeners[0].routes[0].cluster", mentions="nope"),
    BrokenConfig(
        "port-out-of-range",
        VALID.replace("127.0.0.1:18080", "127.0.0.1:99999"),
        marker="127.0.0.1:99999", field="listeners[0].address", mentions="99999"),
    BrokenConfig(
        "metadata-too-many-names",
        VALID.replace("      - address: 127.0.0.1:19001\n", "      - address: 127.0.0.1:19001\n        metadata: {"
                      + ", ".join(f"k{i}: v" for i in range(33)) + "}\n"),
        marker="metadata: {k0", field="clusters[0].endpoints[0].metadata", mentions="33 names, over the limit of 32 per endpoint"),
    BrokenConfig(
        "metadata-too-many-bytes",
        VALID.replace("        weight: 2\n", "        weight: 2\n        metadata:\n          note: " + "n" * 4100 + "\n"),
        marker="note: nnn", field="clusters[0].endpoints[1].metadata",
        mentions="names and values of 4104 bytes, over the limit of 4096 bytes per endpoint"),
    BrokenConfig(
        "address-without-port",
        VALID.replace("address: 127.0.0.1:19001", "address: nohost"),
        marker="address: nohost", field="clusters[0].endpoints[0].address", mentions="nohost"),
]


def run_meshgate(bins, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """Runs meshgate to completion; fails the test if it is still running after `timeout`."""
    proc = subprocess.Popen([str(bins.meshgate), *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        pytest.fail(f"`meshgate {' '.join(args)}` still running after {timeout}s\n{err[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_clean_failure(result: subprocess.CompletedProcess) -> None:
    """A non-zero exit chosen by meshgate: not a signal, not a crash report."""
    assert result.returncode != 0, f"expected a failure, got exit 0\n{result.stderr}"
    assert 0 < result.returncode < 128, f"killed/crashed: exit {result.returncode}\n{result.stderr}"
    for marker in CRASH_MARKERS:
        assert marker not in result.stderr, f"crash output ({marker!r}):\n{result.stderr}"


# --------------------------------------------------------------------------
# meshgate validate / run


def test_valid_config_passes_validation(bins, tmp_path):
    """The base config the broken ones are made from is valid (exit 0)."""
    path = tmp_path / "valid.yaml"
    path.write_text(VALID)
    result = run_meshgate(bins, "validate", "--config", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", BROKEN, ids=[c.id for c in BROKEN])
def test_validate_reports_file_line_and_field(bins, tmp_path, case):
    """`meshgate validate` refuses the config with FILE:LINE:COLUMN: FIELD:
    pointing at the offending line, without crashing."""
    path = tmp_path / f"{case.id}.yaml"
    path.write_text(case.text)
    result = run_meshgate(bins, "validate", "--config", str(path))
    assert_clean_failure(result)
    where = re.escape(str(path)) + rf":{case.line()}:\d+: "
    if case.field is not None:
        where += re.escape(case.field) + ":"
    assert re.search(where, result.stderr), (
        f"expected /{where}/ in stderr:\n{result.stderr}")
    assert case.mentions in result.stderr


def test_run_on_busy_port_fails_naming_the_address(bins, tmp_path):
    """`meshgate run` with a listener on a port someone else holds exits
    non-zero and says which address it could not bind."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind((HOST, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        config = VALID.replace("127.0.0.1:18080", f"127.0.0.1:{port}").replace(
            "127.0.0.1:19001", f"127.0.0.1:{free_port()}").replace(
            "127.0.0.1:19002", f"127.0.0.1:{free_port()}")
        path = tmp_path / "busy.yaml"
        path.write_text(config)
        result = run_meshgate(bins, "run", "--config", str(path))
    assert_clean_failure(result)
    assert f"127.0.0.1:{port}" in result.stderr, result.stderr


# --------------------------------------------------------------------------
# Non-gRPC bytes against a running gateway


def assert_gateway_still_serves(mesh) -> None:
    """A normal unary call on a new connection still succeeds."""
    with insecure_channel(mesh.port) as channel:
        stub = mesh.pb2_grpc.MeshServiceStub(channel)
        response = stub.Process(mesh.pb2.ProcessRequest(request_id="after", data="ok"), timeout=10)
    assert response.result == "processed: ok"


def test_http1_request_gets_505_and_a_close(mesh):
    """An HTTP/1.1 request on the h2c port gets an HTTP/1.1 505 (HTTP
    Version Not Supported) that says the port speaks HTTP/2, then the
    connection closes; other clients are unaffected."""
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: meshgate\r\nConnection: close\r\n\r\n")
        data, closed = read_until_close(sock, timeout=5)
    assert data.startswith(b"HTTP/1.1 505 HTTP Version Not Supported\r\n"), data[:200]
    assert b"HTTP/2" in data, data[:300]
    assert closed, "the connection stayed open after the 505"
    assert_gateway_still_serves(mesh)


def test_random_garbage_gets_closed(mesh):
    """4 KiB of random bytes make the gateway close the connection (or send a
    GOAWAY) within 5 s."""
    garbage = random.Random(1234).randbytes(4096)
    with socket.create_connection((HOST, mesh.port), timeout=5) as sock:
        try:
            sock.sendall(garbage)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed while we were still writing: that is a close too
        data, closed = read_until_close(sock, timeout=5)
    frames = parse_h2_frames(data) or []
    assert closed or any(f[0] == "GOAWAY" for f in frames), (
        f"no close and no GOAWAY within 5 s; got {data[:200]!r}")
    assert_gateway_still_serves(mesh)


def test_non_grpc_content_type_gets_415(mesh):
    """An HTTP/2 POST with content-type text/plain to a gRPC path gets
    :status 415 with a grpc-status, not a 200 with data."""
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", mesh.address),
               (":path", "/mesh.v1.MeshService/Process"), ("content-type", "text/plain"),
               ("te", "trailers")]
    response = h2_request(mesh.port, headers, b"hello")
    assert response.blocks, f"no response headers (stream ended by {response.ended})"
    assert response.blocks[0].get(":status") == "415", response.blocks
    assert response.header("grpc-status") is not None, response.blocks
    assert_gateway_still_serves(mesh)


def test_validate_on_mutated_configs_exits_0_or_2_with_a_located_message(bins, tmp_path):
    """`meshgate validate` on 120 mutated copies of the repository's configs
    (seeded, so a failure replays): it never crashes, exits 0 or 2, and a
    refusal names the file with a line and column. (The loader alone gets
    thousands of cases in the unit tests: ConfigFuzzTests.)"""
    import random
    seeds = [p for p in sorted((REPO_ROOT / "config").rglob("*.yaml")) if p.name != "endpoints.yaml"]
    tokens = ["-1", "0", "99999999999999999999", "[]", "{}", "~", "&a x", "*a", "!!binary AAAA", "10x", "-5s",
              "0.0.0.0:99999", "a:b:c", "{ a: 1", "[1, 2", "a: b: c", "|", "\"unterminated", "ünïcode ✓", "x" * 300]
    rng = random.Random(20261202)
    codes = {0: 0, 2: 0}
    for case in range(120):
        seed = seeds[case % len(seeds)]
        lines = seed.read_text().split("\n")
        for _ in range(rng.randint(1, 3)):
            i = rng.randrange(len(lines))
            kind = rng.randrange(5)
            if kind == 0:
                del lines[i]
            elif kind == 1:
                lines.insert(i, lines[i])
            elif kind == 2 and ":" in lines[i]:
                lines[i] = lines[i][:lines[i].index(":") + 1] + " " + rng.choice(tokens)
            elif kind == 3:
                lines[i] = "  " + lines[i]
            else:
                lines[i] = lines[i][:rng.randint(0, len(lines[i]))]
        path = tmp_path / f"case{case}.yaml"
        path.write_text("\n".join(lines))
        result = subprocess.run([str(bins.meshgate), "validate", "--config", str(path)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode in (0, 2), (case, result.returncode, result.stderr[-2000:])
        assert "Fatal error" not in result.stderr and "Stack dump" not in result.stderr, (case, result.stderr[-2000:])
        if result.returncode == 2:
            assert re.search(rf"{re.escape(str(path))}:\d+:\d+: ", result.stderr) or "is empty" in result.stderr, \
                (case, result.stderr, path.read_text())
        codes[result.returncode] += 1
    assert codes[0] > 5 and codes[2] > 20, codes


# --------------------------------------------------------------------------
# Input limits of the config (docs/limits.md, "Documents and discovery")


def test_deeply_nested_config_is_refused_at_its_line_not_a_crash(bins, tmp_path):
    """A config whose value is a 100,000-deep flow sequence `[[[…]]]`
    (the parser used to build the tree recursively and die with SIGSEGV)
    is refused at the line and column of the first list past 64 levels,
    naming the limit."""
    deep = "[" * 100_000 + "]" * 100_000
    text = VALID.replace("      - address: 127.0.0.1:19001\n",
                         f"      - address: 127.0.0.1:19001\n        metadata: {{ deep: {deep} }}\n")
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    result = run_meshgate(bins, "validate", "--config", str(path))
    assert_clean_failure(result)
    line = text.splitlines().index(f"        metadata: {{ deep: {deep} }}") + 1
    # clusters, the list, the cluster, endpoints, the endpoint, metadata:
    # six levels, so the 59th "[" is the 65th level.
    column = len("        metadata: { deep: ") + 59
    where = re.escape(str(path)) + rf":{line}:{column}: lists and mappings nested deeper than 64 levels"
    assert re.search(where, result.stderr), result.stderr[-2000:]


def test_config_file_over_the_size_limit_is_refused(bins, tmp_path):
    """A config file of more than 8 MiB is refused before it is read,
    naming its size and the limit."""
    path = tmp_path / "huge.yaml"
    path.write_text(VALID + "#" * (8 * 1024 * 1024) + "\n")
    result = run_meshgate(bins, "validate", "--config", str(path))
    assert_clean_failure(result)
    assert str(path) in result.stderr and "over the limit of 8388608 bytes" in result.stderr, result.stderr[-2000:]
