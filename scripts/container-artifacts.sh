#!/usr/bin/env bash
# Collects what the container image's /opt/meshgate holds from a release
# build folder: bin/ (meshgate, mesh-sample), plugins/ (the built-in filter
# plugins) and lib/ (the Swift runtime libraries they link, found with ldd;
# the system's nghttp2, OpenSSL and libyaml come from Debian packages).
#   scripts/container-artifacts.sh BUILD_DIR OUT_DIR
set -euo pipefail
build="$1"; out="$2"
rm -rf "$out"
mkdir -p "$out/bin" "$out/plugins" "$out/lib"
cp "$build/meshgate" "$build/mesh-sample" "$out/bin/"
plugins=(libRoundRobin libLeastConn libRandom libConsistentHash libRetry libHedge libCircuitBreaker libOutlierDetection libTracing libRateLimit libMirror)
for p in "${plugins[@]}"; do cp "$build/$p.so" "$out/plugins/"; done
# Every library the binaries and plugins load that is not the system's.
for f in "$out"/bin/* "$out"/plugins/*; do
  ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  case "$lib" in
    /lib/*|/usr/lib/*) ;;
    *) cp -L "$lib" "$out/lib/" ;;
  esac
done
if ldd "$out"/bin/* "$out"/plugins/* | grep -q "not found"; then
  echo "container-artifacts: a library is missing:" >&2
  ldd "$out"/bin/* "$out"/plugins/* | grep "not found" >&2
  exit 1
fi
strip --strip-unneeded "$out"/bin/* "$out"/plugins/* "$out"/lib/* 2>/dev/null || true
echo "container-artifacts: $(du -sh "$out" | cut -f1) in $out"
