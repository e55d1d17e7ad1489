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

# usage: prints the script's header comment (from line 2 to the first line that
# is not a comment), without the leading "# ".
usage() {
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$(readlink -f "$0")"
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

# json_get FIELD < json  — prints a top-level field ("" for null).
json_get() {
    python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}
die() { echo "$(basename "$0"): $*" >&2; exit 1; }
