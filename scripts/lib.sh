# Shared by the runbook scripts (sourced; never run on its own).
#
# Finding the tools: a script runs `tool NAME ARGS…`, which takes NAME from
# $AILEE_BIN when that is set, else from the directory the script really lives
# in (symlinks resolved: the runbook runs `./ailee_…` from one directory, and
# an installed prefix keeps tools and scripts together in bin/), else PATH.
AILEE_SCRIPT_DIR=$(dirname "$(readlink -f "$0")")
AILEE_VERSION=0.1.0

tool_path() {
    local t=$1
    if [ -n "${AILEE_BIN:-}" ] && [ -x "$AILEE_BIN/$t" ]; then
        printf '%s\n' "$AILEE_BIN/$t"
    elif [ -x "$AILEE_SCRIPT_DIR/$t" ]; then
        printf '%s\n' "$AILEE_SCRIPT_DIR/$t"
    elif command -v "$t" >/dev/null 2>&1; then
        command -v "$t"
    else
        echo "$(basename "$0"): cannot find $t (looked in \$AILEE_BIN, $AILEE_SCRIPT_DIR and PATH)" >&2
        return 127
    fi
}

tool() {
    local t=$1 p
    shift
    p=$(tool_path "$t") || return 127
    "$p" "$@"
}

# Checks that every named tool can be found, before a script changes anything.
need_tools() {
    local t
    for t in "$@"; do tool_path "$t" >/dev/null || exit 1; done
}

# usage: prints the script's help, the here-document it put in $USAGE before
# calling std_args (`IFS= read -r -d '' USAGE <<'EOF' || true`); a script
# without one is described by its opening comment, which is printed instead.
usage() {
    if [ -n "${USAGE:-}" ]; then
        printf '%s' "$USAGE"
        return
    fi
    sed -n '2,/^[^#]/{/^#/!q;s/^# \{0,1\}//;p}' "$0"
}

# Handles --help and --version for any script: call as `std_args "$@"` first.
std_args() {
    local a
    for a in "$@"; do
        case $a in
            -h|--help) usage; exit 0 ;;
            -V|--version) echo "$(basename "$0") $AILEE_VERSION"; exit 0 ;;
        esac
    done
}

# json_get FIELD < JSON — prints the top-level FIELD of one JSON object, such
# as a tool's --json document: a string unescaped, a number or true/false as
# written, "" for null, an absent field, or an object or array (never
# printed). Exit 1 when the input is not a JSON object. No python, no jq:
# the tools' documents are small, and this is the scripts' one JSON reader.
json_get() {
    local want=$1 doc depth=0 key= colon=0 tok val
    local ws='^[[:space:]]+' str='^"(([^"\\]|\\.)*)"' lit='^[-+.0-9A-Za-z]+' punct='^[][{}:,]'
    doc=$(cat)
    [[ $doc =~ ^[[:space:]]*\{ ]] || return 1
    while [ -n "$doc" ]; do
        if [[ $doc =~ $ws ]]; then
            doc=${doc:${#BASH_REMATCH[0]}}
            continue
        elif [[ $doc =~ $str ]]; then
            tok=s val=${BASH_REMATCH[1]}
        elif [[ $doc =~ $lit ]]; then
            tok=l val=${BASH_REMATCH[0]}
        elif [[ $doc =~ $punct ]]; then
            tok=${BASH_REMATCH[0]} val=
        else
            return 1
        fi
        doc=${doc:${#BASH_REMATCH[0]}}
        case $tok in
            '{'|'[') depth=$((depth + 1)); colon=0 ;;
            '}'|']') depth=$((depth - 1)); [ "$depth" -gt 0 ] || break ;;
            :) [ "$depth" -eq 1 ] && colon=1 ;;
            ,) colon=0 ;;
            s|l)
                [ "$depth" -eq 1 ] || continue
                if [ "$colon" = 0 ]; then
                    key=$val
                    [[ $val != *\\* ]] || key=$(json_unescape "$val")
                elif [ "$key" = "$want" ]; then
                    [ "$tok$val" = lnull ] || json_unescape "$val"
                    echo
                    return 0
                fi ;;
        esac
    done
    echo
}
# json_unescape TEXT — a JSON string's escapes (\" \\ \/ \n \t \uXXXX …) decoded.
json_unescape() {
    local s=$1 out= c
    while [[ $s == *\\* ]]; do
        out+=${s%%\\*}
        s=${s#*\\}
        c=${s:0:1}
        case $c in
            n) out+=$'\n' ;;
            t) out+=$'\t' ;;
            r) out+=$'\r' ;;
            b) out+=$'\b' ;;
            f) out+=$'\f' ;;
            u) printf -v c '%b' "\\u${s:1:4}"; out+=$c; s=${s:4} ;;
            *) out+=$c ;;
        esac
        s=${s:1}
    done
    printf '%s' "$out$s"
}
# use_build (scripts run from the source tree): sources scripts/env.sh for
# ROOT and the build's target directory; the tools are a caller's $AILEE_BIN
# when it set one, else the release build.
use_build() {
    local given=${AILEE_BIN:-}
    source "$AILEE_SCRIPT_DIR/env.sh"
    [ -z "$given" ] || AILEE_BIN=$given
}

# regtest_node BITCOIND DIR — (benchmarks) starts BITCOIND on regtest with its
# data in DIR, on two free local ports, RPC user b password b, and returns once
# it answers. Sets pid (the caller's EXIT trap stops it), rpc (its RPC port)
# and cli (bitcoin-cli with the arguments that reach it).
regtest_node() {
    local bitcoind=$1 dir=$2 p2p
    read -r rpc p2p < <(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]; print(*[x.getsockname()[1] for x in s])')
    "$bitcoind" -regtest -excessiveblocksize=0 -maxstackmemoryusageconsensus=0 -minminingtxfee=0.00000500 \
        -server=1 -listen=0 -rpcbind=127.0.0.1 -rpcallowip=127.0.0.1 -rpcuser=b -rpcpassword=b \
        -rpcport="$rpc" -port="$p2p" -datadir="$dir" -printtoconsole=0 &
    pid=$!
    cli=("$(dirname "$bitcoind")/bitcoin-cli" -regtest -rpcconnect=127.0.0.1 -rpcport="$rpc" -rpcuser=b -rpcpassword=b)
    for _ in $(seq 100); do "${cli[@]}" getblockcount >/dev/null 2>&1 && break; sleep 0.2; done
}
die() { echo "$(basename "$0"): $*" >&2; exit 1; }
