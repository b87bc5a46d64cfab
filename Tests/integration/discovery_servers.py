"""Real discovery servers for the tests, on 127.0.0.1 only, with their data
in a folder the caller gives: an etcd v3 member (Debian `etcd-server`,
driven with the real `etcdctl`) and dnsmasq (Debian `dnsmasq-base`) serving
A/AAAA records from a hosts file and SRV records from its command line.

Both run under a meshkit ProcessGroup, so they log to its log dir, show up
in the failure report and stop with the group. `dns_query` is a tiny stdlib
DNS client for checking dnsmasq itself; `python3 discovery_servers.py` runs
a self-test of this machine's servers.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Optional, Union

from meshkit import HOST, Proc, ProcessGroup, free_port, wait_until

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
DNSMASQ = "/usr/sbin/dnsmasq"
READY_TIMEOUT_S = 15.0  # etcd: port open -> `endpoint health` passes
CTL_TIMEOUT_S = 10.0  # one etcdctl run, hard limit (its own limits are 2 s dial + 5 s command)
RELOAD_TIMEOUT_S = 5.0  # dnsmasq: SIGHUP or start -> hosts file read

SrvRecord = tuple[str, str, int, int, int]  # (service name, target, port, priority, weight)


def _etcd_env() -> dict[str, str]:
    """Our environment without ETCD_*/ETCDCTL_* variables (etcd and etcdctl
    take flags from them too, and a stray one would clash with ours), and
    with the v3 API."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    env["ETCDCTL_API"] = "3"
    return env


class EtcdServer:
    """One etcd member. Its ports and data dir stay the same across
    stop()/kill() and start(), so a restart resumes the same store (keys,
    revisions, leases; etcd renews leases to their full TTL when the member
    becomes leader again, so leased keys outlive an outage)."""

    def __init__(self, work_dir: Path, group: ProcessGroup, pki: Optional[Path] = None):
        """With `pki` (a scripts/dev-certs.sh folder: ca.pem, server.pem/key,
        client.pem/key), clients must speak TLS and present a certificate
        signed by its CA (mutual TLS); peers stay plaintext."""
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.work_dir / "etcd-data"
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a new server starts with an empty store
        self.group = group
        self.pki = Path(pki) if pki else None
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: Optional[Proc] = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        """host:port, as Meshgate's etcd config and `etcdctl --endpoints` take it."""
        return f"{HOST}:{self.client_port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def start(self) -> None:
        """Runs etcd and waits until `etcdctl endpoint health` passes (a
        leader is elected and a read goes through raft).

        The first start bootstraps a one-member cluster. On a restart the
        data dir already holds the member: etcd then ignores the --initial-*
        flags ("server has been already initialized"); we pass
        `--initial-cluster-state existing` anyway to say what happens."""
        if self.running():
            raise RuntimeError(f"etcd on {self.endpoint} is already running")
        self.starts += 1
        scheme = "https" if self.pki else "http"
        client = f"{scheme}://{self.endpoint}"
        peer = f"http://{HOST}:{self.peer_port}"
        state = "existing" if (self.data_dir / "member").is_dir() else "new"
        argv = [ETCD, "--name", "m1", "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"m1={peer}", "--initial-cluster-state", state,
                "--initial-cluster-token", f"meshgate-test-{self.client_port}",
                # a quick first election; min lease TTL stays below 1 s
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--logger", "zap", "--log-outputs", "stderr"]
        if self.pki:
            argv += ["--cert-file", str(self.pki / "server.pem"), "--key-file", str(self.pki / "server.key"),
                     "--trusted-ca-file", str(self.pki / "ca.pem"), "--client-cert-auth"]
        self.proc = self.group.start(f"etcd-{self.client_port}-{self.starts}", argv,
                                     port=self.client_port, env=_etcd_env())
        try:
            wait_until(self._healthy, timeout=READY_TIMEOUT_S, interval=0.2,
                       message=f"etcd on {self.endpoint} to be healthy")
        except AssertionError as e:
            self.proc.stop()
            raise AssertionError(f"{e}\n{self.proc.describe()}") from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after meshkit's grace period."""
        if self.proc:
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        """SIGKILL: a crash; the data dir keeps whatever etcd had synced."""
        if self.proc:
            self.proc.popen.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    # -- etcdctl ------------------------------------------------------------

    def _ctl_argv(self, *args: str, command_timeout: str = "5s") -> list[str]:
        tls = ["--cacert", str(self.pki / "ca.pem"), "--cert", str(self.pki / "client.pem"),
               "--key", str(self.pki / "client.key")] if self.pki else []
        return [ETCDCTL, "--endpoints", self.endpoint, "--dial-timeout", "2s",
                "--command-timeout", command_timeout, *tls, *args]

    def _healthy(self) -> bool:
        try:
            result = subprocess.run(self._ctl_argv("endpoint", "health", command_timeout="2s"),
                                    capture_output=True, text=True, timeout=CTL_TIMEOUT_S, env=_etcd_env())
        except subprocess.TimeoutExpired:
            return False
        return result.returncode == 0

    def ctl(self, *args: str, stdin: Optional[str] = None) -> str:
        """Runs `etcdctl <args>` against this server; its stdout. Raises
        RuntimeError (with etcdctl's stderr) when it fails or hangs."""
        argv = self._ctl_argv(*args)
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=CTL_TIMEOUT_S, env=_etcd_env(), input=stdin)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"etcdctl {' '.join(args)}: no answer within {CTL_TIMEOUT_S:.0f}s") from None
        if result.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)} exited with {result.returncode}: "
                               f"{result.stderr.strip()}")
        return result.stdout

    def put(self, key: str, value: str, lease: Optional[str] = None) -> None:
        """Sets `key`; with `lease` (an id from lease_grant) it goes when the lease does."""
        lease_args = [f"--lease={lease}"] if lease else []
        if len(value) > 64 * 1024:
            # One argument may hold at most 128 KiB (MAX_ARG_STRLEN):
            # etcdctl reads a value it is not given from stdin.
            self.ctl("put", *lease_args, "--", key, stdin=value)
        else:
            self.ctl("put", *lease_args, "--", key, value)  # `--`: values may start with '-'

    def delete(self, key: str) -> int:
        """Deletes `key`; how many keys went (0 or 1)."""
        return int(self.ctl("del", "--", key).strip() or 0)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """Every key under `prefix` with its value (JSON output: values may hold newlines)."""
        doc = json.loads(self.ctl("get", "--prefix", "-w", "json", "--", prefix))
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in doc.get("kvs", [])}  # an empty value has no "value" field

    # -- etcd's JSON gateway (same port): many keys or large values fast ----

    def _gateway(self, path: str, body: dict) -> dict:
        """One call to etcd's gRPC JSON gateway on the client port (plaintext
        servers only). etcdctl starts a process per call, too slow for the
        thousands of keys some tests write."""
        if self.pki:
            raise RuntimeError("the JSON gateway helpers speak plaintext only")
        request = urllib.request.Request(f"http://{self.endpoint}{path}", data=json.dumps(body).encode(), method="POST",
                                         headers={"content-type": "application/json"})
        with urllib.request.urlopen(request, timeout=CTL_TIMEOUT_S) as response:
            return json.loads(response.read())

    @staticmethod
    def _b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    def put_fast(self, key: str, value: str) -> None:
        """Sets `key` through the JSON gateway (values up to etcd's 1.5 MiB request limit)."""
        self._gateway("/v3/kv/put", {"key": self._b64(key), "value": self._b64(value)})

    def delete_fast(self, key: str) -> int:
        """Deletes `key` through the JSON gateway; how many keys went."""
        return int(self._gateway("/v3/kv/deleterange", {"key": self._b64(key)}).get("deleted", 0))

    def metric(self, name: str, **labels: str) -> float:
        """The value of one series of etcd's Prometheus metrics (on the
        client port), e.g. metric("grpc_server_started_total", grpc_method="Range")
        or metric("etcd_network_client_grpc_sent_bytes_total"); labels not
        given match anything, several matching series are summed."""
        with urllib.request.urlopen(f"http://{self.endpoint}/metrics", timeout=CTL_TIMEOUT_S) as response:
            text = response.read().decode()
        total, found = 0.0, False
        for line in text.splitlines():
            match = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
            if not match or match.group(1) != name:
                continue
            series = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            if all(series.get(k) == v for k, v in labels.items()):
                total, found = total + float(match.group(3)), True
        if not found:
            raise AssertionError(f"no series {name}{labels} in etcd's metrics")
        return total

    def lease_grant(self, ttl: int) -> str:
        """A new lease of `ttl` seconds. Its id as etcdctl prints and takes it:
        lowercase hex without 0x, e.g. "694d7a6a2b5c1e04"; int(id, 16) is the
        int64 lease ID of the etcd API."""
        out = self.ctl("lease", "grant", str(ttl))  # "lease 694d7a6a2b5c1e04 granted with TTL(5s)"
        match = re.search(r"lease ([0-9a-f]+) granted", out)
        if not match:
            raise RuntimeError(f"unexpected `etcdctl lease grant` output: {out!r}")
        return match.group(1)


class Dnsmasq:
    """dnsmasq on 127.0.0.1 at a free high port (UDP and TCP), answering only
    from its own hosts file and SRV options, with TTL `ttl` seconds.

    It is authoritative for every name (`--local=/#/`): a name it does not
    know is NXDOMAIN, a known name without the asked type is NODATA, as from
    a real DNS server (without it, dnsmasq with no upstream says REFUSED to
    both). The port stays the same across stop()/start() and set_srv()."""

    def __init__(self, work_dir: Path, group: ProcessGroup, ttl: int = 1):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.group = group
        self.ttl = ttl
        self.port = free_port()
        self.hosts_file = self.work_dir / "hosts"
        self.hosts_file.write_text("")
        self.srv: list[SrvRecord] = []
        self.proc: Optional[Proc] = None
        self.starts = 0

    @property
    def address(self) -> str:
        """host:port, as Meshgate's `resolver` setting takes it."""
        return f"{HOST}:{self.port}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def set_hosts(self, mapping: dict[str, list[str]]) -> None:
        """Replaces the hosts file (name -> its IPv4/IPv6 addresses). A running
        dnsmasq re-reads it on SIGHUP; this returns once dnsmasq has logged
        reading it, so the next query sees the new records."""
        lines = [f"{ip} {name}" for name, ips in mapping.items() for ip in ips]
        tmp = self.hosts_file.with_name(self.hosts_file.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        os.replace(tmp, self.hosts_file)  # dnsmasq never reads a half-written file
        if self.running():
            before = self._hosts_reads()
            self.proc.send_signal(signal.SIGHUP)
            self._wait_hosts_read(before, "SIGHUP")

    def set_srv(self, records: list[SrvRecord]) -> None:
        """Replaces the SRV records: (service name such as "_grpc._tcp.mesh.test",
        target, port, priority, weight). They are --srv-host options, which
        SIGHUP does not re-read, so a running dnsmasq is restarted on the same
        port (queries in the gap get no answer)."""
        self.srv = list(records)
        if self.running():
            self.stop()
            self.start()

    def start(self) -> None:
        """Runs dnsmasq in the foreground and waits until it has read the hosts file."""
        if self.running():
            raise RuntimeError(f"dnsmasq on {self.address} is already running")
        self.starts += 1
        argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null",  # no /etc/dnsmasq.conf
                "--no-resolv", "--no-hosts", "--no-poll", "--local=/#/",
                f"--port={self.port}", f"--listen-address={HOST}", "--bind-interfaces",
                f"--addn-hosts={self.hosts_file}", f"--local-ttl={self.ttl}",
                "--log-queries", "--log-facility=-",
                # as root it would switch to `nobody`, which cannot read a 0700 pytest tmp dir
                "--user=root", "--group=root",
                f"--pid-file={self.work_dir / 'dnsmasq.pid'}"]  # not the shared /run/dnsmasq.pid
        argv += [f"--srv-host={name},{target},{port},{priority},{weight}"
                 for name, target, port, priority, weight in self.srv]
        self.proc = self.group.start(f"dnsmasq-{self.port}-{self.starts}", argv, port=self.port)
        self._wait_hosts_read(0, "start")

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None

    def _hosts_reads(self) -> int:
        """How often this dnsmasq has logged "read <hosts file> - N names"."""
        return self.proc.log_text().count(f"read {self.hosts_file} - ") if self.proc else 0

    def _wait_hosts_read(self, before: int, after: str) -> None:
        try:
            wait_until(lambda: self._hosts_reads() > before, timeout=RELOAD_TIMEOUT_S,
                       message=f"dnsmasq to read {self.hosts_file} after {after}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.proc.describe()}") from None


# --------------------------------------------------------------------------
# A minimal DNS client, to check dnsmasq without dig or a DNS library


_QTYPES = {"A": 1, "AAAA": 28, "SRV": 33}
_QTYPE_NAMES = {number: name for name, number in _QTYPES.items()}
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _read_name(msg: bytes, offset: int) -> tuple[str, int]:
    """The (possibly compressed) name at `offset`, and the offset after it."""
    labels: list[str] = []
    resume: Optional[int] = None
    for _ in range(128):  # bounds a pointer loop
        length = msg[offset]
        if length & 0xC0 == 0xC0:
            resume = offset + 2 if resume is None else resume
            offset = ((length & 0x3F) << 8) | msg[offset + 1]
        elif length == 0:
            return ".".join(labels), offset + 1 if resume is None else resume
        else:
            labels.append(msg[offset + 1:offset + 1 + length].decode("ascii"))
            offset += 1 + length
    raise ValueError("DNS name with a compression loop")


def dns_answers(port: int, name: str, qtype: str, timeout: float = 2.0,
                ) -> list[tuple[str, int, Union[str, tuple[int, int, int, str], bytes]]]:
    """One UDP query to 127.0.0.1:`port`: the answer section as (type, ttl,
    value). Values: A/AAAA an address string, SRV (priority, weight, port,
    target), other types the raw rdata. NXDOMAIN gives []; another error
    rcode, a truncated reply or no reply raise."""
    qid = int.from_bytes(os.urandom(2), "big")
    question = b"".join(bytes([len(label)]) + label.encode("ascii") for label in name.rstrip(".").split("."))
    query = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question + b"\0" + struct.pack("!HH", _QTYPES[qtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((HOST, port))
        sock.send(query)
        deadline = time.monotonic() + timeout
        while True:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            msg = sock.recv(65535)  # socket.timeout (an OSError) when nothing comes
            if len(msg) >= 12 and struct.unpack("!H", msg[:2])[0] == qid:
                break
    _, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", msg[:12])
    rcode = flags & 0x000F
    if flags & 0x0200:
        raise RuntimeError(f"truncated DNS reply for {name} {qtype}")
    if rcode == 3:
        return []
    if rcode != 0:
        raise RuntimeError(f"DNS {_RCODES.get(rcode, rcode)} for {name} {qtype}")
    offset = 12
    for _ in range(qdcount):
        offset = _read_name(msg, offset)[1] + 4
    answers: list[tuple[str, int, Union[str, tuple[int, int, int, str], bytes]]] = []
    for _ in range(ancount):
        offset = _read_name(msg, offset)[1]
        rtype, _, ttl, rdlength = struct.unpack("!HHIH", msg[offset:offset + 10])
        offset += 10
        rdata = msg[offset:offset + rdlength]
        value: Union[str, tuple[int, int, int, str], bytes] = rdata
        if rtype == 1:
            value = socket.inet_ntop(socket.AF_INET, rdata)
        elif rtype == 28:
            value = socket.inet_ntop(socket.AF_INET6, rdata)
        elif rtype == 33:
            priority, weight, srv_port = struct.unpack("!HHH", rdata[:6])
            value = (priority, weight, srv_port, _read_name(msg, offset + 6)[0])
        answers.append((_QTYPE_NAMES.get(rtype, str(rtype)), ttl, value))
        offset += rdlength
    return answers


def dns_query(port: int, name: str, qtype: str) -> list:
    """The `qtype` ("A", "AAAA" or "SRV") records of `name` from 127.0.0.1:`port`:
    addresses, or SRV (priority, weight, port, target) tuples. [] for NXDOMAIN
    and NODATA."""
    return [value for rtype, _, value in dns_answers(port, name, qtype) if rtype == qtype]


# --------------------------------------------------------------------------
# Self-test of this machine's servers: python3 discovery_servers.py


def _self_test() -> None:
    import tempfile

    def check(label: str, got: object, want: object) -> None:
        print(f"{'ok  ' if got == want else 'FAIL'} {label}: {got!r}")
        assert got == want, f"{label}: got {got!r}, want {want!r}"

    with tempfile.TemporaryDirectory(prefix="discovery-selftest-") as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            etcd = EtcdServer(work / "etcd", group)
            began = time.monotonic()
            etcd.start()
            print(f"etcd healthy on {etcd.endpoint} after {time.monotonic() - began:.2f}s")
            etcd.put("/t/a", "1")
            etcd.put("/t/b", "-2 {\"x\": 1}\nline 2")
            etcd.put("/u/c", "3")
            check("get_prefix /t/", etcd.get_prefix("/t/"), {"/t/a": "1", "/t/b": "-2 {\"x\": 1}\nline 2"})
            check("delete /t/b", etcd.delete("/t/b"), 1)
            check("after delete", etcd.get_prefix("/t/"), {"/t/a": "1"})
            lease = etcd.lease_grant(2)
            print(f"lease id {lease}")
            etcd.put("/t/leased", "x", lease=lease)
            check("leased key present", "/t/leased" in etcd.get_prefix("/t/"), True)
            granted = time.monotonic()
            wait_until(lambda: "/t/leased" not in etcd.get_prefix("/t/"), timeout=6, interval=0.2,
                       message="the leased key to expire")
            print(f"ok   leased key gone {time.monotonic() - granted:.1f}s after the grant")
            etcd.stop()
            began = time.monotonic()
            etcd.start()
            print(f"etcd restarted (stop/start) in {time.monotonic() - began:.2f}s")
            check("keys after restart", etcd.get_prefix("/"), {"/t/a": "1", "/u/c": "3"})
            etcd.kill()
            etcd.start()
            etcd.put("/t/after-kill", "y")
            check("keys after kill/start", sorted(etcd.get_prefix("/")), ["/t/a", "/t/after-kill", "/u/c"])
            etcd.stop()

            dns = Dnsmasq(work / "dnsmasq", group, ttl=1)
            dns.set_hosts({"mesh.test": ["127.0.0.1", "127.0.0.2"], "r1.mesh.test": ["127.0.0.1"]})
            dns.set_srv([("_grpc._tcp.mesh.test", "r1.mesh.test", 50061, 0, 1)])
            dns.start()
            print(f"dnsmasq on {dns.address} (udp+tcp)")
            check("A mesh.test", sorted(dns_query(dns.port, "mesh.test", "A")), ["127.0.0.1", "127.0.0.2"])
            check("A TTLs", {ttl for _, ttl, _ in dns_answers(dns.port, "mesh.test", "A")}, {1})
            check("AAAA mesh.test (NODATA)", dns_query(dns.port, "mesh.test", "AAAA"), [])
            check("A unknown.test (NXDOMAIN)", dns_query(dns.port, "unknown.test", "A"), [])
            check("SRV", dns_query(dns.port, "_grpc._tcp.mesh.test", "SRV"), [(0, 1, 50061, "r1.mesh.test")])
            print(f"     SRV answers with TTL: {dns_answers(dns.port, '_grpc._tcp.mesh.test', 'SRV')}")
            check("A r1.mesh.test", dns_query(dns.port, "r1.mesh.test", "A"), ["127.0.0.1"])
            pid = dns.proc.pid
            dns.set_hosts({"mesh.test": ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "r1.mesh.test": ["127.0.0.1"],
                           "r2.mesh.test": ["127.0.0.2", "::1"]})
            check("same process after SIGHUP", dns.proc.pid, pid)
            check("A mesh.test after set_hosts", sorted(dns_query(dns.port, "mesh.test", "A")),
                  ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
            check("AAAA r2.mesh.test", dns_query(dns.port, "r2.mesh.test", "AAAA"), ["::1"])
            port = dns.port
            dns.set_srv([("_grpc._tcp.mesh.test", "r1.mesh.test", 50061, 0, 1),
                         ("_grpc._tcp.mesh.test", "r2.mesh.test", 50062, 10, 3)])
            check("port after set_srv restart", dns.port, port)
            check("SRV after set_srv", sorted(dns_query(dns.port, "_grpc._tcp.mesh.test", "SRV")),
                  [(0, 1, 50061, "r1.mesh.test"), (10, 3, 50062, "r2.mesh.test")])
            check("hosts survive the restart", len(dns_query(dns.port, "mesh.test", "A")), 3)
            dns.stop()
            check("pid file removed at exit", (work / "dnsmasq" / "dnsmasq.pid").exists(), False)
            print("--- last lines of the dnsmasq log:")
            print("\n".join(group.procs[-1].log_text().splitlines()[-6:]))
        finally:
            group.stop_all()
    print("self-test passed")


if __name__ == "__main__":
    _self_test()
