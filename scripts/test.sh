#!/usr/bin/env bash
# Sets up and runs every test: Swift unit tests, then the integration suite
# against the real gateway binary, sample replicas, grpcio, grpcurl and h2load.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build --build-tests
swift test --skip-build
swift build -c release
export MESHGATE_BIN_DIR="$(swift build -c release --show-bin-path)"
# -rsx: every skip and every expected failure prints its reason (only the
# legitimately optional skips remain).
python3 -m pytest -q -rsx Tests/integration "$@"
