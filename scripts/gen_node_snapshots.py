#!/usr/bin/env python3
# A node-like snapshot file, appended to: each snapshot the full state
# (balances), about 1% of them changed from the previous one, a valid anchor
# (the node's canonical text and root, SPEC §1). Used by the benchmarks and
# campaigns that need a large, realistic file.
# Usage: gen_node_snapshots.py FILE TARGET_BYTES SNAPSHOT_BYTES MIN_COUNT STATE_FILE [ANCHOR_NAME]
#   appends snapshots of about SNAPSHOT_BYTES to FILE until it holds
#   TARGET_BYTES and at least MIN_COUNT were written; STATE_FILE carries the
#   balances and the clock from one call to the next.
import hashlib, random, sys
path, target, grow, count, state_path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
who = sys.argv[6] if len(sys.argv) > 6 else "bench"
rnd = random.Random()
nbal = max(1, grow // 40)
try:
    with open(state_path) as f:
        ts, bal = f.readline().split(), [int(x) for x in f.readline().split()]
        ts = int(ts[0])
except FileNotFoundError:
    ts, bal = 1700000000000, [rnd.randrange(10**9, 10**11) for _ in range(nbal)]
def block():
    global ts
    ts += 3600_000
    for _ in range(max(1, nbal // 100)):
        bal[rnd.randrange(nbal)] = rnd.randrange(10**9, 10**11)
    canon = ["L2STATE|v1", f"balances:{nbal}"] + [f"balance:peer{i:08d}:{b}" for i, b in enumerate(bal)] + \
        ["escrows:0", "pegins:0", "pegouts:0", "tasks:0"]
    root = hashlib.sha256(("\n".join(canon) + "\n").encode()).hexdigest()
    payload = f"{root}:{ts}:{who}"
    h = hashlib.sha256(payload.encode()).hexdigest()
    lines = ["SNAPSHOT v1", f"timestamp_ms {ts}", f"balances {nbal}"] + \
        [f'balance "peer{i:08d}" {b}' for i, b in enumerate(bal)] + \
        ["escrows 0", "pegins 0", "pegouts 0", "tasks 0", f'anchor "{root}" {ts} "{who}" "{payload}" "{h}"', "END_SNAPSHOT"]
    return ("\n".join(lines) + "\n").encode()
with open(path, "ab") as f:
    n = 0
    while f.tell() < target or n < count:
        f.write(block()); n += 1
with open(state_path, "w") as f:
    f.write(f"{ts}\n" + " ".join(map(str, bal)) + "\n")
