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

pkgs=(iproute2 iputils-ping nftables iperf3 containernetworking-plugins curl podman)
command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1 || pkgs+=(python3 python3-pip)
# shellcheck source=apt-lib.sh
. "$(dirname "$0")/apt-lib.sh"
apt_install_missing "${pkgs[@]}"

# The official Alibaba Cloud Python SDKs, unmodified, are driven against the emulator by a compatibility test.
sdk=("alibabacloud_ecs20140526==7.11.8" "alibabacloud_vpc20160428==7.2.2")
if ! python3 -c 'import alibabacloud_ecs20140526, alibabacloud_vpc20160428' 2>/dev/null; then
    python3 -m pip install -q --disable-pip-version-check "${sdk[@]}" 2>/dev/null ||
        python3 -m pip install -q --disable-pip-version-check --break-system-packages "${sdk[@]}"
fi

# The Kubernetes lab: etcd, containerd, runc from Debian and Kubernetes v1.20.2 built from Debian's source
# package, cached outside the clone (~10 minutes the first time, skipped afterwards).
"$(dirname "$0")/k8s-prereqs.sh" >/dev/null
