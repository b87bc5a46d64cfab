#!/usr/bin/env bash
# Builds the release binaries, then benchmarks meshgate against nghttpx in
# front of the same two mesh-sample replicas (see bench/proxy_bench.py).
# Extra arguments go to proxy_bench.py, e.g.:  bench/run.sh -n 20000 --rounds 5
# Needs: h2load and nghttp (apt: nghttp2-client), nghttpx (apt: nghttp2-proxy).
set -euo pipefail
cd "$(dirname "$0")/.."

swift build -c release
bin_dir="$(swift build -c release --show-bin-path)"
mkdir -p bench/out
exec python3 bench/proxy_bench.py --bin-dir "$bin_dir" \
    --json "bench/out/proxy-bench-$(date +%Y%m%d-%H%M%S).json" "$@"
