#!/usr/bin/env bash
# Peak memory (max RSS, /usr/bin/time -v) of the snapshot readers on hostile
# files: a healthy file followed by a 1.5 GB torn tail (a header, then lines
# that never reach END_SNAPSHOT), and one followed by a 2 GB line without a
# newline inside an open block; and a backup whose complete prefix holds the
# torn region. Readers: verify (newest, --all, --last-valid), extract,
# resync --anchors-from, backup. Target: every figure under 100 MB, whatever
# the junk's size. Then the streamed --print-state and --all of issue 25
# (one snapshot of millions of balances, millions of tiny snapshots).
# Prints the median of RUNS runs (default 3) per command.
# Figures are recorded in BENCHMARKS.md.
# Usage: scripts/bench_memory.sh [WORKDIR]   (needs ~9 GB free in WORKDIR)
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
W=${1:-${TMPDIR:-/tmp}/ailee-bench-memory}
RUNS=${RUNS:-3}
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "RUNS must be 1..99" >&2; exit 1; }
mkdir -p "$W"
[ -x /usr/bin/time ] || scripts/setup.sh --no-bitcoind
cargo build --release --workspace --bins -q
B=$AILEE_BIN
base=tests/fixtures/vectors/basic.dat
torn=$W/torn_tail_1500MB.dat
line=$W/line_2GB.dat
if [ ! -s "$torn" ]; then
    echo "generating $torn ..." >&2
    { cat "$base"; printf 'SNAPSHOT v1\ntimestamp_ms 1\nbalances 99999999\n'
      yes 'balance "peer-with-a-long-name" 1000000' | head -c 1500000000 || true; } > "$torn"
fi
if [ ! -s "$line" ]; then
    echo "generating $line ..." >&2
    { cat "$base"; printf 'SNAPSHOT v1\nbalance "'; head -c 2000000000 /dev/zero | tr '\0' x; } > "$line"
fi

# median max RSS in MB of RUNS runs of a command (its exit code must be
# $EXPECT, default 0)
rss() {
    local v=()
    for _ in $(seq "$RUNS"); do
        rm -rf "$W/out"
        local out kb
        out=$(/usr/bin/time -v "$@" 2>&1 >/dev/null || true)
        grep -q "Exit status: ${EXPECT:-0}\$" <<<"$out" || { echo "FAILED: $*" >&2; grep -v '^\s' <<<"$out" >&2; return 1; }
        kb=$(awk -F': ' '/Maximum resident set size/ { print $2 }' <<<"$out")
        v+=("$kb")
    done
    printf '%s\n' "${v[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 1024 }'
}

[ -d "$W/reorg_db" ] || "$B/ailee_init_reorg_db" --path "$W/reorg_db" -q > /dev/null
printf '| input | command | peak RSS (MB, median of %d) |\n| --- | --- | --- |\n' "$RUNS"
for f in "$torn" "$line"; do
    name=$(basename "$f")
    printf '| %s | verify (newest) | %s |\n' "$name" "$(rss "$B/ailee_l2_verify" -q --snapshot "$f")"
    printf '| %s | verify --all | %s |\n' "$name" "$(rss "$B/ailee_l2_verify" -q --snapshot "$f" --all)"
    printf '| %s | verify --last-valid | %s |\n' "$name" "$(rss "$B/ailee_l2_verify" -q --snapshot "$f" --last-valid)"
    printf '| %s | extract | %s |\n' "$name" "$(rss "$B/ailee_extract_snapshots" -q "$f" "$W/out")"
    echo 51 > "$W/anchor_identity"   # --anchors-from needs an identity before it reads the file
    # --anchors-from reads the whole file before it asks the node anything;
    # no node listens on port 1, so the run ends there (exit 1) — the peak is
    # the file's reading.
    printf '| %s | resync --anchors-from (then no node: exit 1) | %s |\n' "$name" \
        "$(EXPECT=1 rss "$B/ailee_resync_blocks" -q --start-height 0 --db-path "$W/reorg_db" \
            --bitcoin-rpc http://127.0.0.1:1 --anchors-from "$f")"
done
rm -rf "$W/out"

# Streaming (issue 25): --print-state of one snapshot of 1,000,000 and
# 2,000,000 balances (31 / 62 MB blocks), and --all (text and --json) over
# 1,000,000 and 2,000,000 anchorless snapshots of ~110 bytes (every one
# fails: a report per block). Target: under 100 MB and the same for both
# sizes (flat in the state's and the file's size).
for n in 1000000 2000000; do
    f=$W/balances_$n.dat
    [ -s "$f" ] || awk -v n="$n" 'BEGIN {
        printf "SNAPSHOT v1\ntimestamp_ms 1700000000000\nbalances %d\n", n
        for (i = 0; i < n; i++) printf "balance \"peer%08d\" %d\n", i, i * 7
        printf "escrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n" }' > "$f"
    printf '| %s | verify --print-state | %s |\n' "$(basename "$f")" "$(rss "$B/ailee_l2_verify" -q --snapshot "$f" --print-state)"
done
for n in 1000000 2000000; do
    f=$W/tiny_$n.dat
    [ -s "$f" ] || awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++)
        printf "SNAPSHOT v1\ntimestamp_ms %d\nbalances 0\nescrows 0\npegins 0\npegouts 0\ntasks 0\nanchor none\nEND_SNAPSHOT\n", 1000000000000 + i }' > "$f"
    printf '| %s | verify --all (exit 2) | %s |\n' "$(basename "$f")" "$(EXPECT=2 rss "$B/ailee_l2_verify" -q --snapshot "$f" --all)"
    printf '| %s | verify --all --json (exit 2) | %s |\n' "$(basename "$f")" "$(EXPECT=2 rss "$B/ailee_l2_verify" -q --snapshot "$f" --all --json)"
done

# A backup whose complete prefix holds the 1.5 GB torn region (a complete
# snapshot follows it): the count and the check of its snapshots. Needs
# ~4.5 GB more in WORKDIR (the runbook copy and restic's repository).
data=$W/junk_inside
mkdir -p "$data"
if [ ! -s "$data/l2_snapshots.dat" ]; then
    last=$(grep -abo '^SNAPSHOT v1' "$base" | tail -1 | cut -d: -f1)
    { cat "$torn"; tail -c +"$((last + 1))" "$base"; } > "$data/l2_snapshots.dat"
    "$B/ailee_init_reorg_db" --path "$data/reorg_db" -q > /dev/null
fi
v=()
for _ in $(seq "$RUNS"); do
    rm -rf "$data/backups"
    out=$(/usr/bin/time -v "$B/ailee_backup" --data-dir "$data" 2>&1 >/dev/null || true)
    grep -q 'Exit status: 0$' <<<"$out" || { echo "FAILED: ailee_backup" >&2; echo "$out" >&2; exit 1; }
    v+=("$(awk -F': ' '/Maximum resident set size/ { print $2 }' <<<"$out")")
done
rm -rf "$data/backups"
printf '| %s | backup (1.5 GB torn region inside the complete prefix) | %s |\n' "$(basename "$torn")" \
    "$(printf '%s\n' "${v[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 1024 }')"
