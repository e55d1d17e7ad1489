#!/usr/bin/env bash
# bench_newest.sh [WORKDIR] [RUNS]
#
# Newest-snapshot verification, process start included, beside
# `openssl dgst -sha256` of the same file (the cost of merely reading it all)
# and beside the tool's own `--version` (process start alone), on the two
# reference files of issue 23 made by the generator: node-like (5000
# snapshots x 720 entries, ~96 KB each) and large snapshots (1500 x 3000
# entries, ~400 KB each). Prints the median of RUNS (default 21) wall-clock
# runs of each, the baseline in the same run, and the ratio (target:
# openssl / newest >= 150x on both files); then, on the node-like file,
# `--all` with and without `--reorg-db` (an empty database: every lookup goes
# through ailee_init_reorg_db's pipe; ALL_RUNS runs, default 5) and the
# installed size of every release binary (target <= 20 MB). Files are made
# in WORKDIR (default $TMPDIR/ailee-bench, shared with scripts/bench.sh);
# SNAPSHOTS/ENTRIES and BIG_SNAPSHOTS/BIG_ENTRIES change them.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$(readlink -f "$0")")/env.sh"
cd "$ROOT"
W=${1:-${TMPDIR:-/tmp}/ailee-bench}
RUNS=${2:-21}
SNAPSHOTS=${SNAPSHOTS:-5000}
ENTRIES=${ENTRIES:-720}
BIG_SNAPSHOTS=${BIG_SNAPSHOTS:-1500}
BIG_ENTRIES=${BIG_ENTRIES:-3000}
command -v openssl >/dev/null || scripts/setup.sh --no-bitcoind
cargo build --release --workspace --bins --examples -q
B=$AILEE_BIN
mkdir -p "$W"

# generate FILE SNAPSHOTS ENTRIES: the generator's file, made again when the
# parameters changed
generate() {
    if [ ! -s "$1" ] || [ "$(cat "$1.params" 2>/dev/null)" != "$2 $3" ]; then
        echo "generating $2 snapshots x $3 entries ..." >&2
        "$B/examples/gen_snapshots" "$1" "$2" "$3" 1
        echo "$2 $3" > "$1.params"
    fi
}
F=$W/newest.dat
BIG=$W/newest_big.dat
generate "$F" "$SNAPSHOTS" "$ENTRIES"
generate "$BIG" "$BIG_SNAPSHOTS" "$BIG_ENTRIES"

# median wall-clock seconds of RUNS runs of a command (output discarded);
# the clock is bash's $EPOCHREALTIME, read without starting a process, so the
# figure is the command's own (fork and exec included), not a `date`'s.
median() {
    local i t0 t1
    for ((i = 0; i < RUNS; i++)); do
        t0=$EPOCHREALTIME
        "$@" > /dev/null 2>&1 || true
        t1=$EPOCHREALTIME
        echo "$t0 $t1"
    done | awk '{ print $2 - $1 }' | sort -g | awk '{ a[NR] = $1 } END { printf "%.5f", a[int((NR + 1) / 2)] }'
}
t_true=$(median /bin/true)
t_version=$(median "$B/ailee_l2_verify" --version)
echo "medians of $RUNS runs, each command's baseline in the same run; cores: $(nproc); load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf "  %-40s %9ss\n" "/bin/true (a process start)" "$t_true" "ailee_l2_verify --version" "$t_version"
# newest FILE NAME: the newest check and openssl on one file, interleaved
newest() {
    "$B/ailee_l2_verify" --snapshot "$1" > /dev/null 2>&1 || { echo "$1 does not verify" >&2; exit 1; }
    cat "$1" > /dev/null   # warm the page cache: both sides read from memory
    local t_newest t_ossl mb
    t_newest=$(median "$B/ailee_l2_verify" --snapshot "$1")
    t_ossl=$(median openssl dgst -sha256 "$1")
    mb=$(awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.0f", b / 1048576 }')
    echo "$2: $1 ($mb MB)"
    printf "  %-40s %9ss\n" "ailee_l2_verify --snapshot FILE" "$t_newest" "openssl dgst -sha256 FILE" "$t_ossl"
    echo "  openssl / newest = $(awk -v a="$t_ossl" -v b="$t_newest" 'BEGIN { printf "%.0f", a / b }')x   (target >= 150x, process start included)"
}
newest "$F" "node-like, $SNAPSHOTS snapshots x $ENTRIES entries"
newest "$BIG" "large snapshots, $BIG_SNAPSHOTS x $BIG_ENTRIES entries"
# --all with the reorg database read through ailee_init_reorg_db (the
# verifier does not link RocksDB): the cost of the pipe, batched lookups.
DB=$W/newest_reorg_db
[ -d "$DB" ] || "$B/ailee_init_reorg_db" --path "$DB" -q > /dev/null
ALL_RUNS=${ALL_RUNS:-5}
t_all=$(RUNS=$ALL_RUNS median "$B/ailee_l2_verify" --snapshot "$F" --all -q)
t_all_db=$(RUNS=$ALL_RUNS median "$B/ailee_l2_verify" --snapshot "$F" --all -q --reorg-db "$DB")
echo "--all, medians of $ALL_RUNS runs:"
printf "  %-40s %9ss\n" "ailee_l2_verify --all" "$t_all" \
    "ailee_l2_verify --all --reorg-db (empty)" "$t_all_db"
echo "release binaries:"
for b in "$B"/ailee_*; do
    [ -f "$b" ] && [ -x "$b" ] || continue
    printf "  %-28s %6.1f MB\n" "$(basename "$b")" "$(awk -v b="$(stat -c %s "$b")" 'BEGIN { print b / 1048576 }')"
done
