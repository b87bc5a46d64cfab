#!/usr/bin/env bash
# Benchmarks meshgate (plain and with a filter chain), nghttpx and HAProxy in
# front of the same two mesh-sample replicas, beside h2load straight to one
# replica, and prints one row per target with the ratios to nghttpx (see
# bench/proxy_bench.py). Installs the Debian packages it needs if missing,
# then builds the release binaries (MESHGATE_BIN_DIR=DIR: use DIR's instead).
# Extra arguments go to proxy_bench.py, e.g.:  bench/run.sh -n 20000 --rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."

# h2load and nghttp, nghttpx, haproxy, perf (malloc and syscall counts),
# nm (the address of each allocator's malloc).
scripts/install-debian-packages.sh bench nghttp2-client nghttp2-proxy haproxy linux-perf binutils

if [[ -n "${MESHGATE_BIN_DIR:-}" ]]; then
  bin_dir="$MESHGATE_BIN_DIR"
else
  swift build -c release
  bin_dir="$(swift build -c release --show-bin-path)"
fi
mkdir -p bench/out
exec python3 bench/proxy_bench.py --bin-dir "$bin_dir" \
    --json "bench/out/proxy-bench-$(date +%Y%m%d-%H%M%S).json" "$@"
