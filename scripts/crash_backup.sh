#!/usr/bin/env bash
# crash_backup.sh — the full kill campaign of ailee_restore and ailee_backup:
# SIGKILL at every call of every writing, syncing, renaming, linking and
# ownership syscall (strace fault injection), and SIGINT/SIGTERM/SIGHUP at
# every rename, fsync, write, unlink and mkdir; after each, l2_snapshots.dat and reorg_db must
# be wholly the old state or wholly the backup, the old state never lost, and
# a rerun must complete. `cargo test` runs a bounded sample of the same tests.
# Long (tens of minutes to hours on 2 cores): run it in the background.
# Usage: scripts/crash_backup.sh [TEST_FILTER] (default: the SIGKILL campaigns;
# `interrupted` for the signal campaign).
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$(readlink -f "$0")")/env.sh"
cd "$ROOT"
# The backup module's tests whose names hold a filter (the integration crate
# holds every tool's tests; `killed` alone would also run crash::).
filters=()
for f in "${@:-killed}"; do filters+=(-e "$f"); done
mapfile -t tests < <(cargo test --release --test integration -- --list 2>/dev/null |
    sed -n 's/: test$//p' | grep '^backup::' | grep -F "${filters[@]}")
[ "${#tests[@]}" -gt 0 ] || { echo "crash_backup.sh: no backup test matches: $*" >&2; exit 1; }
AILEE_KILL_ALL=1 cargo test --release --test integration -- --nocapture --test-threads 1 \
    --exact "${tests[@]}" 2>&1 | grep -E 'survived|^test |test result|panicked|assert|left|right|FAILED'
