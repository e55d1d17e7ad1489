#!/usr/bin/env bash
# Bounded fuzzing (not part of CI's default run): each libFuzzer target for
# SECONDS (default 60), seeded with the node's vectors, the malformed-file
# catalogue and JSON states. Prints executions per target. A crashing input is
# copied to tests/fixtures/fuzz-regressions/<target>/ (commit it: the
# regression test replays every file there).
# Usage: scripts/fuzz.sh [SECONDS]
# Needs cargo-fuzz (cargo install cargo-fuzz); runs on the stable toolchain
# through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z sanitizer flags).
set -euo pipefail
source "$(dirname "$0")/env.sh"
secs=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR   # fuzz builds live in fuzz/target (other flags)
cd "$ROOT/fuzz"
mkdir -p corpus/snapshot_reader corpus/json_state
cp -n "$ROOT"/tests/fixtures/vectors/*.dat "$ROOT"/tests/fixtures/malformed/*.dat corpus/snapshot_reader/ 2>/dev/null || true
for f in "$ROOT"/tests/fixtures/vectors/basic.dat "$ROOT"/tests/fixtures/vectors/quoting.dat; do
    "$AILEE_BIN/ailee_l2_verify" --snapshot "$f" --print-state > "corpus/json_state/$(basename "$f" .dat).json" 2>/dev/null || true
done
echo '{}' > corpus/json_state/empty.json
status=0
for t in snapshot_reader json_state; do
    log=$(mktemp)
    if cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
        echo "$t: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions in ${secs}s, no crash"
    else
        status=1
        echo "$t: CRASH"; grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5
        mkdir -p "$ROOT/tests/fixtures/fuzz-regressions/$t"
        cp artifacts/"$t"/* "$ROOT/tests/fixtures/fuzz-regressions/$t/" 2>/dev/null || true
    fi
    rm -f "$log"
done
exit $status
