#!/usr/bin/env bash
# Installs the system packages terway-rs needs to build, test and run its lab. Idempotent; needs root.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "terway-rs: run as root (the lab and the datapath tests create network namespaces)" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "terway-rs: no Rust toolchain found; install stable Rust (https://rustup.rs) and re-run" >&2
    exit 1
fi

pkgs=(iproute2 iputils-ping nftables iperf3 containernetworking-plugins python3-pip)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
