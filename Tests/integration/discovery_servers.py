"""Real discovery servers for the tests, on loopback, with their data in a
folder of the test's: an etcd v3 server (Debian `etcd-server`, driven with
the real `etcdctl`) and dnsmasq (Debian `dnsmasq-base`) serving A records
from a hosts file and SRV records from its command line."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Optional

from meshkit import HOST, Proc, ProcessGroup, free_port, wait_until

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
DNSMASQ = "/usr/sbin/dnsmasq"


class EtcdServer:
    """One etcd member. Ports and data dir stay the same across stop/start,
    so a restart resumes the same store (keys, revisions, leases)."""

    def __init__(self, work_dir: Path, group: ProcessGroup, pki: Optional[Path] = None):
        """With `pki` (a scripts/dev-certs.sh folder), clients must speak TLS
        and present a certificate signed by its CA (mutual TLS)."""
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.group = group
        self.pki = pki
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: Optional[Proc] = None
        self.starts = 0

    @property
    def endpoint(self) -> str:
        return f"{HOST}:{self.client_port}"

    def start(self) -> None:
        self.starts += 1
        client = f"{'https' if self.pki else 'http'}://{self.endpoint}"
        peer = f"http://{HOST}:{self.peer_port}"
        argv = [ETCD, "--name", "m1", "--data-dir", str(self.work_dir / "data"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"m1={peer}", "--initial-cluster-state", "new",
                "--heartbeat-interval", "50", "--election-timeout", "500"]
        if self.pki:
            argv += ["--cert-file", str(self.pki / "server.pem"), "--key-file", str(self.pki / "server.key"),
                     "--trusted-ca-file", str(self.pki / "ca.pem"), "--client-cert-auth"]
        self.proc = self.group.start(f"etcd-{self.client_port}-{self.starts}", argv, port=self.client_port)
        wait_until(self._healthy, timeout=20, interval=0.2, message="etcd to become healthy")

    def _healthy(self) -> bool:
        result = self._ctl("endpoint", "health", check=False)
        return result.returncode == 0

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None

    def kill(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def _ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, ETCDCTL_API="3")
        tls = ["--cacert", str(self.pki / "ca.pem"), "--cert", str(self.pki / "client.pem"),
               "--key", str(self.pki / "client.key")] if self.pki else []
        return subprocess.run([ETCDCTL, "--endpoints", self.endpoint, "--dial-timeout", "2s",
                               "--command-timeout", "5s", *tls, *args],
                              capture_output=True, text=True, timeout=15, env=env, check=check)

    def put(self, key: str, value: str, lease: Optional[str] = None) -> None:
        self._ctl("put", key, value, *(["--lease", lease] if lease else []))

    def delete(self, key: str) -> None:
        self._ctl("del", key)

    def get_prefix(self, prefix: str) -> dict[str, str]:
        lines = self._ctl("get", prefix, "--prefix").stdout.splitlines()
        return dict(zip(lines[0::2], lines[1::2]))

    def lease_grant(self, ttl: int) -> str:
        """A new lease; its id in hex, as etcdctl prints and takes it."""
        out = self._ctl("lease", "grant", str(ttl)).stdout  # "lease 694d7a6a2b5c1e04 granted with TTL(5s)"
        return out.split()[1]


class Dnsmasq:
    """dnsmasq on 127.0.0.1 at a high port (UDP and TCP), answering only
    from its own hosts file and SRV options (no upstream, no /etc/hosts),
    with answers' TTL set to `ttl` seconds."""

    def __init__(self, work_dir: Path, group: ProcessGroup, ttl: int = 1):
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.group = group
        self.ttl = ttl
        self.port = free_port()
        self.hosts_file = self.work_dir / "hosts"
        self.hosts_file.write_text("")
        self.srv: list[tuple[str, str, int, int, int]] = []
        self.proc: Optional[Proc] = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def set_hosts(self, mapping: dict[str, list[str]]) -> None:
        """Rewrites the hosts file (name -> addresses); a running dnsmasq
        re-reads it on SIGHUP."""
        lines = [f"{ip} {name}" for name, ips in mapping.items() for ip in ips]
        tmp = self.hosts_file.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.hosts_file)
        if self.proc and self.proc.alive:
            self.proc.send_signal(signal.SIGHUP)

    def set_srv(self, records: list[tuple[str, str, int, int, int]]) -> None:
        """(service name, target, port, priority, weight) records. They are
        command-line options, which SIGHUP does not re-read: a running
        dnsmasq restarts (same port)."""
        self.srv = list(records)
        if self.proc:
            self.stop()
            self.start()

    def start(self) -> None:
        self.starts += 1
        argv = [DNSMASQ, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--no-poll",
                f"--port={self.port}", f"--listen-address={HOST}", "--bind-interfaces",
                f"--addn-hosts={self.hosts_file}", f"--local-ttl={self.ttl}", "--log-queries", "--log-facility=-",
                "--user=root", "--group=root", f"--pid-file={self.work_dir / 'dnsmasq.pid'}"]
        argv += [f"--srv-host={name},{target},{port},{priority},{weight}"
                 for name, target, port, priority, weight in self.srv]
        self.proc = self.group.start(f"dnsmasq-{self.port}-{self.starts}", argv, port=self.port)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None
