#!/usr/bin/env bash
# Hourly backups of a growing snapshot file, three ways in one run:
#   ailee_backup            (restic repository, segments, runbook copy)
#   plain `restic backup`   of the same data directory (l2_snapshots.dat + reorg_db)
#   the runbook's cron      (cp of the file + tar.gz of reorg_db, keep 24)
# N runs (default 24) on a SIZE_MB file (default 1024) growing by one ~GROW_KB
# snapshot per run (default 300), each run recorded as one hour later
# (restic backup --time), then the restore time of each restic repository
# (ailee_restore beside `restic restore`, REPS times; 0: none). A first,
# untimed backup of each kind makes the full copy; the N runs after it are
# the hourly ones. Prints seconds per run (median), bytes on disk after N
# runs and restore seconds (median), and the ratios to issue 23's targets.
# BASELINES="restic cron" (the default) names the baselines to run beside
# ours; BASELINES="" runs ailee_backup alone. FLAT_MB=4096 adds a second
# data directory of that size, grown and backed up in the same runs right
# after the first (so load hits both alike), and prints its time per run
# against the SIZE_MB one's (issue 23: flat in file size, within 10%).
# Usage: scripts/bench_backup.sh [N] [SIZE_MB] [GROW_KB] [REPS]
# Long (about 10 minutes on 2 cores at 1 GB): run it in the background.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
N=${1:-24} SIZE_MB=${2:-1024} GROW_KB=${3:-300} REPS=${4:-3}
for v in "$N" "$SIZE_MB" "$GROW_KB"; do
    [[ $v =~ ^[1-9][0-9]{0,5}$ ]] || { echo "bench_backup.sh: arguments are whole numbers" >&2; exit 1; }
done
[[ $REPS =~ ^[0-9]{1,3}$ ]] || { echo "bench_backup.sh: REPS is a whole number" >&2; exit 1; }
FLAT_MB=${FLAT_MB:-0}
[[ $FLAT_MB =~ ^[0-9]{1,6}$ ]] || { echo "bench_backup.sh: FLAT_MB is a whole number" >&2; exit 1; }
BASELINES=${BASELINES-restic cron}
has() { [[ " $BASELINES " == *" $1 "* ]]; }
cargo build --release --workspace --bins -q
B=$AILEE_BIN
W=$(mktemp -d "${TMPDIR:-/var/tmp}/ailee-bench-backup.XXXXXX")
trap 'rm -rf "$W"' EXIT
export HOME=$W/home RESTIC_CACHE_DIR=$W/cache
mkdir -p "$HOME"
D=$W/ailee
mkdir -p "$D"
"$B/ailee_init_reorg_db" --path "$D/reorg_db" >/dev/null

# A node-like snapshot file (scripts/gen_node_snapshots.py): each snapshot
# is the full state (balances), a few of them changed since the previous
# one, with a valid anchor.
echo "generating a ${SIZE_MB} MB snapshot file ..." >&2
python3 "$ROOT/scripts/gen_node_snapshots.py" "$D/l2_snapshots.dat" $((SIZE_MB * 1024 * 1024)) $((GROW_KB * 1024)) 1 "$W/gen.state"
grow() { python3 "$ROOT/scripts/gen_node_snapshots.py" "$D/l2_snapshots.dat" 0 $((GROW_KB * 1024)) 1 "$W/gen.state"; }
F=$W/flat
if [ "$FLAT_MB" -gt 0 ]; then
    echo "generating a ${FLAT_MB} MB snapshot file ..." >&2
    mkdir -p "$F"
    "$B/ailee_init_reorg_db" --path "$F/reorg_db" >/dev/null
    python3 "$ROOT/scripts/gen_node_snapshots.py" "$F/l2_snapshots.dat" $((FLAT_MB * 1024 * 1024)) $((GROW_KB * 1024)) 1 "$W/flat.state"
fi
grow_flat() { python3 "$ROOT/scripts/gen_node_snapshots.py" "$F/l2_snapshots.dat" 0 $((GROW_KB * 1024)) 1 "$W/flat.state"; }

PLAIN=$W/plain-repo CRON=$W/cron
printf 'bench\n' > "$W/pw"; chmod 600 "$W/pw"
restic -q init --repository-version 2 -r "$PLAIN" -p "$W/pw" >/dev/null
mkdir -p "$CRON"

secs() { local t0; t0=$(date +%s%N); "$@" >/dev/null; awk -v n=$(( $(date +%s%N) - t0 )) 'BEGIN { printf "%.3f", n / 1e9 }'; }
median() { sort -n | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
cron_backup() {
    local ts=$1
    cp "$D/l2_snapshots.dat" "$CRON/l2_snapshots_$ts.dat.bak"
    ls -t "$CRON"/l2_snapshots_*.dat.bak | tail -n +25 | xargs rm -f
    tar -czf "$CRON/reorg_db_$ts.tar.gz" -C "$D" reorg_db/
    ls -t "$CRON"/reorg_db_*.tar.gz | tail -n +25 | xargs rm -f
}

plain_backup() { restic -q -r "$PLAIN" -p "$W/pw" backup --time "$1" "$D/l2_snapshots.dat" "$D/reorg_db"; }
echo "first (full) backups ..." >&2
t0='2026-01-01 00:00:00' tfirst='2025-12-31 23:00:00'
"$B/ailee_backup" --data-dir "$D" --time "$tfirst"
! has restic || plain_backup "$t0" >/dev/null
# The first hourly run after the first backup copies the whole file once
# more (the spare the runbook copy is rebuilt from): not an hourly cost.
grow
"$B/ailee_backup" --data-dir "$D" --time "$t0"
if [ "$FLAT_MB" -gt 0 ]; then
    "$B/ailee_backup" --data-dir "$F" --time "$tfirst"
    grow_flat
    "$B/ailee_backup" --data-dir "$F" --time "$t0"
fi
: > "$W/t_ailee"; : > "$W/t_plain"; : > "$W/t_cron"; : > "$W/t_flat"
for i in $(seq 1 "$N"); do
    grow
    t=$(date -u -d "2026-01-01 00:00:00 UTC + $i hours" '+%Y-%m-%d %H:%M:%S')
    sync
    secs "$B/ailee_backup" --data-dir "$D" --time "$t" >> "$W/t_ailee"; echo >> "$W/t_ailee"
    ! has restic || { secs plain_backup "$t" >> "$W/t_plain"; echo >> "$W/t_plain"; }
    ! has cron || { secs cron_backup "$(date -u -d "$t" +%Y%m%d_%H%M%S)" >> "$W/t_cron"; echo >> "$W/t_cron"; }
    if [ "$FLAT_MB" -gt 0 ]; then
        grow_flat; sync
        secs "$B/ailee_backup" --data-dir "$F" --time "$t" >> "$W/t_flat"; echo >> "$W/t_flat"
    fi
    echo "run $i/$N: ailee $(tail -n 1 "$W/t_ailee") s, restic $(tail -n 1 "$W/t_plain") s, cron $(tail -n 1 "$W/t_cron") s, ailee at ${FLAT_MB} MB $(tail -n 1 "$W/t_flat") s" >&2
done
size() { du -sb "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
file_bytes=$(stat -c %s "$D/l2_snapshots.dat")
ours_repo=$(size "$D/backups/repo")
ours_local=$(size "$D/backups/l2_snapshots_latest.dat.bak" "$D/backups/.l2_snapshots_spare.dat" "$D/backups/.stage")
plain_repo=$(size "$PLAIN")
cron=$(size "$CRON")

: > "$W/r_ailee"; : > "$W/r_plain"
for r in $(seq 1 "$REPS"); do
    has restic || break
    rm -rf "$W/r1" "$W/r2"; mkdir "$W/r1" "$W/r2"; sync
    secs "$B/ailee_restore" --data-dir "$W/r1" --repo "$D/backups/repo" --password-file "$D/backups/restic-password" >> "$W/r_ailee"; echo >> "$W/r_ailee"
    sync
    secs restic -q -r "$PLAIN" -p "$W/pw" restore latest --target "$W/r2" >> "$W/r_plain"; echo >> "$W/r_plain"
done
[ "$REPS" -eq 0 ] || ! has restic || cmp "$W/r1/l2_snapshots.dat" "$D/l2_snapshots.dat"

med() { grep . "$1" | median || true; }
ta=$(med "$W/t_ailee"); tp=$(med "$W/t_plain"); tc=$(med "$W/t_cron")
ra=$(med "$W/r_ailee"); rp=$(med "$W/r_plain")
echo
echo "== bench_backup: $N hourly runs, snapshot file $((file_bytes / 1048576)) MB growing ~${GROW_KB} KB per run, $(nproc) cores"
printf '%-34s %10s %16s\n' "" "s/run (median)" "bytes on disk"
printf '%-34s %10s %16s\n' "ailee_backup (restic repository)" "$ta" "$ours_repo"
printf '%-34s %10s %16s\n' "  + runbook copy, spare, stage" "" "$ours_local"
printf '%-34s %10s %16s\n' "plain restic backup" "$tp" "$plain_repo"
printf '%-34s %10s %16s\n' "runbook cron (cp + tar, keep 24)" "$tc" "$cron"
echo "ailee_backup per run: $(sort -n "$W/t_ailee" | grep . | tr '\n' ' ')"
if [ "$FLAT_MB" -gt 0 ]; then
    tf=$(med "$W/t_flat")
    echo "ailee_backup at ${FLAT_MB} MB per run: $(sort -n "$W/t_flat" | grep . | tr '\n' ' ')"
    awk -v a="$ta" -v f="$tf" -v m="$FLAT_MB" -v s="$SIZE_MB" 'BEGIN {
        printf "flatness: %s s per run at %d MB, %.2fx the %d MB time (target <= 1.1)\n", f, m, f / a, s }'
fi
has restic || exit 0
echo "restore (median of $REPS): ailee_restore $ra s, restic restore $rp s"
awk -v a="$ours_repo" -v p="$plain_repo" -v ta="$ta" -v tp="$tp" -v ra="${ra:-0}" -v rp="${rp:-1}" 'BEGIN {
    printf "ratios: repository %.2fx plain restic (target <= 1.1), time per run %.2fx (target <= 0.5), restore %.2fx (target <= 1.5)\n", a / p, ta / tp, ra / rp }'
