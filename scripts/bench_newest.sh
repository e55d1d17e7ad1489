#!/usr/bin/env bash
# bench_newest.sh [WORKDIR] [RUNS]
#
# Newest-snapshot verification of a large file, process start included, beside
# `openssl dgst -sha256` of the same file (the cost of merely reading it all)
# and beside the tool's own `--version` (process start alone). Prints the
# median of RUNS (default 21) wall-clock runs of each, the ratio (target:
# openssl / newest >= 100x), `--all` with and without `--reorg-db` (an empty
# database: every lookup goes through ailee_init_reorg_db's pipe; ALL_RUNS
# runs, default 5) and the installed size of every release binary (target
# <= 20 MB). Generates a ~515 MB file (5000 snapshots) in WORKDIR
# (default $TMPDIR/ailee-bench, shared with scripts/bench.sh).
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/env.sh"
cd "$ROOT"
W=${1:-${TMPDIR:-/tmp}/ailee-bench}
RUNS=${2:-21}
SNAPSHOTS=${SNAPSHOTS:-5000}
ENTRIES=${ENTRIES:-720}
command -v openssl >/dev/null || scripts/setup.sh --no-bitcoind
cargo build --release --workspace --bins --examples -q
B=$AILEE_BIN
F=$W/newest.dat
mkdir -p "$W"
if [ ! -s "$F" ] || [ "$(cat "$W/newest.params" 2>/dev/null)" != "$SNAPSHOTS $ENTRIES" ]; then
    echo "generating $SNAPSHOTS snapshots x $ENTRIES entries ..." >&2
    "$B/examples/gen_snapshots" "$F" "$SNAPSHOTS" "$ENTRIES" 1
    echo "$SNAPSHOTS $ENTRIES" > "$W/newest.params"
fi
cat "$F" > /dev/null   # warm the page cache: both sides read from memory

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
"$B/ailee_l2_verify" --snapshot "$F" > /dev/null   # fails loudly if the file does not verify
t_true=$(median /bin/true)
t_version=$(median "$B/ailee_l2_verify" --version)
t_newest=$(median "$B/ailee_l2_verify" --snapshot "$F")
t_ossl=$(median openssl dgst -sha256 "$F")
mb=$(awk -v b="$(stat -c %s "$F")" 'BEGIN { printf "%.0f", b / 1048576 }')
echo "file: $F ($mb MB, $SNAPSHOTS snapshots); medians of $RUNS runs; cores: $(nproc)"
printf "  %-40s %9ss\n" "/bin/true (a process start)" "$t_true" \
    "ailee_l2_verify --version" "$t_version" \
    "ailee_l2_verify --snapshot FILE" "$t_newest" \
    "openssl dgst -sha256 FILE" "$t_ossl"
echo "  openssl / newest = $(awk -v a="$t_ossl" -v b="$t_newest" 'BEGIN { printf "%.0f", a / b }')x   (target >= 100x, process start included)"
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
