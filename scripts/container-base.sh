#!/usr/bin/env bash
# Makes localhost/meshgate-base:bookworm-slim, a stand-in for
# debian:bookworm-slim where no container registry is reachable: Debian
# bookworm from the Debian mirror apt uses (debootstrap --variant=minbase),
# slimmed the way the official image is (no package caches, lists, docs,
# man pages or locales; apt keeps no caches in layers), imported with
# podman. Does nothing when the image exists. Needs root, podman, debootstrap.
#   scripts/container-base.sh [IMAGE]
set -euo pipefail
image="${1:-localhost/meshgate-base:bookworm-slim}"
podman=(podman --runtime runc --cgroup-manager=cgroupfs)
if "${podman[@]}" image exists "$image"; then exit 0; fi
mirror=$(grep -rhoE '(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
  | head -1 | awk '{print $2}' || true)
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs=$(mktemp -d /tmp/meshgate-rootfs-XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
echo "container-base: debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
cat > "$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CONF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
CONF
find "$rootfs/var/cache/apt/archives" "$rootfs/var/lib/apt/lists" -mindepth 1 -not -name lock -not -name partial -delete 2>/dev/null || true
rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* "$rootfs"/usr/share/info/*
tar -C "$rootfs" -c . | "${podman[@]}" import - "$image" >/dev/null
echo "container-base: $image made"
