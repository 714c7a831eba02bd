#!/usr/bin/env bash
# From a fresh Debian machine to a working api-proxy in one command:
# installs what is missing, builds, then runs in the foreground
#   - a private redis-server on AP_REDIS_PORT (6380; data in var/redis, AOF on), unless
#     REDIS_URL is set
#   - the bundled demo upstream (tests/mock_upstream.py) on AP_DEMO_PORT (8080), unless
#     UPSTREAM_URL is set
#   - the poller, when it is built
#   - the proxy on PROXY_PORT (8180)
# then prints where to go next (URLs, the admin key, a key to create, a first request).
# The daemons log to var/log/ (JSON lines), so the terminal keeps what to do next.
# Ctrl-C stops everything it started; so does any of them exiting (with its log's end).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
scripts/deps.sh run
make -j"$(nproc)" all >/dev/null

mkdir -p var/redis var/log
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

wait_port() { # host port what (the last process started is the one that must listen)
    local pid=${pids[-1]}
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "run.sh: $3 did not come up on $1:$2; the logs' last lines:" >&2
    tail -n 5 var/log/*.log >&2 2>/dev/null || true
    exit 1
}

admin_from=env
if [ -z "${ADMIN_KEY:-}" ]; then
    [ -s var/admin_key ] || (umask 077; echo "sk-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" > var/admin_key)
    ADMIN_KEY=$(cat var/admin_key)
    admin_from=file
    echo "Admin key: in $root/var/admin_key"
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
    demo_port=${AP_DEMO_PORT:-8080}
    python3 tests/mock_upstream.py --port "$demo_port" --bind 127.0.0.1 >var/log/demo-upstream.log 2>&1 &
    pids+=($!)
    wait_port 127.0.0.1 "$demo_port" "demo upstream"
    export UPSTREAM_URL=http://127.0.0.1:$demo_port
    echo "Upstream: the bundled demo upstream at $UPSTREAM_URL (set UPSTREAM_URL for a real one)"
fi

if [ -z "${FALLBACK_CONFIG:-}" ]; then
    if [ -f fallback.json ]; then FALLBACK_CONFIG=$root/fallback.json; else FALLBACK_CONFIG=$root/fallback.json.example; fi
fi
export FALLBACK_CONFIG
export USAGE_TZ=${USAGE_TZ:-+00:00}

if [ -x bin/api-poller ]; then
    bin/api-poller 2>>var/log/poller.log &
    pids+=($!)
fi
bin/api-proxy 2>>var/log/proxy.log &
pids+=($!)
wait_port 127.0.0.1 "${PROXY_PORT:-8180}" api-proxy

# Where to go next: lines to paste into another terminal as they are.
host=${PROXY_BIND:-0.0.0.0}
case "$host" in 0.0.0.0 | :: | 127.0.0.1) host=localhost ;; *:*) host="[$host]" ;; esac
url="http://$host:${PROXY_PORT:-8180}"
msg='{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hello"}]}'
echo "api-proxy: $url (Ctrl-C stops everything)"
echo
echo "Next, in another terminal:"
if [ "$admin_from" = file ]; then
    echo "  export ADMIN_KEY=\$(cat $root/var/admin_key)"
else
    echo "  # ADMIN_KEY: the one you set in the environment"
fi
cat <<EOF
  # create a key (the only time it is shown):
  KEY=\$(curl -s -X POST -H "x-api-key: \$ADMIN_KEY" -d '{"name":"me"}' $url/admin/keys | python3 -c 'import json,sys; print(json.load(sys.stdin)["api_key"])')
  # call the API with it:
  curl -s -H "x-api-key: \$KEY" -H "anthropic-version: 2023-06-01" -H "content-type: application/json" -d '$msg' $url/v1/messages
  # the console: $url/ui/
  # more (usage, keys, fallback status): README.md, "Using it"
Logs: tail -f $root/var/log/*.log
EOF
status=0
wait -n "${pids[@]}" || status=$?
echo "run.sh: a process exited (status $status); stopping the others. The logs' last lines:" >&2
tail -n 5 var/log/*.log var/redis/redis.log >&2 2>/dev/null || true
exit 1
