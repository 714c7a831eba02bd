#!/usr/bin/env bash
# From a fresh Debian machine to a working api-proxy in one command:
# installs what is missing, builds, then runs in the foreground
#   - a private redis-server (data in var/redis, AOF on), unless REDIS_URL is set
#   - the bundled demo upstream (tests/mock_upstream.py on :8080), unless UPSTREAM_URL is set
#   - the poller, when it is built
#   - the proxy on PROXY_PORT (8180)
# Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh run
make -j"$(nproc)" all >/dev/null

mkdir -p var/redis
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

wait_port() { # host port what
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "run.sh: $3 did not come up on $1:$2" >&2
    exit 1
}

ADMIN_KEY_FILE=
if [ -z "${ADMIN_KEY:-}" ]; then
    [ -s var/admin_key ] || (umask 077; echo "sk-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > var/admin_key)
    ADMIN_KEY=$(cat var/admin_key)
    ADMIN_KEY_FILE=var/admin_key
    echo "Admin key: in var/admin_key (export ADMIN_KEY=\$(cat var/admin_key))"
fi
export ADMIN_KEY

if [ -z "${REDIS_URL:-}" ]; then
    port=${AP_REDIS_PORT:-6380}
    redis-server --port "$port" --bind 127.0.0.1 --dir "$root/var/redis" --appendonly yes \
        --save 900 1 --daemonize no --logfile "$root/var/redis/redis.log" &
    pids+=($!)
    wait_port 127.0.0.1 "$port" redis-server
    export REDIS_URL="redis://127.0.0.1:$port/0"
    echo "Redis: $REDIS_URL (data in var/redis)"
fi

if [ -z "${UPSTREAM_URL:-}" ]; then
    python3 tests/mock_upstream.py --port 8080 --bind 127.0.0.1 >var/demo-upstream.log 2>&1 &
    pids+=($!)
    wait_port 127.0.0.1 8080 "demo upstream"
    export UPSTREAM_URL=http://127.0.0.1:8080
    echo "Upstream: the bundled demo upstream at $UPSTREAM_URL (set UPSTREAM_URL for a real one)"
fi

if [ -z "${FALLBACK_CONFIG:-}" ]; then
    if [ -f fallback.json ]; then FALLBACK_CONFIG=$root/fallback.json; else FALLBACK_CONFIG=$root/fallback.json.example; fi
fi
export FALLBACK_CONFIG
export USAGE_TZ=${USAGE_TZ:-+00:00}

if [ -x bin/api-poller ]; then
    bin/api-poller &
    pids+=($!)
fi
bin/api-proxy &
pids+=($!)
wait_port 127.0.0.1 "${PROXY_PORT:-8180}" api-proxy
echo "api-proxy: http://127.0.0.1:${PROXY_PORT:-8180} (Ctrl-C stops everything)"
echo "Admin console: http://127.0.0.1:${PROXY_PORT:-8180}/ui/ (sign in with the admin key${ADMIN_KEY_FILE:+ in $ADMIN_KEY_FILE})"
wait -n "${pids[@]}"
