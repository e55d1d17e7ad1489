#!/usr/bin/env bash
# Cost of one monitor run (ailee_metrics monitor, what the 5-minute timer
# runs) on a large node: the snapshot file of scripts/bench.sh (5000 snapshots,
# ~515 MB, or SNAPSHOTS x ENTRIES) and a reorg_db of BLOCKS block hashes (default
# 900000, a mainnet-sized chain), ANCHORS anchors (5000) and 20 reorg events.
# Baselines in the same run: the full read-only database check and the full
# verification of every snapshot, i.e. what a monitor that scanned would cost.
# Prints the median of RUNS (5) wall-clock times and the peak RSS of one run.
# Usage: scripts/bench_monitor.sh [WORKDIR]   (needs ~1 GB free in WORKDIR)
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
W=${1:-${TMPDIR:-/tmp}/ailee-bench-monitor}
SNAPSHOTS=${SNAPSHOTS:-5000} ENTRIES=${ENTRIES:-720}
BLOCKS=${BLOCKS:-900000} ANCHORS=${ANCHORS:-5000} RUNS=${RUNS:-5}
for v in SNAPSHOTS ENTRIES BLOCKS ANCHORS RUNS; do
    [[ ${!v} =~ ^[1-9][0-9]{0,8}$ ]] || { echo "$v must be a positive number" >&2; exit 1; }
done
[ -x /usr/bin/time ] || scripts/setup.sh --no-bitcoind
cargo build --release --workspace --bins --examples -q
B=$AILEE_BIN
D=$W/data
if [ "$(cat "$W/params" 2>/dev/null)" != "$SNAPSHOTS $ENTRIES $BLOCKS $ANCHORS" ]; then
    rm -rf "$D" && mkdir -p "$D/backups"
    echo "generating $SNAPSHOTS snapshots x $ENTRIES entries, reorg_db of $BLOCKS blocks and $ANCHORS anchors ..." >&2
    "$B/examples/gen_snapshots" "$D/l2_snapshots.dat" "$SNAPSHOTS" "$ENTRIES" 0
    "$B/examples/gen_reorg_db" "$D/reorg_db" "$BLOCKS" "$ANCHORS" 20
    echo "$SNAPSHOTS $ENTRIES $BLOCKS $ANCHORS" > "$W/params"
fi
M=$W/textfile
mkdir -p "$M"
"$B/ailee_metrics" write --metrics-dir "$M" --writer ailee_backup --set "ailee_backup_last_success_timestamp_seconds{repository=$D/backups/repo}=now"
cat "$D/l2_snapshots.dat" > /dev/null   # warm the page cache

now() { date +%s%N; }
# median of RUNS wall-clock seconds of a command
median() {
    local ts=() i
    for i in $(seq "$RUNS"); do
        local t0; t0=$(now); "$@" > /dev/null 2>&1 || true
        ts+=($(( $(now) - t0 )))
    done
    printf '%s\n' "${ts[@]}" | sort -n | awk '{ a[NR] = $1 } END { printf "%.4f", a[int((NR + 1) / 2)] / 1e9 }'
}
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }   # KiB
mb() { du -sm "$1" | cut -f1; }

echo "snapshot file: $(mb "$D/l2_snapshots.dat") MB ($SNAPSHOTS snapshots); reorg_db: $(mb "$D/reorg_db") MB ($BLOCKS blocks, $ANCHORS anchors); runs: $RUNS; cores: $(nproc)"
t_mon=$(median "$B/ailee_metrics" monitor -q --data-dir "$D" --metrics-dir "$M")
t_check=$(median "$B/ailee_init_reorg_db" --path "$D/reorg_db" --check)
t_all=$(median "$B/ailee_l2_verify" --snapshot "$D/l2_snapshots.dat" --all)
printf "  %-58s %8ss\n" "ailee_metrics monitor (one 5-minute run)" "$t_mon" \
    "ailee_init_reorg_db --check (every record decoded)" "$t_check" \
    "ailee_l2_verify --all (every snapshot verified)" "$t_all"
echo "  monitor peak RSS: $(rss "$B/ailee_metrics" monitor -q --data-dir "$D" --metrics-dir "$M") KiB"
"$B/ailee_metrics" monitor --data-dir "$D" --metrics-dir "$M" || true
