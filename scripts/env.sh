# Sourced by the scripts: one target directory and one profile for everything
# (tests, drill, benchmark), so RocksDB is built from source once. The target
# directory lives outside the clone by default so fresh clones reuse it.
# Caveat for several clones or worktrees building by turns into this one
# directory: cargo names a workspace crate's artifacts by its path inside the
# workspace and judges them fresh by file times, so one clone can be served
# the other's crates (a build that does not see your edit, tests that run
# another tree's binaries). Give each a CARGO_TARGET_DIR of its own (a copy
# of this one keeps RocksDB built: cp -a); a fresh clone is safe (its files
# are newer than any artifact).
ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/ailee-recovery/target}
export AILEE_BIN=$CARGO_TARGET_DIR/release
