#!/usr/bin/env bash
# Builds the release binaries, then benchmarks TLS through meshgate and nghttpx
# (see bench/tls_bench.py). Extra arguments go to tls_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release
exec python3 bench/tls_bench.py --bin-dir "$(swift build -c release --show-bin-path)" "$@"
