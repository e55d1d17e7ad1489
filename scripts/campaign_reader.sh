#!/usr/bin/env bash
# campaign_reader.sh — readers beside a writer (issue 25, "damaged means
# damaged"). On a scratch data directory (a reorg_db made by
# ailee_init_reorg_db, one snapshot whose anchor it records) a writer loop runs
# `ailee_create_anchor --db-path` again and again — each run opens the
# database read-write (a new MANIFEST, its WAL recovered and flushed, old
# files deleted), records one more PENDING anchor and closes it — while
# --runs reader runs go on beside it. Every --compact-every writer runs, RocksDB's
# own `ldb compact` (Debian rocksdb-tools) compacts the database as the running
# node does (each tool run leaves one more L0 SST; compaction deletes them):
# a writer too, one that deletes SST files. Each reader run is one of (in an
# order drawn from --seed):
#   ailee_init_reorg_db --path P --check      must exit 0
#   ailee_l2_verify --snapshot F --reorg-db P  must exit 0
#   ailee_metrics monitor --data-dir D         must warn of nothing but "no
#                                              backup found" (exit 1, expected
#                                              here) and never exit 2
# The database is healthy throughout, so any other outcome is a false alarm:
# it is printed (the first 10 in full) and counted. The writer must not fail
# either; after the readers the writer is stopped and a last check must exit
# 0. Prints the figures; exit 1 if any false alarm (or a writer failure).
# Usage: scripts/campaign_reader.sh [--runs N] [--seed S] [--dir D]
#                                   [--monitor-every K]
#   --runs N           reader runs (default 1000)
#   --seed S           seed of the readers' order (default: random; printed)
#   --dir D            scratch directory (absent or empty; kept). Default: a
#                      mktemp directory, removed at the end
#   --monitor-every K  about one reader run in K is the monitor (default 10;
#                      0: never)
#   --compact-every C  ldb compact after every C writer runs (default 50; 0:
#                      never, or when ldb is not installed: the SST files then
#                      pile up and every open gets slower)
# Tools come from $AILEE_BIN when it is set, else the release build
# (scripts/env.sh). About 20 ms per reader run on 2 cores: run 10,000 in the
# background.
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
use_build
std_args "$@"
export LC_ALL=C

RUNS=1000 SEED= DIR= MONITOR_EVERY=10 COMPACT_EVERY=50
while [ $# -gt 0 ]; do
    case $1 in
        --runs|--seed|--dir|--monitor-every|--compact-every)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --runs) RUNS=$2 ;;
                --seed) SEED=$2 ;;
                --dir) DIR=$2 ;;
                --monitor-every) MONITOR_EVERY=$2 ;;
                --compact-every) COMPACT_EVERY=$2 ;;
            esac
            shift 2 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
for v in "$RUNS" "$MONITOR_EVERY" "$COMPACT_EVERY"; do
    [[ $v =~ ^[0-9]+$ ]] || die "not a whole number: $v"
done
[ -n "$SEED" ] || SEED=$(( $(od -An -N4 -tu4 /dev/urandom) ))
[[ $SEED =~ ^[0-9]+$ ]] || die "--seed: not a whole number: $SEED"
need_tools ailee_init_reorg_db ailee_create_anchor ailee_l2_verify ailee_metrics
if [ "$COMPACT_EVERY" -gt 0 ] && ! command -v ldb >/dev/null; then
    echo "campaign_reader: ldb not found (Debian rocksdb-tools): no compaction" >&2
    COMPACT_EVERY=0
fi

KEEP=1 WRITER=
if [ -z "$DIR" ]; then
    DIR=$(mktemp -d)
    KEEP=0
else
    mkdir -p "$DIR"
    [ -z "$(ls -A "$DIR")" ] || die "--dir $DIR is not empty"
fi
cleanup() {
    touch "$DIR/stop" 2>/dev/null || true
    [ -z "$WRITER" ] || wait "$WRITER" 2>/dev/null || true
    [ "$KEEP" -eq 1 ] || rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
D=$DIR/data P=$DIR/data/reorg_db F=$DIR/data/l2_snapshots.dat S=$DIR/state.json
STOP=$DIR/stop LOGS=$DIR/logs
mkdir -p "$D" "$LOGS"
echo '{"ledger": {"balances": [{"peerId": "alice", "balance": 5}, {"peerId": "bob", "balance": 7}]}}' >"$S"
tool ailee_init_reorg_db --path "$P" -q >/dev/null
tool ailee_create_anchor --l2-state-file "$S" --snapshot-file "$F" --db-path "$P" --timestamp-ms 1 -q >/dev/null

# The writer: one more anchor per run (a new timestamp), until $STOP exists.
# Its runs and failures go to files the summary reads.
writer() {
    local i=1 fails=0 compactions=0
    while [ ! -e "$STOP" ]; do
        i=$((i + 1))
        if ! tool ailee_create_anchor --l2-state-file "$S" --timestamp-ms "$i" --db-path "$P" -q \
            >/dev/null 2>"$LOGS/writer.err"; then
            fails=$((fails + 1))
            cp "$LOGS/writer.err" "$LOGS/writer.fail.$fails"
        fi
        if [ "$COMPACT_EVERY" -gt 0 ] && [ $(((i - 1) % COMPACT_EVERY)) -eq 0 ]; then
            compactions=$((compactions + 1))
            if ! ldb --db="$P" --ignore_unknown_options compact >/dev/null 2>"$LOGS/writer.err"; then
                fails=$((fails + 1))
                cp "$LOGS/writer.err" "$LOGS/writer.fail.$fails"
            fi
        fi
        echo "$((i - 1)) $fails $compactions" >"$LOGS/writer.count"
    done
}
writer &
WRITER=$!
# The readers start once the writer has written (a count, not a delay).
until [ -s "$LOGS/writer.count" ]; do
    kill -0 "$WRITER" 2>/dev/null || die "the writer stopped before its first run"
done

echo "campaign_reader: seed $SEED, $RUNS reader runs beside ailee_create_anchor --db-path; dir $DIR" >&2
RANDOM=$SEED
runs=0 alarms=0 check_runs=0 verify_runs=0 monitor_runs=0
alarm() {
    alarms=$((alarms + 1))
    if [ "$alarms" -le 10 ]; then
        echo "FALSE ALARM (run $runs, $1, exit $2):" >&2
        sed 's/^/    /' "$LOGS/reader.err" "$LOGS/reader.out" >&2
    fi
}
for ((n = 0; n < RUNS; n++)); do
    runs=$((runs + 1))
    r=$RANDOM
    if [ "$MONITOR_EVERY" -gt 0 ] && [ $((r % MONITOR_EVERY)) -eq 0 ]; then
        monitor_runs=$((monitor_runs + 1))
        rc=0
        tool ailee_metrics monitor --data-dir "$D" >"$LOGS/reader.out" 2>"$LOGS/reader.err" || rc=$?
        # Its one expected warning here is "no backup found" (exit 1).
        if [ "$rc" -ge 2 ] || cat "$LOGS/reader.out" "$LOGS/reader.err" | grep -v 'no backup found' |
            grep -qiE 'warning|error|damaged'; then
            alarm monitor "$rc"
        fi
    elif [ $((r % 2)) -eq 0 ]; then
        check_runs=$((check_runs + 1))
        rc=0
        tool ailee_init_reorg_db --path "$P" --check >"$LOGS/reader.out" 2>"$LOGS/reader.err" || rc=$?
        [ "$rc" -eq 0 ] || alarm check "$rc"
    else
        verify_runs=$((verify_runs + 1))
        rc=0
        tool ailee_l2_verify --snapshot "$F" --reorg-db "$P" >"$LOGS/reader.out" 2>"$LOGS/reader.err" || rc=$?
        [ "$rc" -eq 0 ] || alarm verify "$rc"
    fi
    if [ $((runs % 1000)) -eq 0 ]; then
        echo "campaign_reader: $runs runs, $alarms false alarm(s)" >&2
    fi
done
touch "$STOP"
wait "$WRITER"
WRITER=
read -r writes writer_fails compactions <"$LOGS/writer.count"
final=0
tool ailee_init_reorg_db --path "$P" --check >/dev/null 2>"$LOGS/final.err" || final=$?

echo "seed                      $SEED"
echo "reader runs               $runs (check $check_runs, l2_verify $verify_runs, monitor $monitor_runs)"
echo "writer runs               $writes (and $compactions ldb compact)"
echo "false alarms (must be 0)  $alarms"
echo "writer failures (must be 0) $writer_fails"
echo "final check exit (must be 0) $final"
if [ "$writer_fails" -gt 0 ]; then
    echo "first writer failure:" >&2
    sed 's/^/    /' "$LOGS/writer.fail.1" >&2
fi
[ "$alarms" -eq 0 ] && [ "$writer_fails" -eq 0 ] && [ "$final" -eq 0 ]
