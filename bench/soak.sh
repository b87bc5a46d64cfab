#!/usr/bin/env bash
# Builds the release binaries, then soaks the gateway (see bench/soak.py):
# N minutes (--minutes, default 10) of unary and streaming load over TLS
# with reloads, certificate rotations and replica restarts. Not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release
python3 -m pip install -q -r Tests/integration/requirements.txt
exec python3 bench/soak.py --bin-dir "$(swift build -c release --show-bin-path)" "$@"
