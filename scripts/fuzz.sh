#!/usr/bin/env bash
# Bounded fuzzing (not part of CI's default run) of the three libFuzzer
# targets: snapshot_reader (the snapshot file reader), json_state (the JSON
# state of SPEC §3) and node_replies (what the node sends: raw blocks of
# `getblock HASH 0` and the RPC reply validators). Each runs for SECONDS
# (default 60) or, with RUNS=N in the environment, for N executions; seeded
# with the node's vectors, the malformed-file catalogue, JSON states, and
# real regtest blocks and replies (tests/fixtures/node-replies). Prints
# executions per target. A crashing input is copied to
# tests/fixtures/fuzz-regressions/<target>/ (commit it: the regression test
# `fuzz_regressions_hold` replays every file there).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     RUNS=10000000 scripts/fuzz.sh 0 node_replies
# SANITIZER=none builds without AddressSanitizer (the default): several times
# the executions per second; the code fuzzed is safe Rust. FUZZ_ARGS adds
# libFuzzer options, e.g. FUZZ_ARGS=-max_len=2048.
# Needs cargo-fuzz (cargo install cargo-fuzz); runs on the stable toolchain
# through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z sanitizer flags).
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(snapshot_reader json_state node_replies)
[[ $secs =~ ^[0-9]+$ ]] || { echo "SECONDS must be a number" >&2; exit 1; }
if [ -n "${RUNS:-}" ]; then
    [[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "RUNS must be a positive number" >&2; exit 1; }
    bound=(-runs="$RUNS")
else
    bound=(-max_total_time="$secs")
fi
san=()
[ -z "${SANITIZER:-}" ] || san=(-s "$SANITIZER")
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR   # fuzz builds live in fuzz/target (other flags)
# snapshot_reader writes each input to a temporary file (the backward reader
# takes a file): on tmpfs when there is one.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi
cd "$ROOT/fuzz"
mkdir -p corpus/snapshot_reader corpus/json_state corpus/node_replies
cp -n "$ROOT"/tests/fixtures/vectors/*.dat "$ROOT"/tests/fixtures/malformed/*.dat corpus/snapshot_reader/ 2>/dev/null || true
for f in "$ROOT"/tests/fixtures/vectors/basic.dat "$ROOT"/tests/fixtures/vectors/quoting.dat; do
    "$AILEE_BIN/ailee_l2_verify" --snapshot "$f" --print-state > "corpus/json_state/$(basename "$f" .dat).json" 2>/dev/null || true
done
echo '{}' > corpus/json_state/empty.json
# Raw blocks both as bytes and as the hex text the node sends; JSON replies as they are.
for f in "$ROOT"/tests/fixtures/node-replies/*; do
    case $f in
        *.hex) cp "$f" corpus/node_replies/
               python3 -c 'import sys; sys.stdout.buffer.write(bytes.fromhex(open(sys.argv[1]).read().strip()))' \
                   "$f" > "corpus/node_replies/$(basename "$f" .hex).bin" ;;
        *) cp "$f" corpus/node_replies/ ;;
    esac
done
status=0
for t in "${targets[@]}"; do
    log=$(mktemp)
    start=$SECONDS
    if cargo fuzz run -O "${san[@]}" "$t" "corpus/$t" -- "${bound[@]}" -print_final_stats=1 ${FUZZ_ARGS:-} >"$log" 2>&1; then
        echo "$t: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions in $((SECONDS - start))s, no crash"
    else
        status=1
        echo "$t: CRASH (log kept: $log)"; grep -E 'panicked|ERROR|SUMMARY' "$log" | head -5
        mkdir -p "$ROOT/tests/fixtures/fuzz-regressions/$t"
        cp artifacts/"$t"/* "$ROOT/tests/fixtures/fuzz-regressions/$t/" 2>/dev/null || true
        continue
    fi
    rm -f "$log"
done
exit $status
