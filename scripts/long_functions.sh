#!/usr/bin/env bash
# Prints every non-test Rust function longer than a limit (100 lines unless
# --max N), longest first, as "LINES FILE:LINE NAME"; exits 1 when it printed
# any, 0 when there is none.
#
# usage: scripts/long_functions.sh [--max N] [FILE_OR_DIR…]
#   (default: the .rs files git tracks in the repository, fuzz/ included)
#
# A function's length runs from the line of its `fn` keyword to the line of
# its closing brace. The count matches braces after removing comments (nested
# block comments too), string literals (escaped, raw r#"…"#, byte, multi-line)
# and character literals ('{', '\'', told apart from lifetimes), so a signature
# over several lines, closures, nested functions and braces in strings count
# right. Not counted: files under a tests/ directory, the item after
# #[cfg(test)] (a test module) and #[test] functions.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"

max=100
paths=()
while [ $# -gt 0 ]; do
    case $1 in
        --max) max=${2:?--max needs a number}; shift 2 ;;
        --max=*) max=${1#--max=}; shift ;;
        *) paths+=("$1"); shift ;;
    esac
done
case $max in '' | *[!0-9]*) die "--max wants a whole number, not '$max'" ;; esac

list_files() {
    if [ ${#paths[@]} -eq 0 ]; then
        git -C "$AILEE_SCRIPT_DIR/.." ls-files -z --full-name '*.rs' |
            (cd "$AILEE_SCRIPT_DIR/.." && xargs -0 -r realpath --relative-to="$PWD" --)
    else
        find "${paths[@]}" -name '*.rs' -type f
    fi
}

# Files under a tests/ directory are test code.
files=$(list_files | grep -Ev '(^|/)tests/' | sort) || true
[ -n "$files" ] || exit 0

# shellcheck disable=SC2086 # one file name per line, none with blanks here
out=$(printf '%s\n' "$files" | tr '\n' '\0' | xargs -0 awk -v max="$max" '
function report(i, end,   len) {
    len = end - fstart[i] + 1
    if (len > max && !ftest[i]) printf "%d %s:%d %s\n", len, FILENAME, fstart[i], fname[i]
}
FNR == 1 {
    depth = 0; nf = 0; pending = ""; pend_test = 0; test_depth = -1
    in_block = 0; in_str = 0; raw_hashes = -1; paren = 0
}
{
    line = $0; n = length(line); i = 1
    while (i <= n) {
        c = substr(line, i, 1)
        if (in_block > 0) {                       # inside /* … */ (nests)
            two = substr(line, i, 2)
            if (two == "*/") { in_block--; i += 2; continue }
            if (two == "/*") { in_block++; i += 2; continue }
            i++; continue
        }
        if (in_str) {                             # inside "…" or r#"…"#
            if (raw_hashes >= 0) {
                close_q = "\"" substr("################", 1, raw_hashes)
                if (substr(line, i, length(close_q)) == close_q) {
                    in_str = 0; i += length(close_q); continue
                }
                i++; continue
            }
            if (c == "\\") { i += 2; continue }
            if (c == "\"") { in_str = 0 }
            i++; continue
        }
        two = substr(line, i, 2)
        if (two == "//") break
        if (two == "/*") { in_block = 1; i += 2; continue }
        prev = i > 1 ? substr(line, i - 1, 1) : " "
        if (c == "\"") { in_str = 1; raw_hashes = -1; i++; continue }
        if ((c == "r" || (c == "b" && substr(line, i + 1, 1) == "r")) && prev !~ /[A-Za-z0-9_]/) {
            j = i + (c == "b" ? 2 : 1); h = 0
            while (substr(line, j, 1) == "#") { h++; j++ }
            if (substr(line, j, 1) == "\"") { in_str = 1; raw_hashes = h; i = j + 1; continue }
        }
        if (c == "\x27") {                        # char literal or lifetime
            if (substr(line, i + 1, 1) == "\\") {
                j = index(substr(line, i + 2), "\x27")
                i = j ? i + 2 + j : n + 1; continue
            }
            if (substr(line, i + 2, 1) == "\x27") { i += 3; continue }
            i++; continue                         # a lifetime: nothing to skip
        }
        if (c ~ /[A-Za-z_]/ && prev !~ /[A-Za-z0-9_]/) {
            word = substr(line, i); match(word, /^[A-Za-z0-9_]+/); word = substr(word, 1, RLENGTH)
            if (word == "fn") {
                rest = substr(line, i + 2)
                if (match(rest, /^[ \t]+[A-Za-z_][A-Za-z0-9_]*/)) {
                    pending = substr(rest, RSTART, RLENGTH); gsub(/[ \t]/, "", pending)
                    pend_line = FNR; paren = 0
                }
            }
            i += length(word); continue
        }
        if (c == "#" && substr(line, i) ~ /^#\[(cfg\(test\)|test)\]/) pend_test = 1
        if (c == "(" || c == "[") paren++
        else if (c == ")" || c == "]") paren--
        else if (c == ";" && paren <= 0) { pending = ""; pend_test = 0 }
        else if (c == "{") {
            depth++
            if (pend_test && test_depth < 0) test_depth = depth
            pend_test = 0
            if (pending != "") {
                nf++; fname[nf] = pending; fstart[nf] = pend_line; fdepth[nf] = depth
                ftest[nf] = test_depth >= 0; pending = ""
            }
        } else if (c == "}") {
            if (nf > 0 && fdepth[nf] == depth) { report(nf, FNR); nf-- }
            if (test_depth == depth) test_depth = -1
            depth--
        }
        i++
    }
}
' | sort -k1,1nr -k2)
[ -z "$out" ] && exit 0
printf '%s\n' "$out"
exit 1
