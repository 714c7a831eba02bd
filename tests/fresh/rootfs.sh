#!/usr/bin/env bash
# Cached Debian bookworm root file systems, for tests that start from a brand-new machine.
#
#   tests/fresh/rootfs.sh base    print the path of bookworm-minbase.tar.gz
#                                 (debootstrap --variant=minbase: what a new machine or the
#                                 debian:bookworm-slim image starts from)
#   tests/fresh/rootfs.sh fresh   print the path of bookworm-fresh.tar.gz: base plus git,
#                                 ca-certificates and sudo, nothing else (what the README
#                                 assumes a user has)
#
# Each tarball is built on first use and kept in AP_ROOTFS_CACHE (default
# /var/cache/api-proxy, outside any clone, so every CI run on the machine reuses it).
# Building needs root and Debian's archive (the only mirror reachable): the base takes a
# few minutes once; afterwards this prints the path at once. Concurrent callers wait on a
# lock instead of building twice. Progress goes to stderr, the path alone to stdout.
set -euo pipefail

CACHE=${AP_ROOTFS_CACHE:-/var/cache/api-proxy}
MIRROR=${AP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm

die() { echo "rootfs.sh: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot)"
what=${1:-}
case "$what" in base|fresh) ;; *) die "usage: $0 base|fresh" ;; esac

mkdir -p "$CACHE"
base_tar=$CACHE/$SUITE-minbase.tar.gz
fresh_tar=$CACHE/$SUITE-fresh.tar.gz

# The tarballs strip apt's lists and downloaded packages: a new machine has none, and the
# tests' own apt-get update must fetch them as a user's would.
pack() { # dir tarball
    rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/archives/*.deb "$1"/var/cache/apt/*.bin
    tar --numeric-owner -C "$1" -cf - . | gzip -1 >"$2.tmp"
    mv "$2.tmp" "$2"
}

build_base() {
    command -v debootstrap >/dev/null || "$(dirname "$0")/../../scripts/deps.sh" fresh
    local dir
    dir=$(mktemp -d "$CACHE/build.XXXXXX")
    chmod 755 "$dir" # mktemp's 0700 would become the root directory's mode
    echo "rootfs.sh: debootstrap --variant=minbase $SUITE from $MIRROR (once; a few minutes)" >&2
    if ! debootstrap --variant=minbase "$SUITE" "$dir" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/debootstrap.log" >&2
        rm -rf "$dir"
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    pack "$dir" "$base_tar"
    rm -rf "$dir"
}

build_fresh() {
    local dir
    dir=$(mktemp -d "$CACHE/build.XXXXXX")
    tar --numeric-owner -C "$dir" -xzf "$base_tar" # restores the root directory's 0755 too
    echo "rootfs.sh: adding git, ca-certificates and sudo to the base root (once)" >&2
    cp /etc/resolv.conf "$dir/etc/resolv.conf"
    # A private mount namespace: the mounts vanish with it, whatever happens.
    if ! unshare --mount --propagation private -- /bin/sh -ec '
            mount -t proc proc "$1/proc"
            mount --rbind /dev "$1/dev"
            chroot "$1" /bin/sh -ec "
                export DEBIAN_FRONTEND=noninteractive
                apt-get update -qq
                apt-get install -y -qq --no-install-recommends git ca-certificates sudo >/dev/null
                apt-get clean"' sh "$dir" >&2; then
        rm -rf "$dir"
        die "installing git, ca-certificates, sudo into the root failed"
    fi
    pack "$dir" "$fresh_tar"
    rm -rf "$dir"
}

exec 9>"$CACHE/.lock"
flock 9
[ -s "$base_tar" ] || build_base
if [ "$what" = fresh ]; then
    [ -s "$fresh_tar" ] || build_fresh
    echo "$fresh_tar"
else
    echo "$base_tar"
fi
