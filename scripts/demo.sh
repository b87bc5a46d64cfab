#!/usr/bin/env bash
# The main job: build Meshgate, make a development PKI (config/certs, its CA
# key in config/ca) if there is none, start three sample replicas serving mutual TLS (50061-50063) and the
# gateway on config/mesh.yaml (port 50051, mTLS on both sides), print commands
# to try, and run until Ctrl-C.
#   scripts/demo.sh               mutual TLS (the default)
#   scripts/demo.sh --plaintext   no TLS anywhere (config/examples/plaintext.yaml),
#                                 for the product description's -plaintext commands
# MESHGATE_BIN_DIR=DIR uses the binaries in DIR instead of building.
set -euo pipefail
cd "$(dirname "$0")/.."
plaintext=false
case "${1:-}" in
  --plaintext) plaintext=true ;;
  "") ;;
  *) echo "usage: scripts/demo.sh [--plaintext]" >&2; exit 2 ;;
esac
scripts/setup.sh --run
if [[ -n "${MESHGATE_BIN_DIR:-}" ]]; then
  bin="$MESHGATE_BIN_DIR"
else
  swift build -c release --product meshgate
  swift build -c release --product mesh-sample
  bin=$(swift build -c release --show-bin-path)
fi
if $plaintext; then
  config=config/examples/plaintext.yaml
  tls=()
else
  config=config/mesh.yaml
  # The CA key stays in config/ca; config/certs gets one identity per
  # workload. An older layout (ca.key in config/certs, no replica.pem) is remade.
  if [ ! -f config/certs/replica.pem ] || [ -f config/certs/ca.key ]; then
    scripts/dev-certs.sh --ca-dir config/ca config/certs
  fi
  tls=(--tls-cert config/certs/replica.pem --tls-key config/certs/replica.key --tls-ca config/certs/ca.pem)
fi

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT
trap 'exit 0' INT TERM

for i in 1 2 3; do
  "$bin/mesh-sample" --port "5006$i" --replica-id "replica-$i" "${tls[@]}" &
  pids+=($!)
done
"$bin/meshgate" validate --config "$config"
"$bin/meshgate" run --config "$config" &
pids+=($!)
sleep 1

if $plaintext; then
  cat <<'TRY'

Meshgate is listening on localhost:50051 (plaintext) in front of replica-1..3. Try:

  grpcurl -plaintext localhost:50051 list
  grpcurl -plaintext localhost:50051 describe mesh.v1.MeshService
  grpcurl -plaintext -d '{"request_id":"req-1","data":"hello"}' localhost:50051 mesh.v1.MeshService/Process
  grpc_health_probe -addr=localhost:50051          # or: meshgate probe --addr localhost:50051
TRY
else
  cat <<'TRY'

Meshgate is listening on localhost:50051 (mutual TLS) in front of replica-1..3. Try:

  alias grpcurl='grpcurl -cacert config/certs/ca.pem -cert config/certs/client.pem -key config/certs/client.key'
  grpcurl localhost:50051 list
  grpcurl localhost:50051 describe mesh.v1.MeshService
  grpcurl -d '{"request_id":"req-1","data":"hello"}' localhost:50051 mesh.v1.MeshService/Process
  grpcurl -d '{"stream_id":"s1","event_types":["a","b"],"count":5}' localhost:50051 mesh.v1.MeshService/StreamEvents
  grpcurl -d '{"data":"slow"}' -H 'x-mesh-delay-ms: 3000' -max-time 1 localhost:50051 mesh.v1.MeshService/Process
TRY
fi
cat <<'TRY'

Live dashboard: http://localhost:8080/dashboard   metrics: http://localhost:9090/metrics
(read-only; the full admin API, with POST /reload, is on 127.0.0.1:9901)

Ctrl-C stops everything.
TRY
wait
