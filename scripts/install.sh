#!/usr/bin/env bash
# install.sh [--prefix P] [--destdir D] [--bin-dir B] [--no-build]
#
# Installs the AILEE recovery tools like Unix tools:
#   P/bin                              the binaries and the runbook scripts
#   P/lib/ailee-recovery/lib.sh        the scripts' shared library
#   P/share/man/man1                   a man page per command (generated from the
#                                      binaries' clap definitions; the scripts'
#                                      from their --help)
#   P/share/bash-completion/completions, P/share/zsh/vendor-completions,
#   P/share/fish/vendor_completions.d  shell completions of the binaries
#   P/share/ailee-recovery/examples    systemd units and timers, the cron file,
#                                      alert rules, pointing at P/bin
#   P/share/doc/ailee-recovery         README, RELIABILITY, BENCHMARKS and docs/
# P defaults to /usr/local. --destdir D stages everything under D (paths written
# into the files still name P), as packagers do. The binaries come from a
# release build (cargo build --release, into $CARGO_TARGET_DIR, default
# ~/.cache/ailee-recovery/target), or from --bin-dir B with --no-build.
# Exit 0 on success, 1 on any error.
set -euo pipefail
here=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
root=$(cd "$here/.." && pwd)
prefix=/usr/local destdir= bindir= build=1
while [ $# -gt 0 ]; do
    case $1 in
        --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
        --destdir) destdir=${2:?--destdir needs a directory}; shift 2 ;;
        --bin-dir) bindir=${2:?--bin-dir needs a directory}; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$here/install.sh"; exit 0 ;;
        -V|--version) echo "install.sh $(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 1 ;;
    esac
done
case $prefix in /*) ;; *) echo "install.sh: --prefix must be an absolute path" >&2; exit 1 ;; esac
prefix=${prefix%/}
[ -n "$prefix" ] || prefix=/

if [ -z "$bindir" ]; then
    source "$here/env.sh"
    bindir=$AILEE_BIN
fi
if [ "$build" = 1 ]; then
    (cd "$root" && cargo build --release --workspace --bins -q)
fi
shopt -s nullglob
bins=()
for b in "$bindir"/ailee_*; do
    [ -f "$b" ] && [ -x "$b" ] && bins+=("$b")
done
((${#bins[@]})) || { echo "install.sh: no ailee_* binaries in $bindir (build first, or --bin-dir)" >&2; exit 1; }
scripts=()
for s in "$root"/scripts/ailee_*; do
    [ -f "$s" ] && scripts+=("$s")
done

d=$destdir$prefix
install -d "$d/bin" "$d/lib/ailee-recovery" "$d/share/man/man1" "$d/share/ailee-recovery/examples" \
    "$d/share/bash-completion/completions" "$d/share/zsh/vendor-completions" "$d/share/fish/vendor_completions.d" \
    "$d/share/doc/ailee-recovery"

for b in "${bins[@]}"; do
    n=$(basename "$b")
    install -m 0755 "$b" "$d/bin/$n"
    "$b" --generate man | gzip -9n > "$d/share/man/man1/$n.1.gz"
    "$b" --generate complete-bash > "$d/share/bash-completion/completions/$n"
    "$b" --generate complete-zsh > "$d/share/zsh/vendor-completions/_$n"
    "$b" --generate complete-fish > "$d/share/fish/vendor_completions.d/$n.fish"
done

# A man page from a script's --help: first line the synopsis, the rest as is.
script_man() {
    local name=$1 help version
    help=$("$2" --help)
    version=$("$2" --version | awk '{ print $2 }')
    printf '.TH %s 1 "" "%s %s" "User Commands"\n' "$(tr '[:lower:]' '[:upper:]' <<<"$name" | sed 's/_/\\_/g')" ailee-recovery "$version"
    printf '.SH NAME\n%s \\- %s\n' "$(sed 's/_/\\_/g' <<<"$name")" "$(sed -n '2p' <<<"$help" | sed 's/\\/\\e/g; s/^\./\\\&./')"
    printf '.SH SYNOPSIS\n.nf\n%s\n.fi\n' "$(head -n 1 <<<"$help" | sed 's/\\/\\e/g')"
    printf '.SH DESCRIPTION\n.nf\n'
    tail -n +2 <<<"$help" | sed 's/\\/\\e/g; s/^\([.'"'"']\)/\\\&\1/'
    printf '.fi\n.SH SEE ALSO\nailee_l2_verify(1), ailee_init_reorg_db(1)\n'
}

for s in "${scripts[@]}"; do
    n=$(basename "$s")
    [ -e "$d/bin/$n" ] && continue   # a binary of that name wins
    # Installed, the library sits in ../lib/ailee-recovery (relative: the
    # installed tree can be moved or extracted anywhere).
    sed 's|^source "$(dirname "$(readlink -f "$0")")/lib.sh"$|source "$(dirname "$(readlink -f "$0")")/../lib/ailee-recovery/lib.sh"|' \
        "$s" > "$d/bin/$n"
    chmod 0755 "$d/bin/$n"
    script_man "$n" "$s" | gzip -9n > "$d/share/man/man1/$n.1.gz"
done
install -m 0644 "$root/scripts/lib.sh" "$d/lib/ailee-recovery/lib.sh"

for e in "$root"/scripts/examples/*; do
    [ -f "$e" ] || continue
    sed "s|/opt/ailee/bin|$prefix/bin|g" "$e" > "$d/share/ailee-recovery/examples/$(basename "$e")"
    chmod 0644 "$d/share/ailee-recovery/examples/$(basename "$e")"
done
for e in "$root"/scripts/examples/*/; do
    [ -d "$e" ] || continue
    install -d "$d/share/ailee-recovery/examples/$(basename "$e")"
    for f in "$e"*; do
        [ -f "$f" ] && install -m 0644 "$f" "$d/share/ailee-recovery/examples/$(basename "$e")/$(basename "$f")"
    done
done
# The documents keep the clone's tree, so the links between them resolve.
install -d "$d/share/doc/ailee-recovery/docs"
for f in README.md RELIABILITY.md BENCHMARKS.md; do
    install -m 0644 "$root/$f" "$d/share/doc/ailee-recovery/$f"
done
for f in "$root"/docs/*.md; do
    install -m 0644 "$f" "$d/share/doc/ailee-recovery/docs/$(basename "$f")"
done
echo "Installed ${#bins[@]} binaries and ${#scripts[@]} scripts into ${destdir:+$destdir}$prefix" >&2
