#!/usr/bin/env bash
# Builds terway-rs and runs the main job: an emulated 3-node VPC (shared ENI, exclusive ENI, VPC route),
# 30 pods networked by the real `terway` CNI and `terwayd`, a connectivity matrix, churn, and a clean teardown.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prereqs.sh
cargo build --release --workspace --bins
exec ./target/release/terway-lab demo "$@"
