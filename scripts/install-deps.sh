#!/usr/bin/env bash
# Installs the Debian 12 packages memtune builds against (skips what is already there).
set -euo pipefail
pkgs="build-essential pkg-config libopenblas-dev libopenblas-openmp-dev libpcre2-dev libjansson-dev libsqlite3-dev"
# the Python package (python/memtune, its tests, pip install ./python)
pkgs="$pkgs python3 python3-setuptools python3-pip python3-wheel"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
