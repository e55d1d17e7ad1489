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
source "$(dirname "$(readlink -f "$0")")/env.sh"
cd "$ROOT"
AILEE_KILL_ALL=1 cargo test --release --test backup -- --nocapture --test-threads 1 \
    "${@:-killed}" 2>&1 | grep -E 'survived|^test |test result|panicked|assert|left|right|FAILED'
