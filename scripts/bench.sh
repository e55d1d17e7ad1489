#!/usr/bin/env bash
# Benchmarks of the file tools beside baselines measured in the same run.
# Generates a healthy snapshot file of SNAPSHOTS x ENTRIES (default about
# 515 MB, 5000 snapshots), a 10x copy of it, and a 10x smaller one, then prints
# times, ratios and peak memory (max RSS). Figures are recorded in BENCHMARKS.md.
# `--all` is also measured on a second file of LARGE_SNAPSHOTS x LARGE_ENTRIES
# (default 1500 x 3000, ~400 KB snapshots, ~670 MB): medians of RUNS (default
# 7) runs, each beside `openssl dgst -sha256` of the same file.
# Usage: scripts/bench.sh [WORKDIR] [all]   (needs ~8 GB free in WORKDIR;
#        `all` runs only the `--all` comparison)
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
source "$(dirname "$0")/env.sh"
cd "$ROOT"
W=${1:-${TMPDIR:-/tmp}/ailee-bench}
ONLY=${2:-}
SNAPSHOTS=${SNAPSHOTS:-5000}
ENTRIES=${ENTRIES:-720}
LARGE_SNAPSHOTS=${LARGE_SNAPSHOTS:-1500}
LARGE_ENTRIES=${LARGE_ENTRIES:-3000}
RUNS=${RUNS:-7}
mkdir -p "$W"
command -v openssl >/dev/null && [ -x /usr/bin/time ] || scripts/setup.sh --no-bitcoind
cargo build --release --workspace --bins --examples -q
B=$AILEE_BIN
F=$W/l2_snapshots.dat
if [ ! -s "$F" ] || [ "$(cat "$W/params" 2>/dev/null)" != "$SNAPSHOTS $ENTRIES" ]; then
    echo "generating $SNAPSHOTS snapshots x $ENTRIES entries ..." >&2
    "$B/examples/gen_snapshots" "$F" "$SNAPSHOTS" "$ENTRIES" 1
    "$B/examples/gen_snapshots" "$W/small.dat" "$((SNAPSHOTS / 10))" "$ENTRIES" 1
    # 10x the history with the same newest snapshots: prune must not care.
    for _ in $(seq 10); do cat "$F"; done > "$W/big.dat"
    echo "$SNAPSHOTS $ENTRIES" > "$W/params"
fi
L=$W/large.dat
if [ ! -s "$L" ] || [ "$(cat "$W/params.large" 2>/dev/null)" != "$LARGE_SNAPSHOTS $LARGE_ENTRIES" ]; then
    echo "generating $LARGE_SNAPSHOTS snapshots x $LARGE_ENTRIES entries ..." >&2
    "$B/examples/gen_snapshots" "$L" "$LARGE_SNAPSHOTS" "$LARGE_ENTRIES" 1
    echo "$LARGE_SNAPSHOTS $LARGE_ENTRIES" > "$W/params.large"
fi

now() { date +%s%N; }
# best of N wall-clock seconds of a command
best() {
    local n=$1; shift
    local best=""
    for _ in $(seq "$n"); do
        local t0; t0=$(now); "$@" > /dev/null 2>&1 || true; local t1; t1=$(now)
        local d=$(( t1 - t0 ))
        if [ -z "$best" ] || [ "$d" -lt "$best" ]; then best=$d; fi
    done
    awk -v ns="$best" 'BEGIN { printf "%.4f", ns / 1e9 }'
}
rss() { /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -n 1; }   # KiB
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
mb() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.0f", b / 1048576 }'; }

# "wall user+sys" seconds of one run of a command
timed() { /usr/bin/time -f "%e %U %S" "$@" 2>&1 >/dev/null | tail -n 1 | awk '{ printf "%s %.2f", $1, $2 + $3 }'; }
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# --all beside openssl on one file: RUNS alternating runs, medians.
all_vs_openssl() {
    local f=$1 a=() o=()
    for _ in $(seq "$RUNS"); do
        a+=("$(timed "$B/ailee_l2_verify" --snapshot "$f" --all)")
        o+=("$(timed openssl dgst -sha256 "$f")")
    done
    local aw ac ow oc
    aw=$(printf '%s\n' "${a[@]}" | cut -d' ' -f1 | median)
    ac=$(printf '%s\n' "${a[@]}" | cut -d' ' -f2 | median)
    ow=$(printf '%s\n' "${o[@]}" | cut -d' ' -f1 | median)
    oc=$(printf '%s\n' "${o[@]}" | cut -d' ' -f2 | median)
    printf "  %-28s --all %6ss wall %6ss CPU | openssl %6ss wall %6ss CPU | wall %sx  CPU %sx   (target wall <= 1.0x)\n" \
        "$(basename "$f") ($(mb "$f") MB)" "$aw" "$ac" "$ow" "$oc" "$(ratio "$aw" "$ow")" "$(ratio "$ac" "$oc")"
}

echo "file: $F ($(mb "$F") MB, $SNAPSHOTS snapshots); big: $(mb "$W/big.dat") MB; small: $(mb "$W/small.dat") MB"
echo "large: $L ($(mb "$L") MB, $LARGE_SNAPSHOTS snapshots x $LARGE_ENTRIES entries)"
echo "cores: $(nproc)"
echo

cat "$F" "$L" > /dev/null   # warm the page cache
echo "ailee_l2_verify --all vs openssl dgst -sha256 (medians of $RUNS alternating runs)"
all_vs_openssl "$F"
all_vs_openssl "$L"
echo
[ "$ONLY" = all ] && exit 0
cat "$F" "$W/small.dat" "$W/big.dat" > /dev/null   # warm the page cache

# --- ailee_l2_verify -------------------------------------------------------
t_cat=$(best 3 sh -c "cat '$F' > /dev/null")
t_newest=$(best 5 "$B/ailee_l2_verify" --snapshot "$F")
t_parse1=$(best 2 "$B/ailee_l2_verify" --snapshot "$F" --all --threads 1)
t_all=$(best 3 "$B/ailee_l2_verify" --snapshot "$F" --all)
t_ossl=$(best 3 openssl dgst -sha256 "$F")
echo "ailee_l2_verify"
printf "  %-44s %8ss\n" "cat FILE > /dev/null" "$t_cat" \
    "newest snapshot (default)" "$t_newest" \
    "full parse + verify, 1 thread (--all --threads 1)" "$t_parse1" \
    "--all (all cores)" "$t_all" \
    "openssl dgst -sha256 FILE" "$t_ossl"
echo "  full parse / newest       = $(ratio "$t_parse1" "$t_newest")x   (target >= 100x)"
echo "  --all / openssl dgst      = $(ratio "$t_all" "$t_ossl")x   (best of 3; target <= 1.0x, see the medians above)"
echo "  max RSS newest  small/file/big = $(rss "$B/ailee_l2_verify" --snapshot "$W/small.dat") / $(rss "$B/ailee_l2_verify" --snapshot "$F") / $(rss "$B/ailee_l2_verify" --snapshot "$W/big.dat") KiB"
echo "  max RSS --all   small/file/big = $(rss "$B/ailee_l2_verify" --snapshot "$W/small.dat" --all) / $(rss "$B/ailee_l2_verify" --snapshot "$F" --all) / $(rss "$B/ailee_l2_verify" --snapshot "$W/big.dat" --all) KiB"
echo

# --- ailee_extract_snapshots -------------------------------------------------
rm -rf "$W/x" "$W/cp.dat"
t_cp=$(best 1 cp "$F" "$W/cp.dat")
rm -f "$W/cp.dat"
t0=$(now); "$B/ailee_extract_snapshots" "$F" "$W/x" > /dev/null; t1=$(now)
t_ex=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.4f", ns / 1e9 }')
t0=$(now); cp "$F" "$W/cp.dat"; sync -f "$W/cp.dat"; t1=$(now)
t_cps=$(awk -v ns=$((t1 - t0)) 'BEGIN { printf "%.4f", ns / 1e9 }')
# The filesystem's floor: creating as many (empty) files, nothing written.
rm -rf "$W/empty"; mkdir "$W/empty"
t_create=$(best 1 python3 -c "import os,sys
for i in range(int(sys.argv[2])): os.close(os.open(f'{sys.argv[1]}/snapshot_{i}.dat', os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))" "$W/empty" "$SNAPSHOTS")
rm -rf "$W/empty"
ex_rss=$( (rm -rf "$W/x2"; rss "$B/ailee_extract_snapshots" "$F" "$W/x2") )
ex_rss_small=$( (rm -rf "$W/x3"; rss "$B/ailee_extract_snapshots" "$W/small.dat" "$W/x3") )
rm -rf "$W/x" "$W/x2" "$W/x3" "$W/cp.dat"
echo "ailee_extract_snapshots ($SNAPSHOTS files, durable)"
printf "  %-44s %8ss\n" "cp FILE (same disk)" "$t_cp" "cp FILE + sync" "$t_cps" \
    "create $SNAPSHOTS empty files (python, same disk)" "$t_create" "extract" "$t_ex"
echo "  extract / cp              = $(ratio "$t_ex" "$t_cp")x   (target <= 1.5x)"
echo "  extract / (cp + sync)     = $(ratio "$t_ex" "$t_cps")x"
echo "  extract / (cp + sync + creating the files) = $(ratio "$t_ex" "$(awk -v a="$t_cps" -v b="$t_create" 'BEGIN { print a + b }')")x"
echo "  max RSS small/file        = $ex_rss_small / $ex_rss KiB"
echo

# --- ailee_prune_snapshots ----------------------------------------------------
rm -f "$W/p.dat" "$W/pb.dat" "$W/tail.dat"
"$B/ailee_prune_snapshots" --file "$F" --keep 10 --output "$W/p.dat" > /dev/null
kept=$(stat -c %s "$W/p.dat")
t_tail=$(best 3 sh -c "tail -c $kept '$F' > '$W/tail.dat'")
t_tails=$(best 3 sh -c "tail -c $kept '$F' > '$W/tail.dat' && sync -f '$W/tail.dat'")
t_pr=$(best 3 "$B/ailee_prune_snapshots" --file "$F" --keep 10 --output "$W/p.dat" --force)
t_prb=$(best 3 "$B/ailee_prune_snapshots" --file "$W/big.dat" --keep 10 --output "$W/pb.dat" --force)
cmp "$W/p.dat" "$W/pb.dat"
echo "ailee_prune_snapshots --keep 10 ($kept bytes kept)"
printf "  %-44s %8ss\n" "tail -c KEPT FILE > out" "$t_tail" "tail -c KEPT FILE > out + sync" "$t_tails" "prune FILE" "$t_pr" "prune 10x FILE (same kept bytes)" "$t_prb"
echo "  prune / tail -c           = $(ratio "$t_pr" "$t_tail")x   (target <= 1.5x)"
echo "  prune 10x / prune 1x      = $(ratio "$t_prb" "$t_pr")x   (target ~1x)"
echo "  max RSS file/big          = $(rss "$B/ailee_prune_snapshots" --file "$F" --keep 10 --output "$W/p.dat" --force) / $(rss "$B/ailee_prune_snapshots" --file "$W/big.dat" --keep 10 --output "$W/pb.dat" --force) KiB"
rm -f "$W/p.dat" "$W/pb.dat" "$W/tail.dat"
