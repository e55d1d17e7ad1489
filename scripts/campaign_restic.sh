#!/usr/bin/env bash
# campaign_restic.sh — the kill campaign of issue 22 with the restic child in
# the picture. On a scratch data directory (a node-like snapshot file of
# --size-mb MB, a reorg_db made by ailee_init_reorg_db) it makes a first
# backup, then --runs times: starts a victim, waits (reading /proc) until a
# restic child of it runs the wanted phase, waits a random 0–300 ms (or not),
# and stops it:
#   victims  ailee_backup (phases backup, forget, prune; every other run with
#            --keep 1 and every other tier 0), ailee_backup --verify latest
#            and --verify latest --read-data (check, snapshots, restore),
#            ailee_restore (snapshots, restore). "snapshots" is the listing
#            that runs beside restic restore; "restore" is restic restore once
#            that listing has ended
#   signals  SIGINT or SIGTERM to the tool's PID, SIGINT or SIGTERM to its
#            process group (started with setsid), SIGKILL of the tool alone
# Victims, signals and phases are taken in turn (every victim and signal in
# any ten runs, every combination in 60); the delay is random. After each kill it records the tool's exit
# status (death by that signal, or 0 when the work had committed), waits up
# to 10 s for every restic process on the repository to be gone, counts the
# files in the repository's locks/, checks that a signalled run left no
# scratch files, that the runbook copy is the old or the new one, and that
# after a restore each of l2_snapshots.dat and reorg_db is wholly the old
# state or wholly the backup (both old after a signal death, both the backup
# after exit 0, the old state kept in recovery_*); then the next hourly
# `ailee_backup --data-dir D` must exit 0 and leave no lock, and every K runs
# `restic check` must pass. A failure prints its case and the campaign goes
# on; a summary table ends it. Exit 1 if any figure marked "must be 0" is not.
# Usage: scripts/campaign_restic.sh [--runs N] [--dir D] [--size-mb M]
#                                   [--check-every K] [--seed S]
#   --runs N         kills to attempt (default 120)
#   --dir D          scratch directory (absent or empty; kept). Default: a
#                    mktemp directory, removed at the end
#   --size-mb M      snapshot file size (default 128; each run appends ~300 KB)
#   --check-every K  restic check every K runs, and at the end (default 10)
#   --seed S         seed of the random delays (default: random; printed)
# Tools come from $AILEE_BIN when it is set, else the release build
# (scripts/env.sh); restic from PATH. Needs python3, sha256sum, setsid and
# env --default-signal (coreutils 8.31+). About 6–8 s per run on 2 cores with
# the default size: run the full campaign in the background.
set -euo pipefail
source "$(dirname "$(readlink -f "$0")")/lib.sh"
use_build
std_args "$@"
export LC_ALL=C

RUNS=120 DIR= SIZE_MB=128 CHECK_EVERY=10 SEED=
while [ $# -gt 0 ]; do
    case $1 in
        --runs|--dir|--size-mb|--check-every|--seed)
            [ $# -ge 2 ] || die "$1 needs a value"
            case $1 in
                --runs) RUNS=$2 ;;
                --dir) DIR=$2 ;;
                --size-mb) SIZE_MB=$2 ;;
                --check-every) CHECK_EVERY=$2 ;;
                --seed) SEED=$2 ;;
            esac
            shift 2 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
for v in RUNS SIZE_MB CHECK_EVERY; do
    [[ ${!v} =~ ^[1-9][0-9]{0,5}$ ]] || die "--$(tr 'A-Z_' 'a-z-' <<< "$v") takes a whole number from 1"
done
[ -z "$SEED" ] || [[ $SEED =~ ^[0-9]{1,9}$ ]] || die "--seed takes a whole number"
need_tools ailee_backup ailee_restore ailee_init_reorg_db
command -v restic >/dev/null || die "restic is not on PATH (Debian: apt-get install restic)"
command -v setsid >/dev/null || die "setsid is not on PATH (util-linux)"
env --default-signal=INT true 2>/dev/null || die "env --default-signal is needed (coreutils 8.31 or later)"
BACKUP=$(tool_path ailee_backup) RESTORE=$(tool_path ailee_restore)
# The tools run the real restic, with no repository or password from the caller.
unset AILEE_RESTIC RESTIC_REPOSITORY RESTIC_REPOSITORY_FILE RESTIC_PASSWORD RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND

VICTIM_PID=
if [ -n "$DIR" ]; then
    mkdir -p "$DIR"
    [ -z "$(ls -A "$DIR")" ] || die "--dir $DIR is not empty"
    W=$(cd "$DIR" && pwd)
    trap '[ -z "$VICTIM_PID" ] || kill -9 "$VICTIM_PID" 2>/dev/null || true' EXIT
else
    W=$(mktemp -d "${TMPDIR:-/var/tmp}/ailee-campaign-restic.XXXXXX")
    trap '[ -z "$VICTIM_PID" ] || kill -9 "$VICTIM_PID" 2>/dev/null || true; rm -rf "$W"' EXIT
fi
export HOME=$W/home RESTIC_CACHE_DIR=$W/cache
D=$W/ailee REPO=$W/ailee/backups/repo PW=$W/ailee/backups/restic-password LOGS=$W/logs
mkdir -p "$HOME" "$D" "$LOGS"
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
RANDOM=$SEED
T0=$SECONDS

# Sleeping without a process per nap: a read that times out on a pipe nobody writes.
exec {NAP}<> <(:)
nap() { read -r -t "$1" -u "$NAP" _ || true; }
now_ms() { local t=${EPOCHREALTIME/./}; NOW=$((10#$t / 1000)); }

# A node-like snapshot file (scripts/gen_node_snapshots.py, as the backup
# benchmark makes it): each snapshot the full state, a few balances changed,
# a valid anchor.
GROW=$((300 * 1024))
grow() { python3 "$ROOT/scripts/gen_node_snapshots.py" "$D/l2_snapshots.dat" 0 "$GROW" 1 "$W/gen.state" campaign; }

# Fingerprints: a file, and a database directory (every file but LOCK).
fp_file() { if [ -f "$1" ]; then sha256sum < "$1" | cut -c1-64; else echo none; fi; }
fp_tree() {
    if [ -d "$1" ]; then
        (cd "$1" && find . -type f ! -name LOCK -print0 | sort -z | xargs -0 -r sha256sum) | sha256sum | cut -c1-64
    else
        echo none
    fi
}

# alive PID: running (not gone, not a zombie waiting for us).
alive() {
    local s
    read -r s 2>/dev/null < "/proc/$1/stat" || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}

# subcommand PID: SUB = the restic subcommand PID runs ("" if unreadable).
subcommand() {
    local -a a=()
    local i=1
    SUB=
    mapfile -d '' -t a 2>/dev/null < "/proc/$1/cmdline" || return 0
    while [ "$i" -lt "${#a[@]}" ]; do
        case ${a[i]} in
            --repo|-r|--password-file|-p|-o|--option|--repository-file|--password-command|--cache-dir|--key-hint)
                i=$((i + 2)) ;;
            -*) i=$((i + 1)) ;;
            *) SUB=${a[i]}; return 0 ;;
        esac
    done
}

# restic_children PID: KIDS = "pid:subcommand" of its restic children.
restic_children() {
    local f c comm
    local -a k
    KIDS=()
    for f in /proc/"$1"/task/*/children; do
        k=()
        read -r -a k 2>/dev/null < "$f" || true
        for c in "${k[@]}"; do
            read -r comm 2>/dev/null < "/proc/$c/comm" || continue
            [ "$comm" = restic ] || continue
            subcommand "$c"
            KIDS+=("$c:$SUB")
        done
    done
}

# repo_restics: ORPH = PIDs of every restic process naming our repository.
repo_restics() {
    local p comm
    local -a a
    ORPH=()
    for p in /proc/[0-9]*; do
        read -r comm 2>/dev/null < "$p/comm" || continue
        [ "$comm" = restic ] || continue
        a=()
        mapfile -d '' -t a 2>/dev/null < "$p/cmdline" || continue
        [[ "${a[*]}" == *"$REPO"* ]] && ORPH+=("${p#/proc/}")
    done
    return 0
}

# wait_restics_gone SECONDS: GONE_MS = how long until none was left (or the
# bound); ORPH = those left. Those still there are then killed (after the
# count), so that the next runs are not disturbed.
wait_restics_gone() {
    local t0
    now_ms; t0=$NOW
    while :; do
        repo_restics
        now_ms
        [ "${#ORPH[@]}" -gt 0 ] || break
        [ $((NOW - t0)) -lt $(($1 * 1000)) ] || break
        nap 0.02
    done
    GONE_MS=$((NOW - t0))
}

locks() {
    local -a l
    shopt -s nullglob
    l=("$REPO"/locks/*)
    shopt -u nullglob
    echo "${#l[@]}"
}

# Scratch files a run that died by SIGINT/SIGTERM must not leave (names
# without spaces: the tools make them).
leftovers() {
    local p
    shopt -s nullglob dotglob
    for p in "$D"/.ailee-restore.* "$D"/.ailee_restore.journal "$D"/.*.ailee-tmp.* \
        "$D"/backups/.ailee-verify.* "$D"/backups/.*.ailee-tmp.* "$D"/backups/.stage/.*.ailee-tmp.*; do
        [ ! -e "$p" ] || printf '%s ' "${p#"$D"/}"
    done
    shopt -u nullglob dotglob
}

# fail WHY: one failure of the current case, printed with it.
fail() { FAILS=$((FAILS + 1)); echo "FAIL $case_text: $*" >&2; }

# no_orphans WHAT [AT]: waits up to 10 s for the repository's restics to end
# (wait_restics_gone: GONE_MS); one still running is an orphan, counted in
# ORPHANS, failed (restic still running 10 s after WHAT) and killed.
no_orphans() {
    wait_restics_gone 10
    [ "${#ORPH[@]}" -gt 0 ] || return 0
    ORPHANS=$((ORPHANS + ${#ORPH[@]}))
    fail "restic still running 10 s after $1: ${ORPH[*]}${2:-}"
    kill -s KILL "${ORPH[@]}" 2>/dev/null || true
}

# state FP OLD RESTORED: which of the two FP is.
state() { if [ "$1" = "$2" ]; then echo old; elif [ "$1" = "$3" ]; then echo restored; else echo neither; fi; }

restic_check() {
    CHECKS=$((CHECKS + 1))
    if ! restic --repo "$REPO" --password-file "$PW" check > "$LOGS/check-$1.log" 2>&1; then
        CHECK_FAIL=$((CHECK_FAIL + 1))
        echo "FAIL restic check after run $1:" >&2
        tail -n 5 "$LOGS/check-$1.log" >&2
    fi
}

# The cases, taken in turn: run n (from 0) stops victim n mod 4 with signal
# n mod 5 at its phase n/4 mod (its phase count), so that every ten runs try
# every victim and every signal, and 60 runs every combination; a backup
# run keeps only the last backup when n/4 is even (forget and prune then
# remove the others), else the default tiers (which remove this hour's older one).
VICTIMS=(backup verify verify-read-data restore)
declare -A PHASES=([backup]="backup forget prune" [verify]="check snapshots restore"
    [verify-read-data]="check snapshots restore" [restore]="snapshots restore")
SIGNALS=(SIGINT SIGTERM SIGINT-group SIGTERM-group SIGKILL)

declare -A KILLS=() MISSED=() STATUSES=()
LOCKS_AFTER_TOOL=0 RUNS_WITH_LOCKS=0 LOCKS_AFTER_NEXT=0 NEXT_FAIL=0 ORPHANS=0 CHECKS=0 CHECK_FAIL=0
case_text=
BAD_STATUS=0 BAD_RESTORE=0 BAD_COPY=0 LEFT=0 FAILS=0 MAX_GONE_MS=0 NKILLS=0 NMISSED=0

echo "campaign_restic: $RUNS runs, ${SIZE_MB} MB snapshot file, seed $SEED, tools from $(dirname "$BACKUP"), scratch $W" >&2
echo "generating the ${SIZE_MB} MB snapshot file ..." >&2
python3 "$ROOT/scripts/gen_node_snapshots.py" "$D/l2_snapshots.dat" $((SIZE_MB * 1024 * 1024)) "$GROW" 1 "$W/gen.state" campaign
tool ailee_init_reorg_db --path "$D/reorg_db" >/dev/null
"$BACKUP" --data-dir "$D" > "$LOGS/first.out" 2> "$LOGS/first.err" || {
    cat "$LOGS/first.err" >&2
    die "the first backup failed"
}

for i in $(seq 1 "$RUNS"); do
    n=$((i - 1))
    victim=${VICTIMS[n % 4]} sig=${SIGNALS[n % 5]}
    read -r -a ph <<< "${PHASES[$victim]}"
    phase=${ph[(n / 4) % ${#ph[@]}]}
    delay=0
    [ $((RANDOM % 3)) -eq 0 ] || delay=$((RANDOM % 301))
    args=(--data-dir "$D")
    exe=$BACKUP
    case $victim in
        backup) [ $((n / 4 % 2)) -ne 0 ] || args+=(--keep 1 --keep-hourly 0 --keep-daily 0 --keep-weekly 0 --keep-monthly 0) ;;
        verify) args+=(--verify latest) ;;
        verify-read-data) args+=(--verify latest --read-data) ;;
        restore) exe=$RESTORE ;;
    esac
    case_text="run $i: $(basename "$exe") ${args[*]:2} — $sig at restic $phase + ${delay} ms"

    t_run=$SECONDS
    # The node appended a snapshot since the last backup.
    grow
    if [ "$victim" = restore ]; then
        old_l2=$(fp_file "$D/l2_snapshots.dat") old_db=$(fp_tree "$D/reorg_db")
        # What the backup restores to: restored into a scratch directory.
        rm -rf "$W/scratch"; mkdir "$W/scratch"
        "$RESTORE" --data-dir "$W/scratch" --repo "$REPO" --password-file "$PW" > /dev/null 2> "$LOGS/scratch-$i.err" ||
            fail "restoring the backup into a scratch directory failed: $(tail -n 1 "$LOGS/scratch-$i.err")"
        new_l2=$(fp_file "$W/scratch/l2_snapshots.dat") new_db=$(fp_tree "$W/scratch/reorg_db")
        rm -rf "$W/scratch"
    elif [ "$victim" = backup ]; then
        old_bak=$(fp_file "$D/backups/l2_snapshots_latest.dat.bak") live=$(fp_file "$D/l2_snapshots.dat")
    fi

    # Those of a SIGKILLed run before it are reaped by the next run of its kind.
    left_before=$(leftovers)

    # Start it: SIGINT and SIGQUIT back to their defaults (bash starts
    # background commands with them ignored, and an ignored SIGINT stays so).
    case $sig in
        *-group) env --default-signal=INT,QUIT setsid "$exe" "${args[@]}" > "$LOGS/run-$i.out" 2> "$LOGS/run-$i.err" & ;;
        *) env --default-signal=INT,QUIT "$exe" "${args[@]}" > "$LOGS/run-$i.out" 2> "$LOGS/run-$i.err" & ;;
    esac
    VICTIM_PID=$!
    pid=$VICTIM_PID

    # The moment: a restic child of the tool in the wanted phase ("restore":
    # restic restore alone, once the listing that runs beside it has ended).
    seen=0 listed=0
    while alive "$pid"; do
        restic_children "$pid"
        running=" ${KIDS[*]#*:} "
        [[ $running != *" snapshots "* ]] || listed=1
        if [[ $running == *" $phase "* ]]; then
            if [ "$phase" != restore ] || { [ "$listed" -eq 1 ] && [[ $running != *" snapshots "* ]]; }; then
                seen=1
                break
            fi
        fi
        nap 0.003
    done
    killed=0 at=
    if [ "$seen" -eq 1 ]; then
        [ "$delay" -eq 0 ] || nap "$(printf '0.%03d' "$delay")"
        if alive "$pid"; then
            restic_children "$pid"
            at=" (restic then:$(for k in "${KIDS[@]}"; do k=${k#*:}; printf ' %s' "${k:-?}"; done))"
            case $sig in
                SIGINT) kill -s INT "$pid" ;;
                SIGTERM) kill -s TERM "$pid" ;;
                SIGINT-group|SIGTERM-group)
                    read -r st < "/proc/$pid/stat"
                    st=${st##*) }; read -r _ _ pgid _ <<< "$st"
                    [ "$pgid" = "$pid" ] || fail "the tool is not its group's leader (group $pgid)"
                    kill -s "${sig%-group}" -- "-$pid" ;;
                SIGKILL) kill -s KILL "$pid" ;;
            esac
            killed=1
        fi
    fi
    # The tool ends (restic is given 15 s to stop).
    now_ms; t0=$NOW
    while alive "$pid"; do
        now_ms
        if [ $((NOW - t0)) -gt 60000 ]; then
            fail "the tool did not end within 60 s of the signal: killed"
            kill -s KILL "$pid" 2>/dev/null || true
        fi
        nap 0.01
    done
    status=0
    wait "$pid" 2>/dev/null || status=$?
    VICTIM_PID=
    key="$victim|$phase|$sig"
    if [ "$killed" -eq 1 ]; then
        KILLS[$key]=$((${KILLS[$key]:-0} + 1)); NKILLS=$((NKILLS + 1))
    else
        MISSED[$key]=$((${MISSED[$key]:-0} + 1)); NMISSED=$((NMISSED + 1))
    fi
    sk="$sig $status"
    [ "$killed" -eq 1 ] || sk="no kill $status"
    STATUSES[$sk]=$((${STATUSES[$sk]:-0} + 1))
    want=0
    if [ "$killed" -eq 1 ]; then
        case $sig in SIGINT*) want=130 ;; SIGTERM*) want=143 ;; SIGKILL) want=137 ;; esac
    fi
    if [ "$status" -ne 0 ] && [ "$status" -ne "$want" ]; then
        BAD_STATUS=$((BAD_STATUS + 1))
        fail "exit $status (expected $want or 0)$at; stderr: $(tail -n 2 "$LOGS/run-$i.err" | tr '\n' ' ')"
    fi

    # No restic left behind, then the locks it left.
    no_orphans "the tool ended" "$at"
    gone_ms=$GONE_MS
    [ "$gone_ms" -le "$MAX_GONE_MS" ] || MAX_GONE_MS=$gone_ms
    nl=$(locks)
    if [ "$nl" -gt 0 ]; then
        LOCKS_AFTER_TOOL=$((LOCKS_AFTER_TOOL + nl)); RUNS_WITH_LOCKS=$((RUNS_WITH_LOCKS + 1))
    fi
    left=
    if [ "$status" -eq 130 ] || [ "$status" -eq 143 ]; then
        for p in $(leftovers); do
            [[ " $left_before " == *" $p "* ]] || left+="$p "
        done
        if [ -n "$left" ]; then
            LEFT=$((LEFT + 1))
            fail "died by the signal but left $left"
        fi
    fi

    # The live files: each wholly the old state or wholly the backup.
    if [ "$victim" = restore ]; then
        l2=$(fp_file "$D/l2_snapshots.dat") db=$(fp_tree "$D/reorg_db")
        s_l2=$(state "$l2" "$old_l2" "$new_l2") s_db=$(state "$db" "$old_db" "$new_db")
        bad=
        case $status in
            0) [ "$s_l2 $s_db" = "restored restored" ] || bad="exit 0 but l2_snapshots.dat $s_l2, reorg_db $s_db"
               if [ -z "$bad" ]; then
                   kept=0
                   for r in "$D"/recovery_*; do
                       [ -d "$r" ] && [ "$(fp_file "$r/l2_snapshots.dat")" = "$old_l2" ] &&
                           [ "$(fp_tree "$r/reorg_db")" = "$old_db" ] && kept=1
                   done
                   [ "$kept" -eq 1 ] || bad="exit 0 but the old state is in no recovery_* directory"
               fi ;;
            137) [ "$s_l2" != neither ] && [ "$s_db" != neither ] || bad="l2_snapshots.dat $s_l2, reorg_db $s_db" ;;
            *) [ "$s_l2 $s_db" = "old old" ] || bad="exit $status but l2_snapshots.dat $s_l2, reorg_db $s_db (not rolled back)" ;;
        esac
        if [ -n "$bad" ]; then
            BAD_RESTORE=$((BAD_RESTORE + 1))
            fail "$bad$at"
        fi
        rm -rf "$D"/recovery_*
    elif [ "$victim" = backup ]; then
        bak=$(fp_file "$D/backups/l2_snapshots_latest.dat.bak")
        if [ "$bak" != "$old_bak" ] && [ "$bak" != "$live" ]; then
            BAD_COPY=$((BAD_COPY + 1))
            fail "the runbook copy is neither the previous one nor the live file"
        fi
        if [ "$(fp_file "$D/l2_snapshots.dat")" != "$live" ]; then
            BAD_COPY=$((BAD_COPY + 1))
            fail "the live file changed"
        fi
    fi

    # The next hourly run, with no manual step.
    next=0
    "$BACKUP" --data-dir "$D" > "$LOGS/next-$i.out" 2> "$LOGS/next-$i.err" || next=$?
    if [ "$next" -ne 0 ]; then
        NEXT_FAIL=$((NEXT_FAIL + 1))
        fail "the next ailee_backup --data-dir exited $next (killed run: exit $status$at): $(tr '\n' ' ' < "$LOGS/next-$i.err" | cut -c1-400)"
    fi
    no_orphans "the next run ended"
    nl2=$(locks)
    if [ "$nl2" -gt 0 ]; then
        LOCKS_AFTER_NEXT=$((LOCKS_AFTER_NEXT + nl2))
        fail "$nl2 lock(s) in the repository after the next run: $(ls "$REPO/locks" | tr '\n' ' ')"
    fi
    [ $((i % CHECK_EVERY)) -ne 0 ] || restic_check "$i"
    printf '%s: %s, exit %s, restic gone after %s ms, locks %s → next run exit %s, locks %s (%s s)\n' \
        "$case_text" "$([ "$killed" -eq 1 ] && echo "killed$at" || echo "not reached (the tool ended first)")" \
        "$status" "$gone_ms" "$nl" "$next" "$nl2" "$((SECONDS - t_run))" >&2
done
[ $((RUNS % CHECK_EVERY)) -eq 0 ] || restic_check final

echo
echo "== campaign_restic: $RUNS runs in $((SECONDS - T0)) s, snapshot file $(($(stat -c %s "$D/l2_snapshots.dat") / 1048576)) MB, seed $SEED, $(nproc) cores, $(restic version | cut -d' ' -f1-2)"
echo "kills per (victim, phase, signal) [+N: the phase never came or the tool ended within the delay]:"
printf '%-17s %-10s' victim phase
for s in "${SIGNALS[@]}"; do printf ' %13s' "$s"; done
echo
for v in "${VICTIMS[@]}"; do
    for p in ${PHASES[$v]}; do
        printf '%-17s %-10s' "$v" "$p"
        for s in "${SIGNALS[@]}"; do
            c=${KILLS[$v|$p|$s]:-0}
            m=${MISSED[$v|$p|$s]:-0}
            [ "$m" -eq 0 ] || c="$c+$m"
            printf ' %13s' "$c"
        done
        echo
    done
done
printf 'exit statuses:'
for k in $(printf '%s\n' "${!STATUSES[@]}" | tr ' ' '=' | sort); do printf ' %s×%s' "${k//=/ }" "${STATUSES[${k//=/ }]}"; done
echo
row() { printf '%-58s %s\n' "$1" "$2"; }
row "runs" "$RUNS"
row "kills (phase reached)" "$NKILLS"
row "not reached (the tool ended first)" "$NMISSED"
row "leftover locks after the tool ended (runs)" "$LOCKS_AFTER_TOOL ($RUNS_WITH_LOCKS)"
row "restic gone after the tool ended, at most (ms)" "$MAX_GONE_MS"
row "leftover locks after the next run (must be 0)" "$LOCKS_AFTER_NEXT"
row "next-run failures (must be 0)" "$NEXT_FAIL"
row "orphaned restic processes (must be 0)" "$ORPHANS"
row "restic check failures (must be 0)" "$CHECK_FAIL of $CHECKS"
row "unexpected exit statuses (must be 0)" "$BAD_STATUS"
row "signalled runs that left scratch files (must be 0)" "$LEFT"
row "restores not wholly old or restored (must be 0)" "$BAD_RESTORE"
row "runbook copy or live file not whole (must be 0)" "$BAD_COPY"
row "failures printed above" "$FAILS"
[ $((LOCKS_AFTER_NEXT + NEXT_FAIL + ORPHANS + CHECK_FAIL + BAD_STATUS + LEFT + BAD_RESTORE + BAD_COPY)) -eq 0 ]
