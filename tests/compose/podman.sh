#!/usr/bin/env bash
# The compose fleet on a machine without Docker: Debian's podman and podman-compose, with
# settings that work on these VMs and local stand-ins for the public images that
# docker-compose.yml names (nothing is pulled from a registry).
#
#   tests/compose/podman.sh check          exit 0 when podman can run containers here, else
#                                          print why not and exit 3
#   tests/compose/podman.sh images         build (cached layers) what the compose file needs:
#       docker.io/library/debian:bookworm-slim   imported from a debootstrap root (rootfs.sh base)
#       docker.io/library/redis:7.0-bookworm     stand-ins from Debian's packages (images/*)
#       docker.io/library/haproxy:2.6-bookworm
#       docker.io/library/python:3.11-slim-bookworm
#       api-proxy:latest                         the repository's Dockerfile
#   tests/compose/podman.sh compose ARGS   podman-compose ARGS, from the repository's root
#   tests/compose/podman.sh podman ARGS    podman ARGS
#
# Nothing in /etc is changed: the settings come from this directory (containers.conf,
# registries.conf) through CONTAINERS_CONF / CONTAINERS_REGISTRIES_CONF, and images and
# network files live in their own store under AP_ROOTFS_CACHE (default
# /var/cache/api-proxy/containers), kept between runs so builds reuse their layers.
# Needs root.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CACHE=${AP_ROOTFS_CACHE:-/var/cache/api-proxy}
STORE=$CACHE/containers
BASE=docker.io/library/debian:bookworm-slim

export CONTAINERS_CONF=$STORE/containers.conf
export CONTAINERS_REGISTRIES_CONF=$HERE/registries.conf
export CONTAINERS_STORAGE_CONF=$STORE/storage.conf
# `podman build` (and podman-compose's builds) without a container runtime of their own:
# RUN steps in a chroot with the host's network, which reaches Debian's archive.
export BUILDAH_ISOLATION=chroot

die() { echo "podman.sh: $*" >&2; exit 1; }

# The store's paths, and the networks' CNI files, under $STORE: nothing lands in /etc.
storage_conf() {
    mkdir -p "$STORE"
    local want
    want=$(printf '[storage]\ndriver = "overlay"\ngraphroot = "%s"\nrunroot = "/run/api-proxy-containers"\n' "$STORE/storage")
    [ "$(cat "$CONTAINERS_STORAGE_CONF" 2>/dev/null)" = "$want" ] || echo "$want" >"$CONTAINERS_STORAGE_CONF"
    want=$(cat "$HERE/containers.conf"; printf 'network_config_dir = "%s"\n' "$STORE/cni")
    [ "$(cat "$CONTAINERS_CONF" 2>/dev/null)" = "$want" ] || echo "$want" >"$CONTAINERS_CONF"
}

base_image() {
    podman image exists "$BASE" && return 0
    local tar
    tar=$("$ROOT/tests/fresh/rootfs.sh" base) || die "no base root file system"
    echo "podman.sh: importing $tar as $BASE" >&2
    podman import -q --change 'CMD ["bash"]' "$tar" "$BASE" >/dev/null
}

cmd_check() {
    local why=
    if [ "$(id -u)" -ne 0 ]; then
        why="not root (the fleet test uses rootful podman)"
    elif ! command -v podman >/dev/null || ! command -v podman-compose >/dev/null || ! command -v runc >/dev/null ||
        [ ! -x /usr/lib/cni/dnsname ]; then
        why="podman, podman-compose, runc or CNI's dnsname is not installed (scripts/deps.sh containers)"
    elif [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ ! -d /sys/fs/cgroup/memory ]; then
        why="no cgroup file system at /sys/fs/cgroup (a chroot or a restricted container?)"
    elif ! storage_conf || ! out=$(podman info 2>&1 >/dev/null); then
        why="podman info fails: $(tail -n 1 <<<"$out")"
    fi
    if [ -z "$why" ]; then
        if ! out=$(base_image 2>&1); then
            why="cannot make the base image: $(tail -n 1 <<<"$out")"
        elif ! out=$(podman run --rm --pull=never "$BASE" true 2>&1); then
            why="podman cannot run a container here: $(tail -n 1 <<<"$out")"
        fi
    fi
    if [ -n "$why" ]; then
        echo "$why"
        exit 3
    fi
}

cmd_images() {
    storage_conf
    base_image
    local img t
    for img in redis:7.0-bookworm haproxy:2.6-bookworm python:3.11-slim-bookworm; do
        t=$(date +%s)
        podman build -q --pull=never -t "docker.io/library/$img" "$HERE/images/${img%%:*}" >/dev/null ||
            die "building the $img stand-in failed"
        echo "podman.sh: $img ready in $(( $(date +%s) - t ))s" >&2
    done
    t=$(date +%s)
    # The build stage gets a tag of its own: its package layer is then an ancestor of a
    # tagged image, which the prune below keeps, so the next build reuses it.
    podman build -q --pull=never --target build -t localhost/api-proxy-build:cache "$ROOT" >/dev/null &&
        podman build -q --pull=never -t api-proxy:latest "$ROOT" >/dev/null || die "building api-proxy:latest failed"
    echo "podman.sh: api-proxy:latest ready in $(( $(date +%s) - t ))s" >&2
    # Earlier builds' layers, now untagged.
    podman image prune -f >/dev/null
}

case "${1:-}" in
check) cmd_check ;;
images) cmd_images ;;
compose) shift; storage_conf; cd "$ROOT"; exec podman-compose "$@" ;;
podman) shift; storage_conf; exec podman "$@" ;;
*) echo "usage: $0 check|images|compose ARGS|podman ARGS" >&2; exit 2 ;;
esac
