#!/usr/bin/env bash
# Installs the Debian packages a task needs, only those missing.
#   scripts/deps.sh build|run|test|bench|fresh|containers ...
# (fresh: what tests/fresh/ needs to make a new Debian root; containers: podman, for the
# compose fleet test)
# Package installs must not start system services (we run our own private
# redis-server/nginx/haproxy), so a policy-rc.d denies service starts while
# apt-get runs.
set -euo pipefail

build=(gcc make pkg-config libc6-dev libevent-dev libhiredis-dev libcurl4-openssl-dev libcjson-dev libssl-dev)
run=(redis-server python3 curl)
test=(libcmocka-dev valgrind procps nodejs npm openssl haproxy redis-sentinel docker-compose chromium cppcheck clang libclang-rt-14-dev)
bench=(wrk nginx-light util-linux procps)
fresh=(debootstrap util-linux curl python3 git)
containers=(podman podman-compose runc containernetworking-plugins golang-github-containernetworking-plugin-dnsname
            iptables debootstrap util-linux python3)

want=()
for task in "$@"; do
    case "$task" in
    build) want+=("${build[@]}") ;;
    run) want+=("${build[@]}" "${run[@]}") ;;
    test) want+=("${build[@]}" "${run[@]}" "${test[@]}") ;;
    bench) want+=("${build[@]}" "${run[@]}" "${bench[@]}") ;;
    fresh) want+=("${fresh[@]}") ;;
    containers) want+=("${containers[@]}") ;;
    *) echo "deps.sh: unknown task '$task' (build, run, test, bench, fresh, containers)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    # Node may come from another repository (nodesource bundles npm): a working command is enough.
    case "$p" in
    nodejs) command -v node >/dev/null && continue ;;
    npm) command -v npm >/dev/null && continue ;;
    esac
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=()
[ "$(id -u)" -eq 0 ] || sudo=(sudo)
echo "deps.sh: installing ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
    "${sudo[@]}" chmod +x "$policy"
    own_policy=1
fi
cleanup() { [ "$own_policy" -eq 1 ] && "${sudo[@]}" rm -f "$policy"; true; }
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
