#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, netns datapath tests, emulator/daemon integration tests and the
# lab tests. Needs root (network namespaces). Usage: sudo ./scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/prereqs.sh
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"
