#!/usr/bin/env bash
# package-deb.sh [--out DIR] [--bin-dir B] [--no-build]
#
# Builds ailee-recovery_<version>_<arch>.deb (dpkg-deb) from the layout of
# scripts/install.sh with prefix /usr: the tools and scripts in /usr/bin, man
# pages, shell completions, the systemd/cron examples and alert rules in
# /usr/share/ailee-recovery/examples, the docs in /usr/share/doc/ailee-recovery.
# Runtime dependencies are Debian's (restic for backups, util-linux for flock,
# which is essential; the scripts read the tools' JSON with lib.sh's json_get,
# plain bash). The
# maintainer is $DEBFULLNAME <$DEBEMAIL> when set. Writes the package into DIR (default
# target's release directory) and prints its path. Check it with
# `lintian PACKAGE.deb` and `dpkg-deb --contents PACKAGE.deb`.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
root=$(cd "$here/.." && pwd)
out= passthrough=()
while [ $# -gt 0 ]; do
    case $1 in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --bin-dir) passthrough+=(--bin-dir "${2:?--bin-dir needs a directory}"); shift 2 ;;
        --no-build) passthrough+=(--no-build); shift ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$here/package-deb.sh"; exit 0 ;;
        -V|--version) echo "package-deb.sh $(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"; exit 0 ;;
        *) echo "package-deb.sh: unknown argument $1 (see --help)" >&2; exit 1 ;;
    esac
done
command -v dpkg-deb >/dev/null || { echo "package-deb.sh: dpkg-deb is missing (scripts/setup.sh installs it)" >&2; exit 1; }
source "$here/env.sh"
out=${out:-$CARGO_TARGET_DIR/release}
mkdir -p "$out"
maintainer="${DEBFULLNAME:-ailee-recovery maintainers} <${DEBEMAIL:-ailee-recovery@users.noreply.github.com}>"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d "${TMPDIR:-/tmp}/ailee-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
pkg=$stage/ailee-recovery

"$here/install.sh" --prefix /usr --destdir "$pkg" "${passthrough[@]}"

# Debian's places: zsh completions under vendor-completions, docs with a
# copyright file and a compressed changelog; strip the binaries' symbols.
doc=$pkg/usr/share/doc/ailee-recovery
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ailee-recovery
Source: ailee-recovery

Files: *
Copyright: $(date -u +%Y) The ailee-recovery authors
License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
 THE SOFTWARE.
EOF
printf 'ailee-recovery (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- %s  %s\n' \
    "$version" "$version" "$maintainer" "$(date -u -R)" | gzip -9n > "$doc/changelog.gz"
for b in "$pkg"/usr/bin/*; do
    if file -b "$b" 2>/dev/null | grep -q ELF || head -c 4 "$b" | grep -q ELF; then
        strip --strip-unneeded --remove-section=.comment --remove-section=.note "$b"
    fi
done
find "$pkg" -type d -exec chmod 0755 {} +

size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
depends="libc6, libgcc-s1, libstdc++6, restic"   # util-linux (flock) is essential
install -d "$pkg/DEBIAN"
cat > "$pkg/DEBIAN/control" <<EOF
Package: ailee-recovery
Version: $version
Section: utils
Priority: optional
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $size
Depends: $depends
Recommends: prometheus-node-exporter
Suggests: rocksdb-tools
Description: crash recovery tools for AILEE layer-2 nodes
 Small Unix-style tools that operators of an AILEE node (a Bitcoin-anchored
 layer-2 node) use after a crash: verify the L2 state snapshots against their
 anchors, extract and prune them, create, check and copy the reorg-detection
 RocksDB database, rebuild it from a Bitcoin node, re-anchor a state, and back
 up and restore a node's data directory with restic.
EOF
deb=$out/ailee-recovery_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
