#!/usr/bin/env bash
# Builds the release binaries, then measures what metrics, tracing and the
# access log cost per RPC (see bench/observability_bench.py).
# Needs: h2load and nghttp (apt: nghttp2-client).
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release
exec python3 bench/observability_bench.py --bin-dir "$(swift build -c release --show-bin-path)" "$@"
