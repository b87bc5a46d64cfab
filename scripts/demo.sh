#!/usr/bin/env bash
# The main job: build Meshgate, make a development PKI (config/certs) if there
# is none, start three sample replicas serving mutual TLS (50061-50063) and the
# gateway on config/mesh.yaml (port 50051, mTLS on both sides), print commands
# to try, and run until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --run
swift build -c release --product meshgate
swift build -c release --product mesh-sample
bin=$(swift build -c release --show-bin-path)
[ -f config/certs/ca.pem ] || scripts/dev-certs.sh config/certs
tls=(--tls-cert config/certs/server.pem --tls-key config/certs/server.key --tls-ca config/certs/ca.pem)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  "$bin/mesh-sample" --port "5006$i" --replica-id "replica-$i" "${tls[@]}" &
  pids+=($!)
done
"$bin/meshgate" validate --config config/mesh.yaml
"$bin/meshgate" run --config config/mesh.yaml &
pids+=($!)
sleep 1

cat <<'TRY'

Meshgate is listening on localhost:50051 (mutual TLS) in front of replica-1..3. Try:

  alias grpcurl='grpcurl -cacert config/certs/ca.pem -cert config/certs/client.pem -key config/certs/client.key'
  grpcurl localhost:50051 list
  grpcurl localhost:50051 describe mesh.v1.MeshService
  grpcurl -d '{"request_id":"req-1","data":"hello"}' localhost:50051 mesh.v1.MeshService/Process
  grpcurl -d '{"stream_id":"s1","event_types":["a","b"],"count":5}' localhost:50051 mesh.v1.MeshService/StreamEvents
  grpcurl -d '{"data":"slow"}' -H 'x-mesh-delay-ms: 3000' -max-time 1 localhost:50051 mesh.v1.MeshService/Process

Live dashboard: http://127.0.0.1:9901/dashboard   (also /metrics, /clusters, /config, /plugins)

Ctrl-C stops everything.
TRY
wait
