#!/usr/bin/env bash
# The main job: build Meshgate, start three sample replicas (50061-50063) and
# the gateway on config/mesh.yaml (port 50051), print commands to try, and run
# until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --run
swift build -c release --product meshgate
swift build -c release --product mesh-sample
bin=$(swift build -c release --show-bin-path)

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for i in 1 2 3; do
  "$bin/mesh-sample" --port "5006$i" --replica-id "replica-$i" &
  pids+=($!)
done
"$bin/meshgate" validate --config config/mesh.yaml
"$bin/meshgate" run --config config/mesh.yaml &
pids+=($!)
sleep 1

cat <<'TRY'

Meshgate is listening on 127.0.0.1:50051 in front of replica-1..3. Try:

  grpcurl -plaintext 127.0.0.1:50051 list
  grpcurl -plaintext 127.0.0.1:50051 describe mesh.v1.MeshService
  grpcurl -plaintext -d '{"request_id":"req-1","data":"hello"}' 127.0.0.1:50051 mesh.v1.MeshService/Process
  grpcurl -plaintext -d '{"stream_id":"s1","event_types":["a","b"],"count":5}' 127.0.0.1:50051 mesh.v1.MeshService/StreamEvents
  grpcurl -plaintext -d '{"data":"slow"}' -H 'x-mesh-delay-ms: 3000' -max-time 1 127.0.0.1:50051 mesh.v1.MeshService/Process

Ctrl-C stops everything.
TRY
wait
