# Shared by the runbook scripts: find the tools, read JSON fields.
# Tools are taken from $AILEE_BIN when set, else from PATH.
tool() {
    local t=$1; shift
    if [ -n "${AILEE_BIN:-}" ]; then "$AILEE_BIN/$t" "$@"; else "$t" "$@"; fi
}
# json_get FIELD < json  — prints a top-level field ("" for null).
json_get() {
    python3 -c 'import json,sys; v=json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$1"
}
die() { echo "$(basename "$0"): $*" >&2; exit 1; }
