#!/usr/bin/env bash
# The whole test suite: installs what is missing (clang, libclang-dev,
# rocksdb-tools, the regtest bitcoind), builds the tools (release profile,
# shared with the drill and the benchmark), runs every test, then the
# recovery drill in all modes (and the crash drill with --corrupt-snapshot).
# Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
scripts/setup.sh
cargo build --release --workspace --bins
cargo test --release --workspace --no-fail-fast "$@"
scripts/test_recovery.sh --mode all
scripts/test_recovery.sh --mode crash --corrupt-snapshot
