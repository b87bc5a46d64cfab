#!/usr/bin/env bash
# Installs the Debian packages given that are not installed yet (apt-get,
# through sudo when not root). Shared by scripts/setup.sh and bench/run.sh.
#   scripts/install-debian-packages.sh LABEL PACKAGE...
set -euo pipefail
label="$1"; shift
missing=()
for p in "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "$label: installing Debian packages: ${missing[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
