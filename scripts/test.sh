#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds the tools (release
# profile, shared with the drill and the benchmark), runs every test.
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup.sh
cargo build --release --workspace --bins
cargo test --release --workspace "$@"
