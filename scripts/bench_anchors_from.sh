#!/usr/bin/env bash
# Throughput of `ailee_resync_blocks --anchors-from` (finding a snapshot
# file's anchors in the raw blocks of the regtest chain, every block read:
# one anchor is never broadcast) beside a plain
# batched client (Python urllib) that fetches the same raw blocks
# (getblockhash + getblock HASH 0 batches of the same sizes) without parsing
# them. Median of RUNS runs each, alternating. Target: the tool at >= 50% of
# the plain client's blocks per second.
# Usage: scripts/bench_anchors_from.sh [BLOCKS] [RUNS]   (default 2500 blocks, 5 runs)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
N=${1:-2500}
RUNS=${2:-5}
[[ $N =~ ^[0-9]{1,6}$ && $N -ge 200 ]] || die "BLOCKS must be a number from 200 to 999999"
[[ $RUNS =~ ^[0-9]{1,2}$ && $RUNS -ge 1 ]] || die "RUNS must be a number from 1 to 99"
cargo build --release --workspace --bins -q
bitcoind=$(scripts/install_bitcoind.sh)
W=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$W"' EXIT
regtest_node "$bitcoind" "$W"
rpcargs=(--bitcoin-rpc "http://127.0.0.1:$rpc" --rpc-user b --rpc-password b)
echo "mining $N blocks with 10 anchors spread over them ..." >&2
"${cli[@]}" generate 101 >/dev/null
"$AILEE_BIN/ailee_init_reorg_db" --path "$W/db_old" >/dev/null
# The anchoring identity (W/anchor_identity, beside both databases): a wallet
# address funded with 10 outputs; the anchors spend from it.
addr=$("${cli[@]}" getnewaddress)
"${cli[@]}" validateaddress "$addr" | sed -n 's/.*"scriptPubKey": *"\([0-9a-f]*\)".*/\1/p' > "$W/anchor_identity"
for _ in $(seq 10); do "${cli[@]}" sendtoaddress "$addr" 1 >/dev/null; done
per=$(( (N - 101) / 10 ))
for i in $(seq 10); do
    echo "{\"ledger\": {\"balances\": [{\"peerId\": \"p$i\", \"balance\": $i}]}}" |
        "$AILEE_BIN/ailee_create_anchor" -q --l2-state-file - --recovery-metadata "bench-$i" \
            --snapshot-file "$W/l2_snapshots.dat" --db-path "$W/db_old" --broadcast "${rpcargs[@]}" >/dev/null
    left=$per; while [ "$left" -gt 0 ]; do n=$((left > 500 ? 500 : left)); "${cli[@]}" generate $n >/dev/null; left=$((left - n)); done
done
# One more snapshot, never broadcast: not found, so the scan reads every block
# up to the tip (it stops early once every anchor is found).
echo '{"ledger": {"balances": [{"peerId": "never", "balance": 1}]}}' |
    "$AILEE_BIN/ailee_create_anchor" -q --l2-state-file - --snapshot-file "$W/l2_snapshots.dat" >/dev/null
left=$(( N - 1 - $("${cli[@]}" getblockcount) ))
while [ "$left" -gt 0 ]; do n=$((left > 500 ? 500 : left)); "${cli[@]}" generate $n >/dev/null; left=$((left - n)); done
tip=$("${cli[@]}" getblockcount)
blocks=$((tip + 1))
# The block hashes are resynced once; each timed run then compares them again
# (cheap) and scans every raw block for the anchors.
"$AILEE_BIN/ailee_init_reorg_db" --path "$W/db" >/dev/null
"$AILEE_BIN/ailee_resync_blocks" -q --start-height 0 --db-path "$W/db" "${rpcargs[@]}" >/dev/null

HB=500 # heights per getblockhash batch (the tool's default --batch-size)
BB=10  # raw blocks per getblock batch (the tool's default --block-batch)
client='
import base64, json, sys, urllib.request
port, tip, hb, bb = map(int, sys.argv[1:5])
auth = "Basic " + base64.b64encode(b"b:b").decode()
def post(body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(body).encode(),
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
n = 0
for lo in range(0, tip + 1, hb):
    hi = min(lo + hb, tip + 1)
    hashes = [r["result"] for r in post([{"jsonrpc": "1.0", "id": h, "method": "getblockhash", "params": [h]} for h in range(lo, hi)])]
    for i in range(0, len(hashes), bb):
        part = hashes[i:i + bb]
        raws = [r["result"] for r in post([{"jsonrpc": "1.0", "id": j, "method": "getblock", "params": [h, 0]} for j, h in enumerate(part)])]
        n += len(raws)
assert n == tip + 1, n
'
secs() { local t0; t0=$(date +%s%N); "$@" >/dev/null; echo "$(( $(date +%s%N) - t0 ))" | awk '{ printf "%.3f", $1 / 1e9 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
tool_t=() client_t=()
for r in $(seq "$RUNS"); do
    out=$("$AILEE_BIN/ailee_resync_blocks" -q --start-height 0 --db-path "$W/db" "${rpcargs[@]}" \
        --anchors-from "$W/l2_snapshots.dat" --batch-size $HB --block-batch $BB)
    grep -q "11 in the file, 10 found on the chain" <<<"$out" || die "run $r: anchors not all found: $out"
    t=$(secs "$AILEE_BIN/ailee_resync_blocks" -q --start-height 0 --db-path "$W/db" "${rpcargs[@]}" \
        --anchors-from "$W/l2_snapshots.dat" --batch-size $HB --block-batch $BB)
    c=$(secs python3 -c "$client" "$rpc" "$tip" $HB $BB)
    echo "run $r: tool $t s, plain client $c s" >&2
    tool_t+=("$t") client_t+=("$c")
done
mt=$(median "${tool_t[@]}") mc=$(median "${client_t[@]}")
rate() { awk -v n=$blocks -v t="$1" 'BEGIN { printf "%.0f", n / t }'; }
echo "--anchors-from over $blocks raw blocks (heights 0..$tip), 10 anchors + 1 not on chain; median of $RUNS runs"
printf "  %-62s %7ss %8s blocks/s\n" \
    "ailee_resync_blocks --anchors-from (hashes compared, blocks parsed)" "$mt" "$(rate "$mt")" \
    "python urllib, same batches ($HB hashes, $BB blocks), fetch only" "$mc" "$(rate "$mc")"
echo "  tool / plain client throughput = $(awk -v a="$mc" -v b="$mt" 'BEGIN { printf "%.2f", a / b }')   (target >= 0.5)"
