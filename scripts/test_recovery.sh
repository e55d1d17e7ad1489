#!/usr/bin/env bash
# The recovery drill (the help text is USAGE below).
set -uo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
source "$here/env.sh"
source "$here/lib.sh"
IFS= read -r -d '' USAGE <<'EOF' || true
test_recovery.sh --mode crash|reorg|corruption|all [--data-dir D] [--reorg-depth N] [--corrupt-snapshot]
                 [--metrics-dir DIR]

Recovery drill on a scratch data directory: builds real state with the tools
(anchored snapshots, a reorg database, a regtest Bitcoin node for the reorg
mode), injects the failure, runs the runbook's procedure with the tools and
prints PASS/FAIL per step with the measured recovery time.
  crash       a writer is SIGKILLed in the middle of an append (torn tail),
              once the file has grown (never after a fixed delay); Procedure 1,
              then the node's next append and a full verify. With
              --corrupt-snapshot the newest complete snapshot is corrupted
              before the crash as well, so Procedure 1 fails (exit 2) and the
              runbook's extract-and-loop restores the last valid snapshot.
  reorg       a reorg of --reorg-depth blocks (default 3) on the regtest node
              under an anchored, confirmed snapshot; resync, anchor status,
              verify --reorg-db, then Procedure 3 (rebuild reorg_db)
  corruption  the newest snapshot is corrupted (always, in this mode) and a
              reorg_db record too; the "state root mismatch" loop, then
              ailee_restore of the hourly backup
With --data-dir D the drill works in D/crash, D/reorg and D/corruption (per
mode) and deletes such a directory at the start of its mode only if the drill
created it (it holds the marker file .ailee-drill the drill wrote) or it is
empty: any other existing one is refused before anything runs (exit 1),
nothing deleted. Without --data-dir everything is in a temporary directory.
With --metrics-dir, DIR/ailee_drill.prom gets each mode's recovery time and
pass/fail (ailee_drill_recovery_seconds, ailee_drill_success{mode=...}).
Exit 0 only if every step passed. Installs what is missing and builds the tools.
EOF
std_args "$@"
mode= data= depth=3 corrupt=0 metrics=
while [ $# -gt 0 ]; do
    case $1 in
        --mode) mode=$2; shift 2 ;;
        --data-dir) data=$2; shift 2 ;;
        --reorg-depth) depth=$2; shift 2 ;;
        --corrupt-snapshot) corrupt=1; shift ;;
        --metrics-dir) metrics=$2; shift 2 ;;
        *) echo "test_recovery.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
case $mode in crash|reorg|corruption|all) ;; *) echo "usage: test_recovery.sh --mode crash|reorg|corruption|all [--data-dir D] [--reorg-depth N] [--corrupt-snapshot]" >&2; exit 1 ;; esac
[[ $depth =~ ^[1-9][0-9]*$ ]] || { echo "--reorg-depth must be a positive number" >&2; exit 1; }
if [ -n "$metrics" ]; then
    { mkdir -p "$metrics" 2>/dev/null && [ -d "$metrics" ]; } || { echo "--metrics-dir $metrics: not a directory" >&2; exit 1; }
fi

# The drill's own directories: D/<mode> is deleted and re-created only when
# the drill made it (marker file) or it is empty; anything else is refused.
marker=.ailee-drill
ours_or_empty() { # DIR — true if DIR may be deleted by the drill
    local d=$1
    [ -e "$d" ] || [ -L "$d" ] || return 0
    [ -d "$d" ] && [ ! -L "$d" ] || return 1
    [ -f "$d/$marker" ] && [ ! -L "$d/$marker" ] && return 0
    [ -z "$(ls -A "$d" 2>/dev/null)" ] && [ -r "$d" ]
}
fresh_dir() { # DIR — (re)creates DIR for a mode, with the marker
    ours_or_empty "$1" || { echo "test_recovery.sh: $1 was not created by the drill; refusing to delete it" >&2; return 1; }
    rm -rf "$1" && mkdir -p "$1" && : > "$1/$marker"
}
if [ -n "$data" ]; then
    case $mode in all) modes=(crash corruption reorg) ;; *) modes=("$mode") ;; esac
    for m in "${modes[@]}"; do
        ours_or_empty "$data/$m" || {
            echo "test_recovery.sh: $data/$m exists and was not created by the drill (no $marker file in it) and is not empty: refusing to delete it; choose another --data-dir or move it aside" >&2
            exit 1
        }
    done
fi

"$ROOT/scripts/setup.sh" || exit 1
(cd "$ROOT" && cargo build --release --workspace --bins -q) || { echo "build failed" >&2; exit 1; }
export PATH="$AILEE_BIN:$ROOT/scripts:$PATH"
unset AILEE_BIN   # the scripts find the tools on PATH, as an operator's would be
scratch=$(mktemp -d "${TMPDIR:-/tmp}/ailee-drill.XXXXXX")
base=${data:-$scratch/data}
mkdir -p "$base"
pass=0 fail=0
node_pid=

cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
    rm -rf "$scratch"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
# step NAME COMMAND [ARGS…] — runs COMMAND (a function or a tool, never a
# composed string) in a subshell with errexit on, so every command of a step
# counts, not only its last; PASS if it exits 0. Not called from a condition:
# bash ignores errexit in a subshell that is one.
step() {
    local name=$1 t0 rc=0
    shift
    t0=$(now_ms)
    ( set -e; "$@" ) >"$scratch/step.out" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
        printf '  PASS  %-64s %6d ms\n' "$name" $(( $(now_ms) - t0 ))
        pass=$((pass + 1))
    else
        printf '  FAIL  %-64s %6d ms\n' "$name" $(( $(now_ms) - t0 ))
        sed 's/^/        | /' "$scratch/step.out" | tail -n 15
        fail=$((fail + 1))
    fi
}

# The checks the steps are made of.
says() { # TEXT COMMAND… — COMMAND exits 0 and its stdout holds TEXT
    local text=$1 out
    shift
    out=$("$@")
    grep -qF -- "$text" <<<"$out"
}
exits_saying() { # CODE TEXT COMMAND… — COMMAND exits CODE and its stdout or stderr holds TEXT
    local want=$1 text=$2 rc=0
    shift 2
    "$@" >"$scratch/out" 2>&1 || rc=$?
    cat "$scratch/out"
    [ $rc -eq "$want" ] && grep -qF -- "$text" "$scratch/out"
}
exits() { # CODE COMMAND… — COMMAND exits CODE
    local want=$1 rc=0
    shift
    "$@" || rc=$?
    [ $rc -eq "$want" ]
}
above() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt "$2" ]; } # N M — N is a number above M
torn_tail() { [[ $(tail -c 13 "$1") != *END_SNAPSHOT* ]]; } # FILE — ends in a torn snapshot

# A JSON state whose peg-outs name the given anchor (none for the first).
state_json() { # N PREV_ANCHOR
    local n=$1 prev=$2 i balances= pegouts=
    for i in $(seq 0 19); do
        balances+="${balances:+, }{\"peerId\": \"peer$i\", \"balance\": $((1000 * n + i))}"
    done
    [ -z "$prev" ] || pegouts="{\"pegId\": \"out$n\", \"aileeSource\": \"peer3\", \"btcDest\": \"dst\", \"aileeBurnAmount\": 10, \"btcReleaseAmount\": 9, \"initiatedTime\": 1, \"completedTime\": 2, \"status\": 1, \"anchorCommitmentHash\": \"$prev\"}"
    printf '{"snapshotTimestampMs": %d, "ledger": {"balances": [%s], "escrows": [{"taskId": "task%d", "clientPeerId": "peer1", "amount": %d, "locked": true, "createdAt": %d}]}, ' \
        $((1700000000000 + n * 60000)) "$balances" "$n" "$n" "$n"
    printf '"bridge": {"pegins": [{"pegId": "in%d", "btcTxId": "%s", "vout": 0, "btcAmount": 5000, "btcSource": "src", "aileeDest": "peer2", "confirmations": 6, "initiatedTime": 1, "completedTime": 2, "status": 1}], "pegouts": [%s]}, ' \
        "$n" "$(printf 'ab%.0s' $(seq 32))" "$pegouts"
    printf '"orchestration": {"tasks": [{"taskId": "job%d", "taskType": 1, "priority": 2, "submitterId": "peer4", "submittedAtMs": 3, "payloadHash": "%s", "anchorCommitmentHash": ""}]}}\n' \
        "$n" "$(printf 'cd%.0s' $(seq 32))"
}
# anchor N snapshots into D (records them in D/reorg_db); prints nothing
make_history() { # D N
    local d=$1 n=$2 prev="" i
    for i in $(seq 1 "$n"); do
        prev=$(state_json "$i" "$prev" | ailee_create_anchor --l2-state-file - --snapshot-file "$d/l2_snapshots.dat" \
            --db-path "$d/reorg_db" --recovery-metadata "epoch=$i" --timestamp-ms $((1700000000000 + i * 60000)) --json \
            | json_get hash)
    done
}
init_and_anchor() { # D N
    ailee_init_node --data-dir "$1"
    make_history "$1" "$2"
}
root_of() { ailee_l2_verify -q --snapshot "$1" --index "$2" --json | json_get root; }

# The runbook's "State root mismatch after recovery" loop in D, as written;
# then the restored file's root must be ROOT.
runbook_loop() { # D ROOT
    cd "$1"
    ailee_extract_snapshots ./l2_snapshots.dat ./snapshots/ >/dev/null
    for i in $(seq 10 -1 1); do
        snapshot="./snapshots/snapshot_${i}.dat"
        if ailee_l2_verify --snapshot "$snapshot" > /dev/null 2>&1; then
            echo "Found valid snapshot: $snapshot"
            cp "$snapshot" ./l2_snapshots.dat
            break
        fi
    done
    says "Computed L2StateRoot: $2" ailee_l2_verify --snapshot ./l2_snapshots.dat
}
# The node's next append after the crash: a snapshot whose peg-out names the
# newest anchor, appended and recorded; the file's newest snapshot verifies.
next_append() { # D
    local prev
    prev=$(ailee_l2_verify -q --snapshot "$1/l2_snapshots.dat" --json | json_get anchor_hash)
    state_json 6 "$prev" | ailee_create_anchor --l2-state-file - --snapshot-file "$1/l2_snapshots.dat" \
        --db-path "$1/reorg_db" --recovery-metadata epoch=6 -q >/dev/null
    ailee_l2_verify -q --snapshot "$1/l2_snapshots.dat" >/dev/null
}
count_ok() { # FILE N — ailee_l2_verify --all says OK for exactly N snapshots
    local out
    out=$(ailee_l2_verify -q --snapshot "$1" --all)
    [ "$(grep -c ': OK ' <<<"$out")" = "$2" ]
}

drill_crash() {
    echo "== crash: a writer killed in the middle of an append"
    local d=$base/crash; fresh_dir "$d" || { fail=$((fail + 1)); return; }
    step "initialise the data directory (ailee_init_node)" ailee_init_node --data-dir "$d"
    step "anchor 5 snapshots (ailee_create_anchor --snapshot-file --db-path)" make_history "$d" 5
    local r4 r5; r4=$(root_of "$d/l2_snapshots.dat" 4); r5=$(root_of "$d/l2_snapshots.dat" 5)
    if [ $corrupt -eq 1 ]; then
        corrupt_newest "$d/l2_snapshots.dat"
        step "--corrupt-snapshot: the newest complete snapshot no longer verifies (exit 2)" \
            exits 2 ailee_l2_verify -q --snapshot "$d/l2_snapshots.dat"
    fi
    # The node's next append, written by a separate process that stops half-way
    # (it waits forever after writing half the block) and is SIGKILLed once the
    # file has grown: the crash always lands mid-append, however loaded the machine.
    local size0; size0=$(stat -c %s "$d/l2_snapshots.dat")
    python3 - "$d/l2_snapshots.dat" <<'PY' &
import sys, signal
block = open(sys.argv[1], 'rb').read().split(b"SNAPSHOT v1\n")[-1]
block = b"SNAPSHOT v1\n" + block.replace(b"epoch=5", b"epoch=6")
with open(sys.argv[1], 'ab', buffering=0) as f:
    f.write(block[:len(block) // 2])
signal.pause()
PY
    local w=$! i
    for i in $(seq 6000); do
        [ "$(stat -c %s "$d/l2_snapshots.dat")" -gt "$size0" ] && break
        kill -0 $w 2>/dev/null || break
        sleep 0.01
    done
    kill -9 $w 2>/dev/null; wait $w 2>/dev/null
    local t0; t0=$(now_ms)
    step "crash injected: the file ends in a torn snapshot" torn_tail "$d/l2_snapshots.dat"
    local n=6
    if [ $corrupt -eq 1 ]; then
        n=2
        step "Procedure 1 fails on the corrupted newest snapshot (exit 2, state root mismatch)" \
            exits_saying 2 'state root mismatch' ailee_l2_verify --snapshot "$d/l2_snapshots.dat"
        step "runbook loop: extract, find the last valid snapshot (4), restore it" runbook_loop "$d" "$r4"
    else
        step "Procedure 1: ailee_l2_verify exits 0 on the newest complete snapshot" \
            says "Computed L2StateRoot: $r5" ailee_l2_verify --snapshot "$d/l2_snapshots.dat"
        step "the torn tail is reported as a warning with its offset" \
            exits_saying 0 'torn snapshot at end of file (byte offset' ailee_l2_verify --snapshot "$d/l2_snapshots.dat"
    fi
    step "the node's next append starts on a fresh line and verifies" next_append "$d"
    step "all $n complete snapshots verify (--all), the torn one is skipped" count_ok "$d/l2_snapshots.dat" $n
    step "reorg_db survived the crash (read-only check)" says 'Pending: 6' ailee_init_reorg_db --path "$d/reorg_db" --check
    recovery_time crash "$t0"
}

# Flips one digit of the first balance of the newest snapshot of FILE.
corrupt_newest() {
    python3 - "$1" <<'PY'
import sys
p = sys.argv[1]; data = bytearray(open(p, 'rb').read())
start = data.rindex(b"SNAPSHOT v1\n"); i = data.index(b"balance \"", start); j = data.index(b"\n", i) - 1
data[j] = ord('7') if data[j] != ord('7') else ord('3')
open(p, 'wb').write(data)
PY
}

# ailee_restore of the latest backup: the state verifies, the old one is kept.
restore_backup() { # D
    ailee_restore --data-dir "$1"
    ailee_l2_verify --snapshot "$1/l2_snapshots.dat" >/dev/null
    says 'Pending: 5' ailee_init_reorg_db --path "$1/reorg_db" --check
    ls -d "$1"/recovery_*/reorg_db >/dev/null
}

drill_corruption() {
    echo "== corruption: the newest snapshot and a reorg_db record are corrupted"
    local d=$base/corruption; fresh_dir "$d" || { fail=$((fail + 1)); return; }
    step "initialise and anchor 5 snapshots" init_and_anchor "$d" 5
    step "hourly backup (ailee_backup) before the damage" ailee_backup --data-dir "$d" --keep 3
    local r4; r4=$(root_of "$d/l2_snapshots.dat" 4)
    corrupt_newest "$d/l2_snapshots.dat"
    ldb --db="$d/reorg_db" --ignore_unknown_options put "block:00000000000000000042" "not-a-hash" >/dev/null 2>&1
    local t0; t0=$(now_ms)
    step "corruption detected: ailee_l2_verify exits 2 (state root mismatch)" \
        exits_saying 2 'state root mismatch' ailee_l2_verify --snapshot "$d/l2_snapshots.dat"
    step "corruption detected: reorg_db check exits 2 naming the record" \
        exits_saying 2 'block:00000000000000000042' ailee_init_reorg_db --path "$d/reorg_db" --check
    step "runbook loop: extract, find the last valid snapshot, restore it" runbook_loop "$d" "$r4"
    step "state restored from the hourly backup (ailee_restore: verified, swapped in, old state kept)" \
        restore_backup "$d"
    recovery_time corruption "$t0"
}

start_node() {
    local bitcoind; bitcoind=$("$ROOT/scripts/install_bitcoind.sh") || return 1
    local ports; ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]; print(*[x.getsockname()[1] for x in s])')
    read -r rpc p2p <<<"$ports"
    "$bitcoind" -regtest -excessiveblocksize=0 -maxstackmemoryusageconsensus=0 -minminingtxfee=0.00000500 \
        -server=1 -listen=0 -txindex=1 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcuser=drill \
        -rpcpassword=drill-pw -rpcport="$rpc" -port="$p2p" -datadir="$scratch/btc" -printtoconsole=0 &
    node_pid=$!
    CLI=("$(dirname "$bitcoind")/bitcoin-cli" -regtest -rpcconnect=127.0.0.1 -rpcport="$rpc" -rpcuser=drill -rpcpassword=drill-pw)
    RPC=(--bitcoin-rpc "http://127.0.0.1:$rpc" --rpc-user drill --rpc-password drill-pw)
    for _ in $(seq 100); do "${CLI[@]}" getblockcount >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}

# The reorg mode's steps; CLI and RPC are the node's (start_node).
mine() { # N — the node was started and mines N blocks
    [ -n "$node_pid" ]
    "${CLI[@]}" generate "$1" >/dev/null
}
init_with_identity() { # D IDENTITY — the data directory, and reorg_db resynced from the node
    ailee_init_node --data-dir "$1" --anchor-identity "$2" >/dev/null
    ailee_resync_blocks --start-height 0 --db-path "$1/reorg_db" "${RPC[@]}" -q >/dev/null
}
anchor_and_broadcast() { # D
    local out
    out=$(state_json 1 '' | ailee_create_anchor --l2-state-file - --snapshot-file "$1/l2_snapshots.dat" \
        --db-path "$1/reorg_db" --broadcast "${RPC[@]}" -q)
    grep -qF 'Broadcast txid' <<<"$out"
}
confirm_anchor() { # D TIP — 6 blocks mined and resynced from TIP: the anchor is CONFIRMED
    mine 6
    ailee_resync_blocks --start-height "$2" --db-path "$1/reorg_db" "${RPC[@]}" -q >/dev/null
    says 'Confirmed: 1' ailee_init_reorg_db --path "$1/reorg_db" --check
}
pegout_verifies_with() { # D ANCHOR CODE — a peg-out naming ANCHOR appended; verify --reorg-db exits CODE
    state_json 2 "$2" | ailee_create_anchor --l2-state-file - --snapshot-file "$1/l2_snapshots.dat" \
        --allow-unknown-pegout-anchors -q >/dev/null
    exits "$3" ailee_l2_verify --snapshot "$1/l2_snapshots.dat" --reorg-db "$1/reorg_db"
}
procedure_3() { # D — move the database aside, recreate it, resync; no gaps up to the node's tip
    mv "$1/reorg_db" "$1/reorg_db.corrupted"
    ailee_init_reorg_db --path "$1/reorg_db" >/dev/null
    ailee_resync_blocks --start-height 0 --db-path "$1/reorg_db" "${RPC[@]}" -q >/dev/null
    says "heights 0..$("${CLI[@]}" getblockcount), no gaps" ailee_init_reorg_db --path "$1/reorg_db" --check
}

drill_reorg() {
    echo "== reorg: a $depth-block reorg under an anchored, confirmed snapshot"
    local d=$base/reorg; fresh_dir "$d" || { fail=$((fail + 1)); return; }; mkdir -p "$scratch/btc"
    start_node   # not inside a step: its pid and connection settings must outlive it
    step "start the regtest node and mine 110 blocks" mine 110
    # The operator's anchoring identity: a wallet address, funded; anchors spend from it.
    local addr; addr=$("${CLI[@]}" getnewaddress 2>/dev/null)
    local identity; identity=$("${CLI[@]}" validateaddress "$addr" 2>/dev/null | json_get scriptPubKey)
    "${CLI[@]}" sendtoaddress "$addr" 1 >/dev/null 2>&1
    step "initialise the data directory with its anchoring identity and resync the reorg database" \
        init_with_identity "$d" "$identity"
    step "anchor a snapshot and broadcast it (ailee_create_anchor --broadcast)" anchor_and_broadcast "$d"
    local tip; tip=$("${CLI[@]}" getblockcount)
    step "mine 6 blocks and resync: the anchor is CONFIRMED" confirm_anchor "$d" "$tip"
    step "the anchor is proven on Bitcoin, spent from the anchoring identity (ailee_l2_verify --bitcoin-rpc)" \
        says 'Anchor on Bitcoin: transaction' ailee_l2_verify --snapshot "$d/l2_snapshots.dat" --reorg-db "$d/reorg_db" "${RPC[@]}"
    local anchor_height; anchor_height=$(ailee_get_snapshot_block "$d/l2_snapshots.dat" 2>/dev/null)
    step "ailee_get_snapshot_block gives the anchor's Bitcoin height" above "$anchor_height" "$tip"
    tip=$("${CLI[@]}" getblockcount)
    local fork=$((tip - depth + 1))
    local expect_anchor=CONFIRMED; [ "$anchor_height" -ge "$fork" ] 2>/dev/null && expect_anchor=INVALIDATED_REORG
    "${CLI[@]}" invalidateblock "$("${CLI[@]}" getblockhash $fork)" >/dev/null
    "${CLI[@]}" generate $((depth + 1)) >/dev/null
    local t0; t0=$(now_ms)
    local expect_rc=0; [ "$depth" -gt 6 ] && expect_rc=3
    step "resync detects the reorg at height $fork (exit $expect_rc)" \
        exits_saying $expect_rc "Reorg at height $fork (depth $depth)" \
        ailee_resync_blocks --start-height $((tip - 1)) --db-path "$d/reorg_db" "${RPC[@]}"
    local hash; hash=$(ailee_l2_verify -q --snapshot "$d/l2_snapshots.dat" --json | json_get anchor_hash)
    step "the anchor is $expect_anchor" says "status $expect_anchor" ailee_init_reorg_db --path "$d/reorg_db" --get-anchor "$hash"
    local want=0; [ $expect_anchor = INVALIDATED_REORG ] && want=2
    step "a peg-out naming that anchor: ailee_l2_verify --reorg-db exits $want" pegout_verifies_with "$d" "$hash" $want
    step "Procedure 3: move the database aside, recreate it, resync" procedure_3 "$d"
    recovery_time reorg "$t0"
}

# Metrics of the drill (--metrics-dir): recovery time and pass/fail per mode.
recovery_time() { # MODE T0_MS
    recovery_ms=$(( $(now_ms) - $2 ))
    echo "  RECOVERY TIME $1: $recovery_ms ms"
}
run_drill() { # MODE
    local f0=$fail
    recovery_ms=
    "drill_$1"
    [ -n "$metrics" ] || return 0
    local secs=(--remove "ailee_drill_recovery_seconds{mode=$1}")
    [ -n "$recovery_ms" ] && secs=(--set "ailee_drill_recovery_seconds{mode=$1}=$(printf '%d.%03d' $((recovery_ms / 1000)) $((recovery_ms % 1000)))")
    ailee_metrics write --metrics-dir "$metrics" --writer ailee_drill "${secs[@]}" \
        --set "ailee_drill_success{mode=$1}=$((fail == f0 ? 1 : 0))" --set ailee_drill_last_run_timestamp_seconds=now \
        || { echo "  FAIL  writing the drill's metrics to $metrics" >&2; fail=$((fail + 1)); }
}
case $mode in
    crash) run_drill crash ;;
    corruption) run_drill corruption ;;
    reorg) run_drill reorg ;;
    all) run_drill crash; run_drill corruption; run_drill reorg ;;
esac
echo "SUMMARY: $pass passed, $fail failed"
[ $fail -eq 0 ]
