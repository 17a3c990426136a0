#!/usr/bin/env bash
# Installs the Debian 12 packages memtune builds against (skips what is already there).
set -euo pipefail
pkgs="build-essential pkg-config libopenblas-dev libopenblas-openmp-dev libpcre2-dev libjansson-dev libsqlite3-dev"
# memtune serve: the HTTP server library; its tests use the official openai npm client
pkgs_serve="libmicrohttpd-dev nodejs npm"
pkgs="$pkgs $pkgs_serve"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
