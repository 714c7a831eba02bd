#!/usr/bin/env bash
# The api-proxy fleet of docker-compose.yml as plain local processes, for trying a fleet
# on one machine and for tests/integration/test_cluster.py:
#
#   redis-server (private port, AOF, data in the state dir)
#   the demo upstream (tests/mock_upstream.py)
#   two pollers (poller1 and poller2: one active, one standby)
#   three proxy replicas (proxy1..proxy3)
#   HAProxy (from the distribution, run as a plain process) as the load balancer, with
#   health checks on /health every 500 ms (down after 2 failures, up after 2 successes)
#
# Usage:
#   tests/cluster/cluster.sh start   [--dir DIR]   start everything, wait until it is ready
#   tests/cluster/cluster.sh stop    [--dir DIR]   stop everything it started
#   tests/cluster/cluster.sh status  [--dir DIR]   what is running (exit 1 if something is not)
#   tests/cluster/cluster.sh restart NAME [--dir DIR]
#       stop one component (if running) and start it again with the same ports and
#       environment; NAME: redis upstream poller1 poller2 proxy1 proxy2 proxy3 haproxy
#   tests/cluster/cluster.sh restart-replica N [--dir DIR]   same as "restart proxyN"
#
# The state dir (default <repo>/var/cluster; also env CLUSTER_DIR) holds logs/, pids/,
# redis/ (the AOF, kept across stop/start: remove the dir for a fresh fleet), the
# generated haproxy.cfg and fallback.json, admin_key, and cluster.env / cluster.json
# (URLs, ports, pids, the admin key). `source DIR/cluster.env` sets ADMIN_KEY,
# CLUSTER_LB_URL and REDIS_URL in a shell.
#
# Environment (all optional):
#   CLUSTER_LB_PORT (8180)        the load balancer        CLUSTER_BIND (127.0.0.1) its address
#   CLUSTER_LB_STATS_PORT (8184)  HAProxy's stats page (/stats, /stats;csv) on 127.0.0.1
#   CLUSTER_PROXY1_PORT..CLUSTER_PROXY3_PORT (8181..8183)   replicas, on 127.0.0.1
#   CLUSTER_POLLER1_PORT, CLUSTER_POLLER2_PORT (8191, 8192) pollers' /health and /metrics
#   CLUSTER_REDIS_PORT (6381)     CLUSTER_UPSTREAM_PORT (8280)  the demo upstream
#   CLUSTER_POLL_INTERVAL (5)     health_poll_interval_seconds of the generated chain
#   CLUSTER_REACTIVE_COOLDOWN (60)   reactive_cooldown_seconds of the generated chain
#   CLUSTER_REDIS_FSYNC (everysec)   appendfsync of Redis
#   CLUSTER_STOP_TIMEOUT (35)     seconds between SIGTERM and SIGKILL
#   CLUSTER_READY_TIMEOUT (20)    seconds a component may take to become ready
#   ADMIN_KEY                     used when set, else the one in DIR/admin_key, else generated
#   AP_BIN (<repo>/bin)  binaries; PYTHON (python3); HAPROXY, REDIS_SERVER: executables
# The replicas' and pollers' other settings pass through from the environment of `start`
# (e.g. USAGE_FLUSH_MS, USAGE_DURABLE, POLL_INTERVAL_SECONDS, LOG_LEVEL, USAGE_TZ,
# SHUTDOWN_GRACE_SECONDS, LARK_*), are recorded in cluster.env and reused by `restart`.
#
# It installs nothing and touches no system service: every process is started by this
# script, tracked by pid, and stopped by pid (SIGTERM, then SIGKILL after the timeout).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=${0##*/}

COMPONENTS=(redis upstream poller1 poller2 proxy1 proxy2 proxy3 haproxy)
# Product settings that pass through to the replicas and pollers (besides LARK_*).
PASSTHROUGH_VARS=(CLIENT_TIMEOUT_SECONDS KEYS_FILE LOG_LEVEL MAX_BODY_BYTES MAX_HEADER_BYTES
    POLICY_DEFAULT_MAX_TOKENS POLICY_FAIL_MODE POLICY_LEASE_SECONDS POLICY_TIMEOUT_MS PRICES_CONFIG
    POLL_INTERVAL_SECONDS REDIS_PREFIX REQUEST_READ_TIMEOUT_SECONDS SHUTDOWN_GRACE_SECONDS
    STREAM_BUFFER_BYTES UPSTREAM_API_KEY UPSTREAM_CONNECT_TIMEOUT_MS
    UPSTREAM_READ_TIMEOUT_SECONDS USAGE_DURABLE USAGE_FLUSH_MS USAGE_TZ)

usage() {
    sed -n '2,/^set -/p' "$0" | sed -e '/^set -/d' -e 's/^# \{0,1\}//'
    exit "${1:-2}"
}

say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# ---- arguments -------------------------------------------------------------------------
CMD=${1:-}
[ $# -gt 0 ] && shift
TARGET=""
DIR=${CLUSTER_DIR:-}
while [ $# -gt 0 ]; do
    case $1 in
        --dir) [ $# -ge 2 ] || usage; DIR=$2; shift 2 ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        -h|--help) usage 0 ;;
        -*) warn "unknown option: $1"; usage ;;
        *) [ -z "$TARGET" ] || usage; TARGET=$1; shift ;;
    esac
done
case $CMD in
    start|stop|status) [ -z "$TARGET" ] || usage ;;
    restart) [ -n "$TARGET" ] || usage ;;
    restart-replica)
        case $TARGET in 1|2|3) TARGET=proxy$TARGET; CMD=restart ;; *) usage ;; esac ;;
    -h|--help|help) usage 0 ;;
    *) usage ;;
esac
DIR=${DIR:-$ROOT/var/cluster}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
ENV_FILE=$DIR/cluster.env

# ---- small helpers ---------------------------------------------------------------------
now_ms() { local t=${EPOCHREALTIME//[.,]/}; echo $((10#$t / 1000)); }

is_port() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

redis_ping() {
    local line=""
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    [ "${line%$'\r'}" = "+PONG" ]
}

# http_get URL [HEADER]: prints the body; succeeds only on a 2xx answer.
http_get() {
    if command -v curl >/dev/null 2>&1; then
        if [ $# -ge 2 ]; then
            curl -fsS --max-time 2 -H "$2" "$1" 2>/dev/null
        else
            curl -fsS --max-time 2 "$1" 2>/dev/null
        fi
    else
        "$PYTHON" - "$@" <<'PY' 2>/dev/null
import sys, urllib.request
req = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 2:
    k, _, v = sys.argv[2].partition(":")
    req.add_header(k.strip(), v.strip())
sys.stdout.write(urllib.request.urlopen(req, timeout=2).read().decode())
PY
    fi
}

pidfile() { echo "$DIR/pids/$1.pid"; }
logfile() { echo "$DIR/logs/$1.log"; }

getpid() {
    local f
    f=$(pidfile "$1")
    if [ -s "$f" ]; then cat "$f"; fi
}

# What the command line of each component contains (checked before any signal is sent,
# so a recycled pid is never signalled).
marker() {
    case $1 in
        redis) echo "$REDIS_SERVER" ;;
        upstream) echo "mock_upstream.py" ;;
        poller*) echo "$AP_BIN/api-poller" ;;
        proxy*) echo "$AP_BIN/api-proxy" ;;
        haproxy) echo "$DIR/haproxy.cfg" ;;
    esac
}

# pid_is NAME PID: PID is alive (not a zombie) and is that component.
pid_is() {
    local name=$1 pid=$2 state cmdline
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    state=$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1) || return 1
    [ "$state" != "Z" ] || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    local m
    m=$(marker "$name")
    # redis-server rewrites its title to "redis-server 127.0.0.1:PORT".
    [[ $cmdline == *"$m"* ]] || { [ "$name" = redis ] && [[ $cmdline == *"redis-server"*":$CLUSTER_REDIS_PORT"* ]]; }
}

running() { pid_is "$1" "$(getpid "$1")"; }

port_of() {
    case $1 in
        redis) echo "$CLUSTER_REDIS_PORT" ;;
        upstream) echo "$CLUSTER_UPSTREAM_PORT" ;;
        poller1) echo "$CLUSTER_POLLER1_PORT" ;;
        poller2) echo "$CLUSTER_POLLER2_PORT" ;;
        proxy1) echo "$CLUSTER_PROXY1_PORT" ;;
        proxy2) echo "$CLUSTER_PROXY2_PORT" ;;
        proxy3) echo "$CLUSTER_PROXY3_PORT" ;;
        haproxy) echo "$CLUSTER_LB_PORT" ;;
    esac
}

log_tail() {
    local f
    f=$(logfile "$1")
    if [ -s "$f" ]; then
        warn "last lines of $f:"
        tail -n 25 "$f" | sed 's/^/    | /' >&2
    fi
}

STARTING=0
die() {
    warn "$*"
    if [ "$STARTING" = 1 ]; then
        warn "stopping what was started"
        STARTING=0
        stop_all >&2 || true
    fi
    exit 1
}

on_err() {
    trap - ERR
    die "internal error at line $1: $2 (exit status $3)"
}
trap 'on_err "$LINENO" "$BASH_COMMAND" "$?"' ERR

# ---- configuration ---------------------------------------------------------------------
find_exe() { # env-override name...
    local v=$1; shift
    if [ -n "$v" ]; then echo "$v"; return; fi
    local n
    for n in "$@"; do
        if command -v "$n" >/dev/null 2>&1; then command -v "$n"; return; fi
        for d in /usr/sbin /usr/local/sbin /sbin; do
            [ -x "$d/$n" ] && { echo "$d/$n"; return; }
        done
    done
}

# Fresh configuration from the caller's environment (start).
config_from_env() {
    CLUSTER_BIND=${CLUSTER_BIND:-127.0.0.1}
    CLUSTER_LB_PORT=${CLUSTER_LB_PORT:-8180}
    CLUSTER_LB_STATS_PORT=${CLUSTER_LB_STATS_PORT:-8184}
    CLUSTER_PROXY1_PORT=${CLUSTER_PROXY1_PORT:-8181}
    CLUSTER_PROXY2_PORT=${CLUSTER_PROXY2_PORT:-8182}
    CLUSTER_PROXY3_PORT=${CLUSTER_PROXY3_PORT:-8183}
    CLUSTER_POLLER1_PORT=${CLUSTER_POLLER1_PORT:-8191}
    CLUSTER_POLLER2_PORT=${CLUSTER_POLLER2_PORT:-8192}
    CLUSTER_REDIS_PORT=${CLUSTER_REDIS_PORT:-6381}
    CLUSTER_UPSTREAM_PORT=${CLUSTER_UPSTREAM_PORT:-8280}
    CLUSTER_POLL_INTERVAL=${CLUSTER_POLL_INTERVAL:-5}
    CLUSTER_REACTIVE_COOLDOWN=${CLUSTER_REACTIVE_COOLDOWN:-60}
    CLUSTER_REDIS_FSYNC=${CLUSTER_REDIS_FSYNC:-everysec}
    CLUSTER_STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-35}
    CLUSTER_READY_TIMEOUT=${CLUSTER_READY_TIMEOUT:-20}
    AP_BIN=${AP_BIN:-$ROOT/bin}
    case $AP_BIN in /*) ;; *) AP_BIN=$PWD/$AP_BIN ;; esac
    PYTHON=${PYTHON:-python3}
    PYTHON=$(command -v "$PYTHON" || echo "$PYTHON")
    HAPROXY=$(find_exe "${HAPROXY:-}" haproxy)
    REDIS_SERVER=$(find_exe "${REDIS_SERVER:-}" redis-server)

    local p seen=" "
    for p in CLUSTER_LB_PORT CLUSTER_LB_STATS_PORT CLUSTER_PROXY1_PORT CLUSTER_PROXY2_PORT \
             CLUSTER_PROXY3_PORT CLUSTER_POLLER1_PORT CLUSTER_POLLER2_PORT CLUSTER_REDIS_PORT \
             CLUSTER_UPSTREAM_PORT; do
        is_port "${!p}" || die "$p=${!p} is not a port number"
        case $seen in *" ${!p} "*) die "$p=${!p}: port used twice" ;; esac
        seen="$seen${!p} "
    done
    for p in CLUSTER_POLL_INTERVAL CLUSTER_REACTIVE_COOLDOWN CLUSTER_STOP_TIMEOUT CLUSTER_READY_TIMEOUT; do
        [[ ${!p} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$p=${!p} is not a number"
    done
    [[ $CLUSTER_REDIS_FSYNC =~ ^(always|everysec|no)$ ]] || die "CLUSTER_REDIS_FSYNC must be always, everysec or no"

    if [ -z "$HAPROXY" ] || [ ! -x "$HAPROXY" ]; then
        die "haproxy not found (Debian: apt-get install haproxy; or set HAPROXY=/path/to/haproxy)"
    fi
    if [ -z "$REDIS_SERVER" ] || [ ! -x "$REDIS_SERVER" ]; then
        die "redis-server not found (Debian: apt-get install redis-server; or set REDIS_SERVER)"
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "python3 not found (needed for the demo upstream)"
    local b
    for b in api-proxy api-poller; do
        [ -x "$AP_BIN/$b" ] || die "$AP_BIN/$b is missing: run make first (or set AP_BIN)"
    done

    export CLUSTER_BIND CLUSTER_LB_PORT CLUSTER_LB_STATS_PORT CLUSTER_PROXY1_PORT \
        CLUSTER_PROXY2_PORT CLUSTER_PROXY3_PORT CLUSTER_POLLER1_PORT CLUSTER_POLLER2_PORT \
        CLUSTER_REDIS_PORT CLUSTER_UPSTREAM_PORT CLUSTER_POLL_INTERVAL CLUSTER_REACTIVE_COOLDOWN \
        CLUSTER_REDIS_FSYNC CLUSTER_STOP_TIMEOUT CLUSTER_READY_TIMEOUT AP_BIN PYTHON HAPROXY \
        REDIS_SERVER
    PASSTHROUGH=()
    local v
    for v in "${PASSTHROUGH_VARS[@]}" $(compgen -v LARK_ || true); do
        if [ -n "${!v+x}" ]; then PASSTHROUGH+=("$v"); fi
    done
}

write_env_file() {
    local v
    {
        echo "# api-proxy local fleet ($DIR), written by tests/cluster/cluster.sh start."
        echo "# Sourced by cluster.sh restart; \`source $ENV_FILE\` in a shell sets ADMIN_KEY etc."
        for v in CLUSTER_BIND CLUSTER_LB_PORT CLUSTER_LB_STATS_PORT CLUSTER_PROXY1_PORT \
                 CLUSTER_PROXY2_PORT CLUSTER_PROXY3_PORT CLUSTER_POLLER1_PORT CLUSTER_POLLER2_PORT \
                 CLUSTER_REDIS_PORT CLUSTER_UPSTREAM_PORT CLUSTER_POLL_INTERVAL \
                 CLUSTER_REACTIVE_COOLDOWN CLUSTER_REDIS_FSYNC CLUSTER_STOP_TIMEOUT \
                 CLUSTER_READY_TIMEOUT AP_BIN PYTHON HAPROXY REDIS_SERVER; do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
        printf 'export CLUSTER_DIR=%q\n' "$DIR"
        printf 'export CLUSTER_LB_URL=%q\n' "http://$(lb_host):$CLUSTER_LB_PORT"
        printf 'export REDIS_URL=%q\n' "redis://127.0.0.1:$CLUSTER_REDIS_PORT/0"
        printf 'export ADMIN_KEY=%q\n' "$ADMIN_KEY"
        printf 'CLUSTER_PASSTHROUGH=%q\n' "${PASSTHROUGH[*]:-}"
        for v in "${PASSTHROUGH[@]}"; do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
    } >"$ENV_FILE.tmp"
    mv "$ENV_FILE.tmp" "$ENV_FILE"
}

# The recorded configuration (every command but start).
config_from_file() {
    [ -f "$ENV_FILE" ] || die "no fleet in $DIR (no cluster.env): run \`$PROG start --dir $DIR\` first"
    # What the caller's shell has set must not change a restarted component.
    local v
    for v in "${PASSTHROUGH_VARS[@]}" $(compgen -v LARK_ || true); do unset "$v"; done
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    PASSTHROUGH=()
    # shellcheck disable=SC2206
    [ -z "${CLUSTER_PASSTHROUGH:-}" ] || PASSTHROUGH=($CLUSTER_PASSTHROUGH)
}

lb_host() {
    case $CLUSTER_BIND in 0.0.0.0|::|'*') echo 127.0.0.1 ;; *) echo "$CLUSTER_BIND" ;; esac
}

setup_admin_key() {
    local f=$DIR/admin_key
    if [ -n "${ADMIN_KEY:-}" ]; then
        :
    elif [ -s "$f" ]; then
        ADMIN_KEY=$(cat "$f")
    else
        ADMIN_KEY="sk-admin-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    fi
    (umask 077; printf '%s\n' "$ADMIN_KEY" >"$f.tmp" && mv "$f.tmp" "$f")
}

write_fallback() {
    cat >"$DIR/fallback.json.tmp" <<EOF
{
  "enabled": true,
  "health_poll_interval_seconds": $CLUSTER_POLL_INTERVAL,
  "min_remaining_fraction": 0.05,
  "reactive_cooldown_seconds": $CLUSTER_REACTIVE_COOLDOWN,
  "recovery_margin": 0.0,
  "tiers": [
    {"name": "Claude Opus 4.6", "model": "claude-opus-4-6-thinking", "type": "antigravity",
     "health_key": "claude-opus-4-6-thinking"},
    {"name": "Gemini 3 Pro High", "model": "gemini-3-pro-high", "type": "upstream"},
    {"name": "Kimi K2.5 (the demo upstream's OpenAI side)", "model": "kimi-k2.5",
     "type": "external", "base_url": "http://127.0.0.1:$CLUSTER_UPSTREAM_PORT/v1",
     "api_key": "demo-key", "max_tokens_limit": 8192}
  ]
}
EOF
    mv "$DIR/fallback.json.tmp" "$DIR/fallback.json"
}

write_haproxy_cfg() {
    sed -e "s|@BIND@|$CLUSTER_BIND|g" -e "s|@LB_PORT@|$CLUSTER_LB_PORT|g" \
        -e "s|@LB_STATS_PORT@|$CLUSTER_LB_STATS_PORT|g" \
        -e "s|@PROXY1_PORT@|$CLUSTER_PROXY1_PORT|g" -e "s|@PROXY2_PORT@|$CLUSTER_PROXY2_PORT|g" \
        -e "s|@PROXY3_PORT@|$CLUSTER_PROXY3_PORT|g" \
        "$HERE/haproxy.cfg.in" >"$DIR/haproxy.cfg.tmp"
    mv "$DIR/haproxy.cfg.tmp" "$DIR/haproxy.cfg"
    local out
    out=$("$HAPROXY" -c -q -f "$DIR/haproxy.cfg" 2>&1) || die "generated haproxy.cfg is invalid: $out"
}

write_json() {
    local n plist=()
    for n in "${COMPONENTS[@]}"; do
        if running "$n"; then plist+=("$n=$(getpid "$n")"); else plist+=("$n="); fi
    done
    CLUSTER_DIR=$DIR CLUSTER_LB_HOST=$(lb_host) ADMIN_KEY=$ADMIN_KEY \
    CLUSTER_PIDS="${plist[*]}" REDIS_PREFIX_VALUE=${REDIS_PREFIX:-ap:} \
        "$PYTHON" - <<'PY'
import json, os
e = os.environ
d = e["CLUSTER_DIR"]
pids = dict(x.split("=", 1) for x in e["CLUSTER_PIDS"].split())
ports = {"redis": e["CLUSTER_REDIS_PORT"], "upstream": e["CLUSTER_UPSTREAM_PORT"],
         "poller1": e["CLUSTER_POLLER1_PORT"], "poller2": e["CLUSTER_POLLER2_PORT"],
         "proxy1": e["CLUSTER_PROXY1_PORT"], "proxy2": e["CLUSTER_PROXY2_PORT"],
         "proxy3": e["CLUSTER_PROXY3_PORT"], "haproxy": e["CLUSTER_LB_PORT"]}
lb = "http://%s:%s" % (e["CLUSTER_LB_HOST"], e["CLUSTER_LB_PORT"])
comp = {}
for name, port in ports.items():
    port = int(port)
    if name == "redis":
        url = "redis://127.0.0.1:%d/0" % port
    elif name == "haproxy":
        url = lb
    else:
        url = "http://127.0.0.1:%d" % port
    pid = pids.get(name) or None
    comp[name] = {"pid": int(pid) if pid else None, "running": bool(pid), "port": port,
                  "url": url, "log": os.path.join(d, "logs", name + ".log"),
                  "pidfile": os.path.join(d, "pids", name + ".pid")}
doc = {
    "dir": d,
    "lb_url": lb,
    "lb_stats_url": "http://127.0.0.1:%s/stats" % e["CLUSTER_LB_STATS_PORT"],
    "admin_key": e["ADMIN_KEY"],
    "admin_key_file": os.path.join(d, "admin_key"),
    "redis_url": comp["redis"]["url"],
    "redis_prefix": e["REDIS_PREFIX_VALUE"],
    "upstream_url": comp["upstream"]["url"],
    "fallback_config": os.path.join(d, "fallback.json"),
    "haproxy_cfg": os.path.join(d, "haproxy.cfg"),
    "poll_interval_seconds": float(e["CLUSTER_POLL_INTERVAL"]),
    "replicas": [comp["proxy%d" % i]["url"] for i in (1, 2, 3)],
    "pollers": [comp["poller%d" % i]["url"] for i in (1, 2)],
    "components": comp,
}
tmp = os.path.join(d, "cluster.json.tmp")
old = os.umask(0o077)
try:
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
finally:
    os.umask(old)
os.replace(tmp, os.path.join(d, "cluster.json"))
PY
}

# ---- processes -------------------------------------------------------------------------
# spawn NAME CMD...: start CMD in its own session (a ^C in the terminal of `start` does not
# reach it), output appended to logs/NAME.log, pid in pids/NAME.pid.
spawn() {
    local name=$1; shift
    local log
    log=$(logfile "$name")
    printf '=== %s start: %s\n' "$(date '+%Y-%m-%d %H:%M:%S')" "$*" >>"$log"
    # Not a process-group leader (no job control here), so setsid execs in place: $! is
    # the pid of the component itself.
    ( cd "$ROOT" && exec setsid "$@" ) >>"$log" 2>&1 </dev/null &
    local pid=$! _
    echo "$pid" >"$(pidfile "$name")"
    # Until the subshell has exec'd, /proc/PID/cmdline is still this script's: wait for
    # the exec (or the exit) so that `running` is meaningful from now on.
    for _ in $(seq 1 500); do
        pid_is "$name" "$pid" && return 0
        [ -e "/proc/$pid" ] || return 0
        [ "$(sed -e 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)" != Z ] || return 0
        sleep 0.01
    done
}

common_env() { # the variables every replica and poller gets
    ENVARGS=(UPSTREAM_URL="http://127.0.0.1:$CLUSTER_UPSTREAM_PORT" UPSTREAM_FORMAT=anthropic
             REDIS_URL="redis://127.0.0.1:$CLUSTER_REDIS_PORT/0" FALLBACK_CONFIG="$DIR/fallback.json")
    local v
    for v in "${PASSTHROUGH[@]}"; do ENVARGS+=("$v=${!v}"); done
}

launch() {
    local name=$1 port
    port=$(port_of "$name")
    if port_busy "$port"; then
        die "$name: port $port is already in use by another program (set CLUSTER_*_PORT)"
    fi
    common_env
    case $name in
        redis)
            mkdir -p "$DIR/redis"
            spawn redis "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$DIR/redis" \
                --appendonly yes --appendfsync "$CLUSTER_REDIS_FSYNC" --save "" \
                --daemonize no --logfile "" ;;
        upstream)
            spawn upstream "$PYTHON" "$ROOT/tests/mock_upstream.py" --port "$port" --bind 127.0.0.1 ;;
        poller1|poller2)
            spawn "$name" env "${ENVARGS[@]}" INSTANCE_ID="$name" POLLER_PORT="$port" \
                POLLER_BIND=127.0.0.1 "$AP_BIN/api-poller" ;;
        proxy1|proxy2|proxy3)
            spawn "$name" env "${ENVARGS[@]}" INSTANCE_ID="$name" PROXY_PORT="$port" \
                PROXY_BIND=127.0.0.1 ADMIN_KEY="$ADMIN_KEY" "$AP_BIN/api-proxy" ;;
        haproxy)
            spawn haproxy "$HAPROXY" -f "$DIR/haproxy.cfg" -db ;;
        *) die "unknown component $name" ;;
    esac
}

# ready NAME: one readiness probe.
ready() {
    local name=$1 port
    port=$(port_of "$name")
    case $name in
        redis) redis_ping "$port" ;;
        upstream|poller1|poller2|proxy1|proxy2|proxy3)
            http_get "http://127.0.0.1:$port/health" >/dev/null ;;
        haproxy)
            http_get "http://127.0.0.1:$CLUSTER_LB_STATS_PORT/stats;csv" >/dev/null &&
                http_get "http://$(lb_host):$CLUSTER_LB_PORT/health" >/dev/null ;;
    esac
}

# wait_for WHAT TIMEOUT_S NAME-TO-WATCH PROBE...: poll the probe until it succeeds.
wait_for() {
    local what=$1 timeout=$2 watch=$3; shift 3
    local deadline=$(( $(now_ms) + ${timeout%.*} * 1000 ))
    while true; do
        if [ -n "$watch" ] && ! running "$watch"; then
            log_tail "$watch"
            die "$watch exited while waiting for $what"
        fi
        if "$@"; then return 0; fi
        if [ "$(now_ms)" -ge "$deadline" ]; then
            [ -z "$watch" ] || log_tail "$watch"
            die "timed out after ${timeout}s waiting for $what"
        fi
        sleep 0.05
    done
}

start_one() {
    local name=$1
    local t0
    t0=$(now_ms)
    launch "$name"
    wait_for "$name to be ready" "$CLUSTER_READY_TIMEOUT" "$name" ready "$name"
    say "  $name: pid $(getpid "$name"), port $(port_of "$name"), ready in $(( $(now_ms) - t0 )) ms"
}

# HAProxy's view of a replica: UP, DOWN, "UP 1/2", MAINT...
lb_server_state() {
    http_get "http://127.0.0.1:$CLUSTER_LB_STATS_PORT/stats;csv" |
        awk -F, -v s="$1" '$1 == "replicas" && $2 == s { print $18 }'
}

replica_up_in_lb() { [ "$(lb_server_state "$1")" = "UP" ]; }

all_replicas_up_in_lb() {
    local s
    for s in proxy1 proxy2 proxy3; do
        [ "$(lb_server_state "$s")" = "UP" ] || return 1
    done
}

one_leader() {
    local n=0 p
    for p in "$CLUSTER_POLLER1_PORT" "$CLUSTER_POLLER2_PORT"; do
        if http_get "http://127.0.0.1:$p/health" | grep -q '"leader":true'; then n=$((n + 1)); fi
    done
    [ "$n" = 1 ]
}

quota_everywhere() {
    local p
    for p in "$CLUSTER_PROXY1_PORT" "$CLUSTER_PROXY2_PORT" "$CLUSTER_PROXY3_PORT"; do
        http_get "http://127.0.0.1:$p/admin/fallback" "x-api-key: $ADMIN_KEY" |
            grep -q '"last_health_poll":"' || return 1
    done
}

# stop_group NAME...: SIGTERM to each, wait for all, SIGKILL what is left after the timeout.
stop_group() {
    local n pid left
    local -A pids=()
    for n in "$@"; do
        pid=$(getpid "$n")
        if pid_is "$n" "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids[$n]=$pid
        else
            rm -f "$(pidfile "$n")"
        fi
    done
    [ ${#pids[@]} -gt 0 ] || return 0
    local t0 deadline
    t0=$(now_ms)
    deadline=$(( t0 + ${CLUSTER_STOP_TIMEOUT%.*} * 1000 ))
    while true; do
        left=0
        for n in "${!pids[@]}"; do
            pid_is "$n" "${pids[$n]}" && left=$((left + 1))
        done
        [ "$left" = 0 ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        sleep 0.05
    done
    for n in "$@"; do
        [ -n "${pids[$n]:-}" ] || continue
        pid=${pids[$n]}
        if pid_is "$n" "$pid"; then
            kill -KILL "$pid" 2>/dev/null || true
            while pid_is "$n" "$pid"; do sleep 0.02; done
            say "  $n: pid $pid did not stop within ${CLUSTER_STOP_TIMEOUT}s of SIGTERM: killed (SIGKILL)"
        else
            say "  $n: pid $pid stopped ($(( $(now_ms) - t0 )) ms)"
        fi
        rm -f "$(pidfile "$n")"
    done
}

stop_all() {
    stop_group haproxy
    stop_group proxy1 proxy2 proxy3
    stop_group poller1 poller2
    stop_group upstream
    stop_group redis
}

# ---- commands --------------------------------------------------------------------------
cmd_start() {
    config_from_env
    mkdir -p "$DIR/logs" "$DIR/pids" "$DIR/redis"
    local n busy=""
    for n in "${COMPONENTS[@]}"; do
        if running "$n"; then busy="$busy $n(pid $(getpid "$n"))"; fi
    done
    [ -z "$busy" ] || die "already running in $DIR:$busy (use status, or stop first)"
    port_busy "$CLUSTER_LB_STATS_PORT" && die "port $CLUSTER_LB_STATS_PORT (CLUSTER_LB_STATS_PORT) is already in use"

    setup_admin_key
    write_fallback
    write_haproxy_cfg
    write_env_file
    STARTING=1
    local t0
    t0=$(now_ms)
    say "Starting the api-proxy fleet in $DIR"
    start_one redis
    start_one upstream
    start_one poller1
    start_one poller2
    start_one proxy1
    start_one proxy2
    start_one proxy3
    start_one haproxy
    wait_for "HAProxy to see the three replicas UP" "$CLUSTER_READY_TIMEOUT" haproxy all_replicas_up_in_lb
    wait_for "one active poller" "$CLUSTER_READY_TIMEOUT" "" one_leader
    wait_for "quota data on every replica" "$CLUSTER_READY_TIMEOUT" "" quota_everywhere
    STARTING=0
    write_json
    say "Ready in $(( $(now_ms) - t0 )) ms."
    say "Load balancer: http://$(lb_host):$CLUSTER_LB_PORT   (HAProxy stats: http://127.0.0.1:$CLUSTER_LB_STATS_PORT/stats)"
    say "Admin key: in $DIR/admin_key   (export ADMIN_KEY=\$(cat $DIR/admin_key), or: source $ENV_FILE)"
    say "State: $DIR/cluster.json, logs in $DIR/logs/; stop with: $PROG stop --dir $DIR"
}

cmd_stop() {
    if [ ! -f "$ENV_FILE" ]; then
        say "no fleet in $DIR (nothing to stop)"
        return 0
    fi
    config_from_file
    say "Stopping the api-proxy fleet in $DIR"
    stop_all
    write_json
}

cmd_restart() {
    local name=$TARGET
    case " ${COMPONENTS[*]} " in *" $name "*) ;; *) die "unknown component $name (one of: ${COMPONENTS[*]})" ;; esac
    config_from_file
    mkdir -p "$DIR/logs" "$DIR/pids"
    stop_group "$name"
    start_one "$name"
    case $name in
        proxy*) wait_for "HAProxy to see $name UP" "$CLUSTER_READY_TIMEOUT" "$name" \
                    replica_up_in_lb "$name" ;;
        haproxy) wait_for "HAProxy to see the three replicas UP" "$CLUSTER_READY_TIMEOUT" haproxy \
                    all_replicas_up_in_lb ;;
    esac
    write_json
}

cmd_status() {
    config_from_file
    local n pid port state detail bad=0 body
    say "api-proxy fleet in $DIR"
    printf '  %-9s %-8s %-6s %s\n' NAME PID PORT STATE
    for n in "${COMPONENTS[@]}"; do
        pid=$(getpid "$n")
        port=$(port_of "$n")
        detail=""
        if pid_is "$n" "$pid"; then
            state=running
            case $n in
                redis)
                    if redis_ping "$port"; then detail="PING ok"; else detail="not answering PING"; bad=1; fi ;;
                upstream)
                    if ready "$n"; then detail="/health 200"; else detail="/health failing"; bad=1; fi ;;
                poller*)
                    if body=$(http_get "http://127.0.0.1:$port/health"); then
                        case $body in *'"leader":true'*) detail="active (leader)" ;; *) detail="standby" ;; esac
                    else detail="/health failing"; bad=1; fi ;;
                proxy*)
                    if http_get "http://127.0.0.1:$port/health" >/dev/null; then detail="/health 200"
                    else detail="/health not 200"; bad=1; fi
                    detail="$detail, in HAProxy: $(lb_server_state "$n" 2>/dev/null || echo '?')" ;;
                haproxy) detail="http://$(lb_host):$port, stats http://127.0.0.1:$CLUSTER_LB_STATS_PORT/stats" ;;
            esac
        else
            state=stopped
            pid=-
            bad=1
        fi
        printf '  %-9s %-8s %-6s %s%s\n' "$n" "$pid" "$port" "$state" "${detail:+ ($detail)}"
    done
    say "Load balancer: http://$(lb_host):$CLUSTER_LB_PORT"
    say "Admin key: in $DIR/admin_key"
    write_json
    STATUS_RC=$bad
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_restart ;;
    status) STATUS_RC=0; cmd_status; exit "$STATUS_RC" ;;
esac
