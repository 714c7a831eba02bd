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
# and, with --sentinel, Redis high availability (the variant of docker-compose.sentinel.yml):
#   redis (the master at first) and redis2 (its replica), three Redis Sentinels (sentinel1..3,
#   quorum 2); the replicas and pollers find the master through them (REDIS_SENTINELS)
#
# Usage:
#   tests/cluster/cluster.sh start   [--dir DIR] [--sentinel]   start everything, wait until it is ready
#   tests/cluster/cluster.sh stop    [--dir DIR]   stop everything it started
#   tests/cluster/cluster.sh status  [--dir DIR]   what is running (exit 1 if something is not)
#   tests/cluster/cluster.sh restart NAME [--dir DIR]
#       stop one component (if running) and start it again with the same ports and
#       environment; NAME: redis upstream poller1 poller2 proxy1 proxy2 proxy3 haproxy
#       (--sentinel: also redis2 sentinel1 sentinel2 sentinel3). A Redis node comes back
#       with the role it was started with (the old master as a master), as after a crash;
#       the sentinels turn a stale master into a replica of the current one.
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
#   --sentinel: CLUSTER_REDIS2_PORT (6382), CLUSTER_SENTINEL1_PORT..CLUSTER_SENTINEL3_PORT
#   (26381..26383), CLUSTER_SENTINEL_MASTER (mymaster), CLUSTER_SENTINEL_DOWN_AFTER_MS (5000:
#   down-after-milliseconds), CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS (10000: failover-timeout)
#   CLUSTER_POLL_INTERVAL (5)     health_poll_interval_seconds of the generated chain
#   CLUSTER_REACTIVE_COOLDOWN (60)   reactive_cooldown_seconds of the generated chain
#   CLUSTER_REDIS_FSYNC (everysec)   appendfsync of Redis
#   CLUSTER_STOP_TIMEOUT (35)     seconds between SIGTERM and SIGKILL
#   CLUSTER_READY_TIMEOUT (20)    seconds a component may take to become ready
#   ADMIN_KEY                     used when set, else the one in DIR/admin_key, else generated
#   AP_BIN (<repo>/bin)  binaries; PYTHON (python3); HAPROXY, REDIS_SERVER, REDIS_SENTINEL: executables
# The replicas' and pollers' other settings pass through from the environment of `start`
# (e.g. USAGE_FLUSH_MS, USAGE_DURABLE, POLL_INTERVAL_SECONDS, LOG_LEVEL, USAGE_TZ,
# SHUTDOWN_GRACE_SECONDS, REDIS_MIN_REPLICAS_ACK, REDIS_WAIT_TIMEOUT_MS, LARK_*), are
# recorded in cluster.env and reused by `restart`.
#
# It installs nothing and touches no system service: every process is started by this
# script, tracked by pid, and stopped by pid (SIGTERM, then SIGKILL after the timeout).
set -Eeuo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROG=${0##*/}

BASE_COMPONENTS=(redis upstream poller1 poller2 proxy1 proxy2 proxy3 haproxy)
SENTINEL_COMPONENTS=(redis redis2 sentinel1 sentinel2 sentinel3 upstream poller1 poller2 proxy1
    proxy2 proxy3 haproxy)
COMPONENTS=("${BASE_COMPONENTS[@]}")
# Product settings that pass through to the replicas and pollers (besides LARK_*).
PASSTHROUGH_VARS=(CLIENT_TIMEOUT_SECONDS FLEET_HEARTBEAT_MS KEYS_FILE LOG_LEVEL MAX_BODY_BYTES MAX_HEADER_BYTES
    POLICY_DEFAULT_MAX_TOKENS POLICY_FAIL_MODE POLICY_LEASE_SECONDS POLICY_TIMEOUT_MS PRICES_CONFIG
    POLL_INTERVAL_SECONDS REDIS_MIN_REPLICAS_ACK REDIS_PREFIX REDIS_WAIT_TIMEOUT_MS
    REQUEST_READ_TIMEOUT_SECONDS SHUTDOWN_GRACE_SECONDS STREAM_BUFFER_BYTES UPSTREAM_API_KEY
    UPSTREAM_CONNECT_TIMEOUT_MS UPSTREAM_READ_TIMEOUT_SECONDS USAGE_DURABLE USAGE_FLUSH_MS USAGE_TZ)

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
OPT_SENTINEL=0
while [ $# -gt 0 ]; do
    case $1 in
        --dir) [ $# -ge 2 ] || usage; DIR=$2; shift 2 ;;
        --sentinel) OPT_SENTINEL=1; shift ;;
        --dir=*) DIR=${1#--dir=}; shift ;;
        -h|--help) usage 0 ;;
        -*) warn "unknown option: $1"; usage ;;
        *) [ -z "$TARGET" ] || usage; TARGET=$1; shift ;;
    esac
done
[ "$OPT_SENTINEL" = 0 ] || [ "$CMD" = start ] || usage
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
        redis|redis2) echo "$REDIS_SERVER" ;;
        sentinel*) echo "$DIR/sentinel/$1.conf" ;;
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
    # (the braces: a process gone since the check above must not print an error)
    { cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline"); } 2>/dev/null || return 1
    local m
    m=$(marker "$name")
    # Redis rewrites its title to "redis-server 127.0.0.1:PORT" ("redis-sentinel ... [sentinel]").
    [[ $cmdline == *"$m"* ]] || { [[ $name == redis* || $name == sentinel* ]] &&
        [[ $cmdline == *"redis-"*":$(port_of "$name")"* ]]; }
}

running() { pid_is "$1" "$(getpid "$1")"; }

port_of() {
    case $1 in
        redis) echo "$CLUSTER_REDIS_PORT" ;;
        redis2) echo "$CLUSTER_REDIS2_PORT" ;;
        sentinel1) echo "$CLUSTER_SENTINEL1_PORT" ;;
        sentinel2) echo "$CLUSTER_SENTINEL2_PORT" ;;
        sentinel3) echo "$CLUSTER_SENTINEL3_PORT" ;;
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

# What start records in cluster.env (and restart reads back).
CONFIG_VARS=(CLUSTER_BIND CLUSTER_LB_PORT CLUSTER_LB_STATS_PORT CLUSTER_PROXY1_PORT CLUSTER_PROXY2_PORT
    CLUSTER_PROXY3_PORT CLUSTER_POLLER1_PORT CLUSTER_POLLER2_PORT CLUSTER_REDIS_PORT CLUSTER_UPSTREAM_PORT
    CLUSTER_POLL_INTERVAL CLUSTER_REACTIVE_COOLDOWN CLUSTER_REDIS_FSYNC CLUSTER_STOP_TIMEOUT
    CLUSTER_READY_TIMEOUT CLUSTER_SENTINEL CLUSTER_REDIS2_PORT CLUSTER_SENTINEL1_PORT
    CLUSTER_SENTINEL2_PORT CLUSTER_SENTINEL3_PORT CLUSTER_SENTINEL_MASTER CLUSTER_SENTINEL_DOWN_AFTER_MS
    CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS CLUSTER_REDIS_MASTER_PORT AP_BIN PYTHON HAPROXY REDIS_SERVER
    REDIS_SENTINEL)

sentinel_list() {
    echo "127.0.0.1:$CLUSTER_SENTINEL1_PORT,127.0.0.1:$CLUSTER_SENTINEL2_PORT,127.0.0.1:$CLUSTER_SENTINEL3_PORT"
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
    CLUSTER_SENTINEL=$OPT_SENTINEL
    CLUSTER_REDIS2_PORT=${CLUSTER_REDIS2_PORT:-6382}
    CLUSTER_SENTINEL1_PORT=${CLUSTER_SENTINEL1_PORT:-26381}
    CLUSTER_SENTINEL2_PORT=${CLUSTER_SENTINEL2_PORT:-26382}
    CLUSTER_SENTINEL3_PORT=${CLUSTER_SENTINEL3_PORT:-26383}
    CLUSTER_SENTINEL_MASTER=${CLUSTER_SENTINEL_MASTER:-mymaster}
    CLUSTER_SENTINEL_DOWN_AFTER_MS=${CLUSTER_SENTINEL_DOWN_AFTER_MS:-5000}
    CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS=${CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
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
    REDIS_SENTINEL=$(find_exe "${REDIS_SENTINEL:-}" redis-sentinel)

    local p seen=" " ports=(CLUSTER_LB_PORT CLUSTER_LB_STATS_PORT CLUSTER_PROXY1_PORT CLUSTER_PROXY2_PORT
        CLUSTER_PROXY3_PORT CLUSTER_POLLER1_PORT CLUSTER_POLLER2_PORT CLUSTER_REDIS_PORT CLUSTER_UPSTREAM_PORT)
    [ "$CLUSTER_SENTINEL" = 0 ] || ports+=(CLUSTER_REDIS2_PORT CLUSTER_SENTINEL1_PORT CLUSTER_SENTINEL2_PORT
        CLUSTER_SENTINEL3_PORT)
    for p in "${ports[@]}"; do
        is_port "${!p}" || die "$p=${!p} is not a port number"
        case $seen in *" ${!p} "*) die "$p=${!p}: port used twice" ;; esac
        seen="$seen${!p} "
    done
    for p in CLUSTER_POLL_INTERVAL CLUSTER_REACTIVE_COOLDOWN CLUSTER_STOP_TIMEOUT CLUSTER_READY_TIMEOUT \
             CLUSTER_SENTINEL_DOWN_AFTER_MS CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS; do
        [[ ${!p} =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$p=${!p} is not a number"
    done
    [[ $CLUSTER_REDIS_FSYNC =~ ^(always|everysec|no)$ ]] || die "CLUSTER_REDIS_FSYNC must be always, everysec or no"
    [[ $CLUSTER_SENTINEL_MASTER =~ ^[A-Za-z0-9._-]+$ ]] || die "CLUSTER_SENTINEL_MASTER must be one word"

    if [ -z "$HAPROXY" ] || [ ! -x "$HAPROXY" ]; then
        die "haproxy not found (Debian: apt-get install haproxy; or set HAPROXY=/path/to/haproxy)"
    fi
    if [ -z "$REDIS_SERVER" ] || [ ! -x "$REDIS_SERVER" ]; then
        die "redis-server not found (Debian: apt-get install redis-server; or set REDIS_SERVER)"
    fi
    if [ "$CLUSTER_SENTINEL" = 1 ] && { [ -z "$REDIS_SENTINEL" ] || [ ! -x "$REDIS_SENTINEL" ]; }; then
        die "redis-sentinel not found (Debian: apt-get install redis-sentinel; or set REDIS_SENTINEL)"
    fi
    command -v "$PYTHON" >/dev/null 2>&1 || die "python3 not found (needed for the demo upstream)"
    local b
    for b in api-proxy api-poller; do
        [ -x "$AP_BIN/$b" ] || die "$AP_BIN/$b is missing: run make first (or set AP_BIN)"
    done

    [ "$CLUSTER_SENTINEL" = 0 ] || COMPONENTS=("${SENTINEL_COMPONENTS[@]}")
    # The master at start: the one the sentinels of an earlier run last knew, if any (a
    # fleet started again must not make the stale node the master and resync the other).
    CLUSTER_REDIS_MASTER_PORT=$CLUSTER_REDIS_PORT
    if [ "$CLUSTER_SENTINEL" = 1 ] && [ -f "$DIR/sentinel/sentinel1.conf" ]; then
        local last
        last=$(awk -v m="$CLUSTER_SENTINEL_MASTER" '$1 == "sentinel" && $2 == "monitor" && $3 == m { print $5 }' \
            "$DIR/sentinel/sentinel1.conf")
        if [ "$last" = "$CLUSTER_REDIS2_PORT" ]; then CLUSTER_REDIS_MASTER_PORT=$last; fi
    fi
    # shellcheck disable=SC2163
    export "${CONFIG_VARS[@]}"
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
        for v in "${CONFIG_VARS[@]}"; do
            printf 'export %s=%q\n' "$v" "${!v}"
        done
        [ "$CLUSTER_SENTINEL" = 0 ] ||
            printf 'export REDIS_SENTINELS=%q REDIS_SENTINEL_MASTER=%q\n' "$(sentinel_list)" "$CLUSTER_SENTINEL_MASTER"
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
    CLUSTER_SENTINEL=${CLUSTER_SENTINEL:-0}
    [ "$CLUSTER_SENTINEL" = 0 ] || COMPONENTS=("${SENTINEL_COMPONENTS[@]}")
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
    local n plist=() portlist=()
    for n in "${COMPONENTS[@]}"; do
        if running "$n"; then plist+=("$n=$(getpid "$n")"); else plist+=("$n="); fi
        portlist+=("$n=$(port_of "$n")")
    done
    CLUSTER_DIR=$DIR CLUSTER_LB_HOST=$(lb_host) ADMIN_KEY=$ADMIN_KEY \
    CLUSTER_PIDS="${plist[*]}" CLUSTER_PORTS="${portlist[*]}" REDIS_PREFIX_VALUE=${REDIS_PREFIX:-ap:} \
        "$PYTHON" - <<'PY'
import json, os
e = os.environ
d = e["CLUSTER_DIR"]
pids = dict(x.split("=", 1) for x in e["CLUSTER_PIDS"].split())
ports = dict(x.split("=", 1) for x in e["CLUSTER_PORTS"].split())
lb = "http://%s:%s" % (e["CLUSTER_LB_HOST"], e["CLUSTER_LB_PORT"])
sentinel = e.get("CLUSTER_SENTINEL") == "1"
comp = {}
for name, port in ports.items():
    port = int(port)
    if name.startswith("redis"):
        url = "redis://127.0.0.1:%d/0" % port
    elif name.startswith("sentinel"):
        url = "127.0.0.1:%d" % port
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
    "sentinel": sentinel,
}
if sentinel:
    doc["sentinel_master"] = e["CLUSTER_SENTINEL_MASTER"]
    doc["sentinels"] = [comp["sentinel%d" % i]["url"] for i in (1, 2, 3)]
    doc["redis_nodes"] = ["redis", "redis2"]
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
    # With Sentinel, REDIS_URL gives only the password and db: the sentinels name the master.
    [ "$CLUSTER_SENTINEL" = 0 ] ||
        ENVARGS+=(REDIS_SENTINELS="$(sentinel_list)" REDIS_SENTINEL_MASTER="$CLUSTER_SENTINEL_MASTER")
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
        redis|redis2)
            # The node that was the master at start comes back as one; the sentinels
            # demote it if another was promoted meanwhile. The one replica syncs at once
            # (Redis otherwise waits 5 s for more replicas before a full sync).
            local role=()
            [ "$CLUSTER_SENTINEL" = 0 ] || [ "$port" = "$CLUSTER_REDIS_MASTER_PORT" ] ||
                role=(--replicaof 127.0.0.1 "$CLUSTER_REDIS_MASTER_PORT")
            mkdir -p "$DIR/$name"
            spawn "$name" "$REDIS_SERVER" --port "$port" --bind 127.0.0.1 --dir "$DIR/$name" \
                --appendonly yes --appendfsync "$CLUSTER_REDIS_FSYNC" --save "" \
                --repl-diskless-sync-delay 0 \
                --daemonize no --logfile "" ${role[@]+"${role[@]}"} ;;
        sentinel1|sentinel2|sentinel3)
            spawn "$name" "$REDIS_SENTINEL" "$DIR/sentinel/$name.conf" ;;
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
        redis|redis2|sentinel*) redis_ping "$port" ;;
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
    local t0 deadline again
    t0=$(now_ms)
    deadline=$(( t0 + ${CLUSTER_STOP_TIMEOUT%.*} * 1000 ))
    again=$(( t0 + 1000 ))
    while true; do
        left=0
        for n in "${!pids[@]}"; do
            pid_is "$n" "${pids[$n]}" && left=$((left + 1))
        done
        [ "$left" = 0 ] && break
        [ "$(now_ms)" -ge "$deadline" ] && break
        # Redis refuses a SIGTERM while it writes its first AOF (a replica just after a
        # full sync) and does not try again by itself: ask once a second.
        if [ "$(now_ms)" -ge "$again" ]; then
            again=$(( $(now_ms) + 1000 ))
            for n in "${!pids[@]}"; do
                case $n in redis*) { pid_is "$n" "${pids[$n]}" && kill -TERM "${pids[$n]}"; } 2>/dev/null || true ;; esac
            done
        fi
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
    if [ "$CLUSTER_SENTINEL" = 1 ]; then
        # The sentinels first: a master stopping under their eyes would be failed over.
        stop_group sentinel1 sentinel2 sentinel3
        stop_group redis redis2
    else
        stop_group redis
    fi
}

# One sentinel's configuration (Sentinel rewrites the file with what it learns: keep it
# across restarts of that sentinel; `start` writes it afresh).
write_sentinel_conf() {
    local name=$1 port
    port=$(port_of "$name")
    mkdir -p "$DIR/sentinel"
    cat >"$DIR/sentinel/$name.conf" <<EOF
port $port
bind 127.0.0.1
daemonize no
logfile ""
dir $DIR/sentinel
sentinel monitor $CLUSTER_SENTINEL_MASTER 127.0.0.1 $CLUSTER_REDIS_MASTER_PORT 2
sentinel down-after-milliseconds $CLUSTER_SENTINEL_MASTER $CLUSTER_SENTINEL_DOWN_AFTER_MS
sentinel failover-timeout $CLUSTER_SENTINEL_MASTER $CLUSTER_SENTINEL_FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $CLUSTER_SENTINEL_MASTER 1
EOF
}

# Every sentinel knows the two others and the replica (a failover needs their votes).
sentinels_settled() {
    "$PYTHON" - "$CLUSTER_SENTINEL_MASTER" "$CLUSTER_SENTINEL1_PORT" "$CLUSTER_SENTINEL2_PORT" \
        "$CLUSTER_SENTINEL3_PORT" <<'PY' 2>/dev/null
import socket, sys
def cmd(port, *args):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=2)
    s.sendall(b"".join([b"*%d\r\n" % len(args)] + [b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in args]))
    f = s.makefile("rb")
    def read():
        line = f.readline().rstrip(b"\r\n")
        if line[:1] == b"*":
            return [read() for _ in range(int(line[1:]))]
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        if line[:1] == b"-":
            raise RuntimeError(line.decode())
        return line[1:].decode()
    try:
        return read()
    finally:
        s.close()
for port in sys.argv[2:]:
    r = cmd(port, "SENTINEL", "master", sys.argv[1])
    m = dict(zip(r[::2], r[1::2]))
    if int(m["num-other-sentinels"]) < 2 or int(m["num-slaves"]) < 1:
        sys.exit(1)
PY
}

# The role a Redis node states (master, slave), or nothing: the third line of the
# reply (*N, $len, role).
redis_role() {
    local line="" _
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 0
    printf 'ROLE\r\n' >&3
    for _ in 1 2 3; do IFS= read -r -t 2 line <&3 || true; done
    exec 3<&- 3>&-
    printf '%s' "${line%$'\r'}"
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
    if [ "$CLUSTER_SENTINEL" = 1 ]; then
        say "  (Redis with Sentinel: master ${CLUSTER_SENTINEL_MASTER} at 127.0.0.1:$CLUSTER_REDIS_MASTER_PORT)"
        if [ "$CLUSTER_REDIS_MASTER_PORT" = "$CLUSTER_REDIS2_PORT" ]; then
            start_one redis2
            start_one redis
        else
            start_one redis
            start_one redis2
        fi
        for n in sentinel1 sentinel2 sentinel3; do write_sentinel_conf "$n"; done
        start_one sentinel1
        start_one sentinel2
        start_one sentinel3
        wait_for "the sentinels to know each other and the replica" "$CLUSTER_READY_TIMEOUT" "" \
            sentinels_settled
    else
        start_one redis
    fi
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
    config_from_file
    case " ${COMPONENTS[*]} " in *" $name "*) ;; *) die "unknown component $name (one of: ${COMPONENTS[*]})" ;; esac
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
                redis|redis2)
                    if redis_ping "$port"; then detail="PING ok, $(redis_role "$port")"
                    else detail="not answering PING"; bad=1; fi ;;
                sentinel*)
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
