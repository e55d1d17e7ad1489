# Sourced by the scripts: one target directory and one profile for everything
# (tests, drill, benchmark), so RocksDB is built from source once. The target
# directory lives outside the clone by default so fresh clones reuse it.
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ailee-recovery/target}
export AILEE_BIN=$CARGO_TARGET_DIR/release
