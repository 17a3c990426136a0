#!/usr/bin/env bash
# Installs the Debian 12 packages memtune builds against (skips what is already there).
set -euo pipefail
pkgs="build-essential pkg-config libopenblas-dev libopenblas-openmp-dev libpcre2-dev libjansson-dev libsqlite3-dev"
# Hub model names (src/formats/hub.c): downloads with libcurl, sha256 with OpenSSL's libcrypto
pkgs="$pkgs libcurl4-openssl-dev libssl-dev"
# the fuzz targets (tests/fuzz/run.sh, run by CI) build with clang's libFuzzer
pkgs_fuzz="clang"
pkgs="$pkgs $pkgs_fuzz"
# the grammar tests validate sampled JSON with an independent validator
pkgs="$pkgs python3-jsonschema"
# memtune serve: the HTTP server library (and curl, which its tests call it with)
pkgs_serve="libmicrohttpd-dev curl"
pkgs="$pkgs $pkgs_serve"
# tests/serve use the official openai npm client: Debian's nodejs and npm unless a node with
# npm is already installed (a NodeSource nodejs bundles npm and conflicts with Debian's npm)
command -v npm >/dev/null 2>&1 || pkgs="$pkgs nodejs npm"
# data-parallel training (memtune train under mpirun; optional at build time: pkg-config ompi-c)
pkgs="$pkgs libopenmpi-dev openmpi-bin"
# the Python package (python/memtune, its tests, pip install ./python)
pkgs="$pkgs python3 python3-setuptools python3-pip python3-wheel"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing
fi
