#!/usr/bin/env bash
# Resync throughput against the regtest node, beside two baseline clients in
# the same run: a plain batched client (Python urllib, batches of 500
# getblockhash) and a client sending one request per height.
# Usage: scripts/bench_resync.sh [BLOCKS]   (default 3000)
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
N=${1:-3000}
scripts/setup.sh >/dev/null
cargo build --release --workspace --bins -q
bitcoind=$(scripts/install_bitcoind.sh)
W=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$W"' EXIT
regtest_node "$bitcoind" "$W"
echo "mining $N blocks ..." >&2
left=$N; while [ $left -gt 0 ]; do n=$((left > 500 ? 500 : left)); "${cli[@]}" generate $n >/dev/null; left=$((left - n)); done
tip=$("${cli[@]}" getblockcount)

secs() { local t0; t0=$(date +%s%N); "$@" >/dev/null; echo "$(( $(date +%s%N) - t0 ))" | awk '{ printf "%.3f", $1 / 1e9 }'; }
"$AILEE_BIN/ailee_init_reorg_db" --path "$W/db" >/dev/null
t_tool=$(secs "$AILEE_BIN/ailee_resync_blocks" -q --start-height 0 --db-path "$W/db" \
    --bitcoin-rpc "http://127.0.0.1:$rpc" --rpc-user b --rpc-password b)
client='
import base64, json, sys, urllib.request
port, tip, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
auth = "Basic " + base64.b64encode(b"b:b").decode()
def post(body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/", data=json.dumps(body).encode(),
                                 headers={"Authorization": auth, "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))
hashes = []
for lo in range(0, tip + 1, batch):
    hi = min(lo + batch, tip + 1)
    if batch == 1:
        hashes.append(post({"jsonrpc": "1.0", "id": lo, "method": "getblockhash", "params": [lo]})["result"])
    else:
        hashes.extend(r["result"] for r in post([{"jsonrpc": "1.0", "id": h, "method": "getblockhash", "params": [h]} for h in range(lo, hi)]))
assert len(hashes) == tip + 1
'
t_batch=$(secs python3 -c "$client" "$rpc" "$tip" 500)
t_single=$(secs python3 -c "$client" "$rpc" "$tip" 1)
blocks=$((tip + 1))
rate() { awk -v n=$blocks -v t="$1" 'BEGIN { printf "%.0f", n / t }'; }
echo "resync of $blocks blocks (heights 0..$tip) into a fresh reorg_db"
printf "  %-52s %7ss %8s blocks/s\n" "ailee_resync_blocks (batches of 500, writes RocksDB)" "$t_tool" "$(rate "$t_tool")" \
    "python urllib, batched (500), fetch only" "$t_batch" "$(rate "$t_batch")" \
    "python urllib, one request per height, fetch only" "$t_single" "$(rate "$t_single")"
echo "  tool / batched client throughput = $(awk -v a="$t_batch" -v b="$t_tool" 'BEGIN { printf "%.2f", a / b }')   (target >= 0.5)"
echo "  tool / per-height client         = $(awk -v a="$t_single" -v b="$t_tool" 'BEGIN { printf "%.1f", a / b }')x  (target >= 10x)"
