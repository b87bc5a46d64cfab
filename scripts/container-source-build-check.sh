#!/usr/bin/env bash
# Checks the Dockerfile's default, from-source path (`docker build .`) on a
# machine that has no container registry: a stand-in for the official
# Swift image is made from the base of scripts/container-base.sh, the Swift
# image's Debian packages, and this host's toolchain mounted at build time
# (SWIFT_ROOT, default /opt/swift); Swift packages resolve as this host
# resolves them (its git config and package mirror, mounted read-only when
# present). Then the image is built with the default target and run once.
# Not part of the test suite: it compiles Meshgate inside the container
# (several minutes on 2 cores).
#   scripts/container-source-build-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
swift_root="${SWIFT_ROOT:-/opt/swift}"
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
scripts/container-base.sh localhost/meshgate-base:bookworm-slim

standin=localhost/swift-standin:bookworm
context=$(mktemp -d /tmp/swift-standin-XXXXXX)
trap 'rm -rf "$context"' EXIT
cat > "$context/Containerfile" <<'CONTAINERFILE'
FROM localhost/meshgate-base:bookworm-slim
# The packages the official swift:*-bookworm image installs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends binutils git gnupg2 libc6-dev libcurl4-openssl-dev libedit2 \
    libgcc-12-dev libpython3-dev libsqlite3-0 libstdc++-12-dev libxml2-dev libncurses-dev libz3-dev pkg-config \
    tzdata zip unzip zlib1g-dev ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/swift/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CONTAINERFILE
"${podman[@]}" build --network host "${limits[@]}" --pull=never -t "$standin" "$context"

mounts=(-v "$swift_root:/opt/swift:ro")
[[ -d /opt/swift-packages ]] && mounts+=(-v /opt/swift-packages:/opt/swift-packages:ro)
[[ -f /etc/gitconfig ]] && mounts+=(-v /etc/gitconfig:/etc/gitconfig:ro)
tag=localhost/meshgate:from-source
"${podman[@]}" build --network host "${limits[@]}" --format docker --pull=never "${mounts[@]}" \
  --build-arg SWIFT_IMAGE="$standin" --build-arg RUNTIME_IMAGE=localhost/meshgate-base:bookworm-slim -t "$tag" .
"${podman[@]}" run --rm "${limits[@]}" --network none "$tag" --help | head -12
"${podman[@]}" run --rm "${limits[@]}" --network none --entrypoint sh "$tag" -c \
  'ls /opt/meshgate/plugins && ! ldd /opt/meshgate/bin/* /opt/meshgate/plugins/* | grep "not found"'
echo "container-source-build-check: $tag built from source and runs"
