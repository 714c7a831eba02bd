#!/usr/bin/env bash
# Benchmark api-proxy against nginx, with wrk, in one run (`make bench`; not part of `make test`).
#
# Three targets, all in front of the same mock upstream:
#   mock       the mock itself, loaded directly (the ceiling: what wrk + mock can do)
#   nginx      nginx as a plain proxy_pass reverse proxy, upstream keep-alive
#   api-proxy  bin/api-proxy with a real key, usage accounting on, its own redis-server
# and three scenarios, all POST /v1/messages in the Anthropic wire format:
#   small      ~300 B request, JSON answer
#   large      ~200 KB request, JSON answer
#   stream     ~300 B request with "stream": true, SSE answer of 50 content_block_delta events
#
# For each it prints requests/s, p50/p99 latency, peak RSS (VmHWM) and CPU time per request
# (utime+stime / requests) of the target (nginx: master + worker; api-proxy: api-proxy +
# its redis-server), and api-proxy's figures as a ratio to nginx's. On the way it checks
# that every answer was 2xx, that each target returns the mock's exact bytes, and that
# api-proxy's usage counters (GET /admin/usage) match exactly the requests it served.
#
# Placement: wrk and the mock share core 0, the target (and redis-server) gets core 1, so
# runs compare. The mock is nginx answering from memory (`return 200 '<body>'`, picked by
# an `x-bench-stream` header), several times cheaper per request than any proxy, so it
# is not the bottleneck (the "mock" rows show its ceiling). The report also shows how busy
# each core was and how much of that was other work (anything else running on the
# machine): pinning does not keep other programs off these cores, so a busy machine gives
# noisy figures, and the report says so.
#
# Everything runs as plain processes on 127.0.0.1 with private ports, a temp dir and its
# own config files; system services are never touched. Everything started is stopped on
# exit, also on error or ^C. Missing tools are installed with apt-get.
#
# Environment:
#   BENCH_DURATION     wrk duration per measurement (default 10s)
#   BENCH_CONNECTIONS  wrk connections (default 16)
#   BENCH_THREADS      wrk threads (default 1)
#   BENCH_WARMUP       unmeasured wrk run before each measurement (default 1s; 0 = none)
#   BENCH_SCENARIOS    subset/order of "small large stream" (default: all three)
#   BENCH_LOG_LEVEL    api-proxy LOG_LEVEL (default warn: no per-request access log; with
#                      info/debug nginx gets an access log too, so the comparison stays fair)
#   BENCH_REDIS_ARGS   extra redis-server arguments (e.g. "--appendonly yes")
#   BENCH_KEEP         1: keep the temp dir (logs, configs) even on success
#   BENCH_NO_BUILD     1: do not run `make bin/api-proxy` first
#   AP_BIN             directory holding api-proxy (default <repo>/bin)
#
# Exit status: 0 when everything ran and every check passed; 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$ROOT/scripts/bench
DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNECTIONS:-16}
THREADS=${BENCH_THREADS:-1}
WARMUP=${BENCH_WARMUP:-1s}
SCENARIOS=${BENCH_SCENARIOS:-small large stream}
PROXY_LOG_LEVEL=${BENCH_LOG_LEVEL:-warn}
REDIS_EXTRA=${BENCH_REDIS_ARGS:-}
BIN_DIR=${AP_BIN:-$ROOT/bin}
LOAD_CPU=0   # wrk + mock
PROXY_CPU=1  # the target under test (+ its redis-server)

# A client key of the same length as a real one (sk- + 48 hex), sent to mock and nginx, so
# every target receives byte-identical requests.
FAKE_KEY="sk-$(printf '0%.0s' {1..48})"

TMP=""
FAILURES=()       # checks that failed; reported at the end, make the exit status 1
PROC_PIDS=()      # every process we started, in start order
PROC_NAMES=()

# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------

say() { printf '[bench] %s\n' "$*" >&2; }
die() {
    printf '[bench] ERROR: %s\n' "$*" >&2
    exit 1
}
fail() {
    printf '[bench] FAIL: %s\n' "$*" >&2
    FAILURES+=("$*")
}

# A free TCP port on 127.0.0.1 (the kernel's choice, so it does not collide with others).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# True while PID is running. A child that exited but was not reaped yet is a zombie that
# `kill -0` still finds, so look at its state. (Until we reap it, its pid cannot be reused.)
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

# ------------------------------------------------------------------------------------------
# tools
# ------------------------------------------------------------------------------------------

ensure_tools() {
    local -a need=()
    command -v wrk >/dev/null || need+=(wrk)
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || need+=(nginx-light)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v redis-cli >/dev/null || need+=(redis-tools)
    command -v taskset >/dev/null || need+=(util-linux)
    command -v python3 >/dev/null || need+=(python3)
    command -v curl >/dev/null || need+=(curl)
    command -v pgrep >/dev/null || need+=(procps)
    if ((${#need[@]})); then
        [[ $(id -u) == 0 ]] || die "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
        command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
        say "installing ${need[*]} (apt-get)"
        # Debian starts a package's service on install (nginx on :80, redis on :6379).
        # A policy-rc.d answering 101 stops that, so the install leaves no system service
        # running; it is removed right after (and only if we created it).
        local policy=/usr/sbin/policy-rc.d made_policy=0
        if [[ ! -e $policy ]]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
        fi
        local rc=0
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >&2 || rc=$?
        if ((made_policy)); then rm -f "$policy"; fi
        ((rc == 0)) || die "apt-get install ${need[*]} failed"
    fi
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    local ncpu
    ncpu=$(taskset -pc $$ | awk -F': ' '{print $2}')
    taskset -c "$LOAD_CPU,$PROXY_CPU" true 2>/dev/null ||
        die "this benchmark pins to cores $LOAD_CPU and $PROXY_CPU, but this shell may only use cores $ncpu"
}

build_proxy() {
    # Only the proxy: `make bench` built everything already, and a direct run should not
    # depend on the other programs building.
    if [[ ${BENCH_NO_BUILD:-0} != 1 && -z ${AP_BIN:-} ]]; then
        say "building api-proxy"
        make -s -C "$ROOT" bin/api-proxy >&2 || die "building api-proxy failed"
    fi
    PROXY_BIN=$BIN_DIR/api-proxy
    [[ -x $PROXY_BIN ]] || die "$PROXY_BIN not found (run make, or set AP_BIN)"
}

# ------------------------------------------------------------------------------------------
# processes
# ------------------------------------------------------------------------------------------

# start_proc NAME CPU CMD...: start CMD in the background pinned to CPU, output to
# $TMP/NAME.log; sets LAST_PID. (Not to be called in $(...): the child must be ours.)
start_proc() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" </dev/null >"$TMP/$name.log" 2>&1 &
    LAST_PID=$!
    PROC_PIDS+=("$LAST_PID")
    PROC_NAMES+=("$name")
}

# stop_proc PID: SIGTERM, up to 15 s for a graceful exit, then SIGKILL. Sets STOP_RC to
# the exit status (143 etc. for a signal death).
stop_proc() {
    local pid=$1 i
    STOP_RC=0
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 150; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid"; then
            say "pid $pid did not exit within 15 s of SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || STOP_RC=$?
    forget_proc "$pid"
}

# forget_proc PID: drop a reaped process from the list cleanup() stops (its pid may now be
# reused by some other program, which must never get our signals).
forget_proc() {
    local i
    for i in "${!PROC_PIDS[@]}"; do
        if [[ ${PROC_PIDS[$i]} == "$1" ]]; then
            unset 'PROC_PIDS[i]' 'PROC_NAMES[i]'
        fi
    done
}

# proc_name PID: the name start_proc gave it.
proc_name() {
    local i
    for i in "${!PROC_PIDS[@]}"; do
        [[ ${PROC_PIDS[$i]} == "$1" ]] && echo "${PROC_NAMES[$i]}" && return
    done
    echo "pid $1"
}

# ensure_alive WHEN PID...: every PID must still run; otherwise reap the dead one, say how
# it ended (exit status or signal) with the tail of its log, and stop the benchmark.
ensure_alive() {
    local when=$1 pid name rc
    shift
    for pid in "$@"; do
        alive "$pid" && continue
        name=$(proc_name "$pid")
        rc=0
        wait "$pid" 2>/dev/null || rc=$?
        forget_proc "$pid"
        local how="exited with status $rc"
        ((rc > 128)) && how="was killed by signal $((rc - 128)) (SIG$(kill -l $((rc - 128)) 2>/dev/null || echo '?'))"
        printf '[bench] --- last lines of %s ---\n' "$TMP/$name.log" >&2
        tail -n 20 "$TMP/$name.log" >&2 || true
        die "$name (pid $pid) $how $when"
    done
}

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    # Reverse start order: api-proxy before its redis-server (so it can flush usage).
    local -a idx=("${!PROC_PIDS[@]}")
    for ((i = ${#idx[@]} - 1; i >= 0; i--)); do
        stop_proc "${PROC_PIDS[${idx[$i]}]}"
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if ((rc != 0)) || ((${#FAILURES[@]})) || [[ ${BENCH_KEEP:-0} == 1 ]]; then
            say "logs and configs kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit "$rc"
}

# wait_for WHAT TIMEOUT_S PID CMD...: poll CMD until it succeeds; give up when PID died
# (showing its log) or after TIMEOUT_S.
wait_for() {
    local what=$1 timeout=$2 pid=$3 name=$4
    shift 4
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ! alive "$pid"; then
            tail -n 30 "$TMP/$name.log" >&2 || true
            die "$name exited while waiting for $what (log above: $TMP/$name.log)"
        fi
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what ($TMP/$name.log)"
        sleep 0.05
    done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }

# pids_of MASTER: the master and its children (nginx workers).
pids_of() {
    local kids
    kids=$(pgrep -P "$1" | tr '\n' ' ' || true)
    echo "$1 $kids"
}

# Sum of utime+stime (clock ticks) over PIDS; /proc/PID/stat already adds up all threads.
cpu_ticks() {
    local pid stat total=0
    local -a fields
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat") || die "process $pid is gone"
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12])) # fields 14 and 15 of stat(5)
    done
    echo "$total"
}

# Sum of VmHWM (peak resident set, kB) over PIDS.
peak_rss_kb() {
    local pid total=0 v
    for pid in "$@"; do
        v=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status") || die "process $pid is gone"
        total=$((total + v))
    done
    echo "$total"
}

# ------------------------------------------------------------------------------------------
# the mock upstream: nginx answering from memory
# ------------------------------------------------------------------------------------------

# Paths every nginx of ours needs, so none touches /var/lib/nginx, /var/log/nginx or /run.
nginx_common() {
    local dir=$1
    mkdir -p "$dir/tmp"
    cat <<EOF
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
EOF
}
nginx_http_common() {
    local dir=$1
    cat <<EOF
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    # Benchmark connections live for the whole run (nginx's default closes every 1000).
    keepalive_requests 100000000;
    keepalive_timeout 75s;
EOF
}

# The mock listens on two ports with the same answers: MOCK_URL for wrk and nginx, and
# MOCK_AP_URL for api-proxy only, where every request is logged (buffered), so api-proxy's
# usage counters can be checked against what the mock really answered it.
start_mock() {
    local dir=$TMP/mock
    mkdir -p "$dir"
    MOCK_PORT=$(free_port)
    MOCK_AP_PORT=$(free_port)
    # The answer is picked by a header, as the mock does not parse bodies:
    # x-bench-stream: 1 -> the SSE stream, else the JSON message.
    cat >"$dir/answers.conf" <<EOF
location = /v1/messages {
    if (\$http_x_bench_stream) { rewrite ^ /_bench/stream last; }
    rewrite ^ /_bench/message last;
}
location = /_bench/message {
    internal;
    default_type application/json;
    include $TMP/fixtures/mock-message.inc;
}
location = /_bench/stream {
    internal;
    default_type text/event-stream;
    add_header Cache-Control no-cache;
    include $TMP/fixtures/mock-stream.inc;
}
location = /health { default_type application/json; return 200 '{"status":"ok","accounts":[]}'; }
location / { return 404; }
EOF
    {
        nginx_common "$dir"
        cat <<EOF
http {
$(nginx_http_common "$dir")
    client_max_body_size 64m;
    log_format served '\$status \$request_completion';
    server {
        listen 127.0.0.1:$MOCK_PORT;
        access_log off;
        include $dir/answers.conf;
    }
    server {
        listen 127.0.0.1:$MOCK_AP_PORT;
        access_log $dir/served-api-proxy.log served buffer=64k flush=100ms;
        include $dir/answers.conf;
    }
}
EOF
    } >"$dir/nginx.conf"
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/config-test.log" ||
        die "mock nginx config rejected: $(cat "$dir/config-test.log")"
    start_proc mock "$LOAD_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    MOCK_PID=$LAST_PID
    MOCK_URL=http://127.0.0.1:$MOCK_PORT
    MOCK_AP_URL=http://127.0.0.1:$MOCK_AP_PORT
    wait_for "the mock on port $MOCK_PORT" 10 "$MOCK_PID" mock http_ok "$MOCK_URL/health"
    wait_for "the mock on port $MOCK_AP_PORT" 10 "$MOCK_PID" mock http_ok "$MOCK_AP_URL/health"
}

# ------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------

# nginx as an LLM gateway would configure it: keep-alive to the upstream, no response
# buffering (streams are relayed as they arrive), bodies up to 32 MB kept in memory.
start_nginx_proxy() {
    local dir=$TMP/nginx-$1 access="access_log off;"
    mkdir -p "$dir"
    if [[ $PROXY_LOG_LEVEL == info || $PROXY_LOG_LEVEL == debug ]]; then
        access="access_log $dir/access.log;"
    fi
    NGINX_PORT=$(free_port)
    {
        nginx_common "$dir"
        cat <<EOF
http {
$(nginx_http_common "$dir")
    $access
    upstream mock {
        server 127.0.0.1:$MOCK_PORT;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        client_max_body_size 32m;
        client_body_buffer_size 1m;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 300s;
        }
    }
}
EOF
    } >"$dir/nginx.conf"
    "$NGINX" -t -q -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' 2>"$dir/config-test.log" ||
        die "nginx config rejected: $(cat "$dir/config-test.log")"
    start_proc "nginx-$1" "$PROXY_CPU" "$NGINX" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    TARGET_PID=$LAST_PID
    TARGET_URL=http://127.0.0.1:$NGINX_PORT
    TARGET_KEY=$FAKE_KEY
    wait_for "nginx on port $NGINX_PORT" 10 "$TARGET_PID" "nginx-$1" http_ok "$TARGET_URL/health"
    wait_for "the nginx worker" 5 "$TARGET_PID" "nginx-$1" pgrep -P "$TARGET_PID"
    TARGET_PIDS=$(pids_of "$TARGET_PID")
}

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]; }

# api-proxy as deployed: a real key made through the admin API, usage accounting on (it
# always is), fallback off, its own redis-server on the same core.
start_api_proxy() {
    local dir=$TMP/api-proxy-$1
    mkdir -p "$dir/redis"
    REDIS_PORT=$(free_port)
    # No RDB snapshots (a fork mid-run would distort the figures); AOF stays off as in
    # redis' defaults unless BENCH_REDIS_ARGS says otherwise.
    # shellcheck disable=SC2086
    start_proc "redis-$1" "$PROXY_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$dir/redis" --daemonize no --logfile '' $REDIS_EXTRA
    REDIS_PID=$LAST_PID
    wait_for "redis-server on port $REDIS_PORT" 10 "$REDIS_PID" "redis-$1" redis_ping "$REDIS_PORT"

    PROXY_PORT=$(free_port)
    ADMIN_KEY=sk-bench-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    printf '{"enabled": false, "tiers": []}\n' >"$dir/fallback.json"
    start_proc "api-proxy-$1" "$PROXY_CPU" env -u UPSTREAM_FORMAT -u UPSTREAM_API_KEY -u KEYS_FILE \
        -u POLL_INTERVAL_SECONDS \
        PROXY_BIND=127.0.0.1 PROXY_PORT="$PROXY_PORT" UPSTREAM_URL="$MOCK_AP_URL" \
        REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" ADMIN_KEY="$ADMIN_KEY" \
        FALLBACK_CONFIG="$dir/fallback.json" USAGE_TZ=+00:00 LOG_LEVEL="$PROXY_LOG_LEVEL" \
        "$PROXY_BIN"
    TARGET_PID=$LAST_PID
    TARGET_URL=http://127.0.0.1:$PROXY_PORT
    wait_for "api-proxy /health on port $PROXY_PORT" 10 "$TARGET_PID" "api-proxy-$1" http_ok "$TARGET_URL/health"
    TARGET_PIDS="$TARGET_PID $REDIS_PID"

    local doc
    doc=$(curl -sS --max-time 5 -H "x-api-key: $ADMIN_KEY" -H 'Content-Type: application/json' \
        --data '{"name":"bench"}' "$TARGET_URL/admin/keys") || die "POST /admin/keys failed"
    TARGET_KEY=$(json_field api_key <<<"$doc") || die "POST /admin/keys answered: $doc"
}

# json_field NAME < doc: print a top-level field of a JSON document (fails when absent).
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# usage_totals: "requests input output" from GET /admin/usage.
usage_totals() {
    local doc
    doc=$(curl -sS --max-time 5 -H "x-api-key: $ADMIN_KEY" "$TARGET_URL/admin/usage" 2>&1) || return 1
    python3 -c 'import json, sys; d = json.loads(sys.argv[1])
print(d["total_requests"], d["total_input_tokens"], d["total_output_tokens"])' "$doc" 2>/dev/null ||
        { say "GET /admin/usage answered: ${doc:0:300}"; return 1; }
}

# Usage is flushed to Redis in batches (every USAGE_FLUSH_MS, 100 ms by default): wait
# until the totals stop moving (same for 0.5 s; at most 15 s), then print them.
usage_settled() {
    local prev="" cur same=0 deadline=$((SECONDS + 15))
    while ((SECONDS < deadline)); do
        cur=$(usage_totals) || die "GET /admin/usage failed"
        if [[ $cur == "$prev" ]]; then
            ((++same >= 5)) && break
        else
            same=0
        fi
        prev=$cur
        sleep 0.1
    done
    echo "$cur"
}

# Requests the mock answered api-proxy completely (200, request_completion OK) so far.
mock_served() {
    kill -USR1 "$MOCK_PID" # reopening the logs flushes the log buffer
    sleep 0.3
    local f=$TMP/mock/served-api-proxy.log
    [[ -e $f ]] || {
        echo 0
        return
    }
    grep -c '^200 OK$' "$f" || true
}
mock_unserved() {
    local f=$TMP/mock/served-api-proxy.log
    [[ -e $f ]] || {
        echo 0
        return
    }
    grep -vc '^200 OK$' "$f" || true
}

# ------------------------------------------------------------------------------------------
# load
# ------------------------------------------------------------------------------------------

scenario_env() {
    case $1 in
    small) BODY_FILE=$TMP/fixtures/req-small.json STREAM=0 EXPECT=$TMP/fixtures/resp-message.json ;;
    large) BODY_FILE=$TMP/fixtures/req-large.json STREAM=0 EXPECT=$TMP/fixtures/resp-message.json ;;
    stream) BODY_FILE=$TMP/fixtures/req-stream.json STREAM=1 EXPECT=$TMP/fixtures/resp-stream.sse ;;
    *) die "unknown scenario '$1' (BENCH_SCENARIOS takes small, large, stream)" ;;
    esac
}

# check_answer SCENARIO TARGET: one request with curl; it must be 200 with the mock's exact
# bytes (a proxy must pass the body through unchanged), before wrk loads the target.
check_answer() {
    local sc=$1 target=$2 out=$TMP/answer-$1-$2 code
    local -a hdr=(-H 'Content-Type: application/json' -H 'anthropic-version: 2023-06-01' -H "x-api-key: $TARGET_KEY")
    ((STREAM)) && hdr+=(-H 'x-bench-stream: 1' -H 'Accept: text/event-stream')
    code=$(curl -sS -N --max-time 10 -o "$out" -D "$out.headers" -w '%{http_code}' "${hdr[@]}" \
        --data-binary "@$BODY_FILE" "$TARGET_URL/v1/messages") || code="curl failed"
    if [[ $code != 200 ]]; then
        fail "$sc/$target: check request answered $code: $(head -c 300 "$out" 2>/dev/null)"
        return 1
    fi
    if ! cmp -s "$out" "$EXPECT"; then
        fail "$sc/$target: answer differs from the mock's bytes (got $out, expected $EXPECT)"
        return 1
    fi
}

# run_wrk DURATION SCENARIO: wrk on core LOAD_CPU against TARGET_URL; sets W_* from the
# BENCH_RESULT line post.lua prints. The full wrk output goes to $TMP/wrk-*.log.
run_wrk() {
    local d=$1 sc=$2 log=$TMP/wrk-$2-$CUR_TARGET-$1.log line
    BENCH_BODY_FILE=$BODY_FILE BENCH_KEY=$TARGET_KEY BENCH_STREAM=$STREAM \
        taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency \
        -s "$HERE/post.lua" "$TARGET_URL" >"$log" 2>&1 || die "wrk failed: $(tail -n 5 "$log")"
    line=$(grep '^BENCH_RESULT ' "$log") || die "wrk printed no result ($log)"
    W_requests="" W_duration_us="" W_p50_us="" W_p99_us=""
    W_err_status="" W_err_connect="" W_err_read="" W_err_write="" W_err_timeout=""
    local kv
    for kv in ${line#BENCH_RESULT }; do
        [[ ${kv#*=} =~ ^[0-9]+$ ]] || die "unexpected wrk result field '$kv' ($log)"
        printf -v "W_${kv%%=*}" '%s' "${kv#*=}"
    done
    [[ -n $W_requests && -n $W_duration_us && -n $W_p99_us && -n $W_err_timeout ]] ||
        die "incomplete wrk result: $line"
}

# "busy total" clock ticks of core N so far, from /proc/stat (busy = all but idle/iowait).
core_ticks() {
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# children_cpu VAR: set VAR to the CPU seconds used by this shell's finished children
# (bash's `times`, second line), to get wrk's own CPU time. `times` must run in this
# shell (a $(...) subshell has no children yet), hence the file and the variable name.
children_cpu() {
    times >"$TMP/times"
    printf -v "$1" '%s' "$(awk 'NR == 2 { n = 0; for (i = 1; i <= 2; i++) {
        split($i, a, /[ms]/); n += a[1] * 60 + a[2] }; printf "%.3f", n }' "$TMP/times")"
}

# measure SCENARIO TARGET: warm up, then one measured wrk run; appends a row to RESULTS:
#   scenario target req/s p50ms p99ms rssMB cpu_us/req cpu% requests core0% core1% other0% other1%
#   redis_us/req redis_rssMB
measure() {
    local sc=$1 target=$2
    CUR_TARGET=$target
    local -a pids
    read -r -a pids <<<"$TARGET_PIDS"
    if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
        run_wrk "$WARMUP" "$sc"
        ensure_alive "during the $sc warm-up" "${pids[@]}" "$MOCK_PID"
    fi
    if [[ $target == api-proxy ]]; then
        read -r U0_REQ U0_IN U0_OUT <<<"$(usage_settled)"
        ensure_alive "after the $sc warm-up" "${pids[@]}"
        [[ -n ${U0_OUT:-} ]] || die "cannot read GET /admin/usage"
        M0=$(mock_served)
    fi
    # CPU before/after: the target, the mock, wrk (as our child), redis alone, both cores.
    local -a mock_pids
    read -r -a mock_pids <<<"$(pids_of "$MOCK_PID")"
    local t0 m0 r0=0 w0 c0 c1
    t0=$(cpu_ticks "${pids[@]}")
    m0=$(cpu_ticks "${mock_pids[@]}")
    [[ $target == api-proxy ]] && r0=$(cpu_ticks "$REDIS_PID")
    children_cpu w0
    c0=$(core_ticks "$LOAD_CPU")
    c1=$(core_ticks "$PROXY_CPU")

    run_wrk "$DURATION" "$sc"

    local t1 m1 r1=0 w1 c0e c1e
    c0e=$(core_ticks "$LOAD_CPU")
    c1e=$(core_ticks "$PROXY_CPU")
    ensure_alive "during the $sc run" "${pids[@]}" "$MOCK_PID"
    t1=$(cpu_ticks "${pids[@]}")
    m1=$(cpu_ticks "${mock_pids[@]}")
    [[ $target == api-proxy ]] && r1=$(cpu_ticks "$REDIS_PID")
    children_cpu w1
    local rss redis_rss=0
    rss=$(peak_rss_kb "${pids[@]}")
    [[ $target == api-proxy ]] && redis_rss=$(peak_rss_kb "$REDIS_PID")

    local errs=$((W_err_status + W_err_connect + W_err_read + W_err_write + W_err_timeout))
    if ((W_err_status)); then
        fail "$sc/$target: $W_err_status non-2xx answers out of $W_requests"
    fi
    if ((errs - W_err_status)); then
        fail "$sc/$target: socket errors: connect $W_err_connect, read $W_err_read, write $W_err_write, timeout $W_err_timeout"
    fi
    ((W_requests > 0)) || fail "$sc/$target: no request completed"

    # Everything in % of one core over wrk's duration. "foreign" = what the cores did
    # beyond our own processes (other programs on the machine, and kernel work such as
    # softirqs not charged to any process): if large, the figures are noisy.
    local row
    row=$(awk -v n="$W_requests" -v us="$W_duration_us" -v p50="$W_p50_us" -v p99="$W_p99_us" \
        -v rss="$rss" -v ticks=$((t1 - t0)) -v mticks=$((m1 - m0)) -v rticks=$((r1 - r0)) \
        -v wcpu="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
        -v c0="$c0" -v c0e="$c0e" -v c1="$c1" -v c1e="$c1e" -v hz="$CLK_TCK" \
        -v is_mock="$([[ $target == mock ]] && echo 1 || echo 0)" -v redis_rss="$redis_rss" 'BEGIN {
            secs = us / 1e6
            cpu_s = ticks / hz
            split(c0, a, " "); split(c0e, b, " "); core0 = 100 * (b[1] - a[1]) / (b[2] - a[2])
            split(c1, a, " "); split(c1e, b, " "); core1 = 100 * (b[1] - a[1]) / (b[2] - a[2])
            mock = 100 * mticks / hz / secs
            wrk = 100 * wcpu / secs
            target = 100 * cpu_s / secs
            f0 = core0 - wrk - mock
            f1 = core1 - (is_mock ? 0 : target)
            printf "%.0f %.3f %.3f %.1f %.1f %.0f %d %.0f %.0f %.0f %.0f %s %s",
                n / secs, p50 / 1000, p99 / 1000, rss / 1024, n ? cpu_s * 1e6 / n : 0, target, n,
                core0, core1, f0, f1, (redis_rss && n ? sprintf("%.1f", rticks / hz * 1e6 / n) : "-"),
                (redis_rss ? sprintf("%.1f", redis_rss / 1024) : "-") }')
    RESULTS+=("$sc $target $row")
    say "$sc/$target: $(awk '{printf "%s req/s, p50 %s ms, p99 %s ms, RSS %s MB, %s us/req, CPU %s%%; core %s %s%% busy (%s%% not ours), core %s %s%% busy (%s%% not ours)", $3,$4,$5,$6,$7,$8, L,$10,$12, P,$11,$13}' \
        L="$LOAD_CPU" P="$PROXY_CPU" <<<"$sc $target $row")"

    if [[ $target == api-proxy ]]; then
        check_usage "$sc"
    fi
}

# Usage must be exact: one request counted per 2xx answer, with its tokens. wrk counts
# only the answers it read; when it stops, up to one request per connection may have been
# answered by the proxy but not read, so usage may exceed wrk's count by at most CONNS.
# The mock's log of what it answered api-proxy is the exact reference.
check_usage() {
    local sc=$1 u1_req u1_in u1_out m1 exp_in exp_out
    read -r u1_req u1_in u1_out <<<"$(usage_settled)"
    local -a pids
    read -r -a pids <<<"$TARGET_PIDS"
    ensure_alive "after the $sc run" "${pids[@]}"
    [[ -n ${u1_out:-} ]] || die "cannot read GET /admin/usage"
    m1=$(mock_served)
    local counted=$((u1_req - U0_REQ)) served=$((m1 - M0)) tin=$((u1_in - U0_IN)) tout=$((u1_out - U0_OUT))
    read -r exp_in exp_out <"$TMP/fixtures/expected-usage"
    local note="usage: $counted requests counted ($tin in / $tout out tokens); wrk completed $W_requests; mock answered $served for api-proxy"
    say "$sc/api-proxy $note"
    USAGE_NOTES+=("$sc: $note")
    if ((counted < W_requests || counted > W_requests + CONNS)); then
        fail "$sc/api-proxy: usage counted $counted requests, wrk completed $W_requests (allowed: up to $CONNS more, in flight when wrk stopped)"
    fi
    if ((counted != served)); then
        fail "$sc/api-proxy: usage counted $counted requests but the mock answered $served"
    fi
    if ((tin != counted * exp_in || tout != counted * exp_out)); then
        fail "$sc/api-proxy: tokens $tin/$tout, expected $((counted * exp_in))/$((counted * exp_out)) for $counted answers"
    fi
    local bad
    bad=$(mock_unserved)
    ((bad == 0)) || say "$sc/api-proxy: note: the mock logged $bad incomplete/non-200 answers to api-proxy so far"
}

# ------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------

# Which api-proxy was measured: the commit it was built from, when it is this checkout's.
proxy_version() {
    if [[ -n ${AP_BIN:-} ]]; then
        echo "api-proxy $PROXY_BIN"
    else
        echo "api-proxy $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- proxy common include 2>/dev/null || echo ' + uncommitted changes')"
    fi
}

print_report() {
    printf '\n'
    printf 'api-proxy benchmark  %s\n' "$(date -u '+%Y-%m-%d %H:%M:%SZ')"
    printf '  wrk -t%s -c%s -d%s (warm-up %s); wrk + mock pinned to core %s, the target to core %s; kernel %s\n' \
        "$THREADS" "$CONNS" "$DURATION" "$WARMUP" "$LOAD_CPU" "$PROXY_CPU" "$(uname -r)"
    printf '  %s; nginx %s; %s; %s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
        "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')" "$(redis-server --version | awk '{print $1" "$2" "$3}')" \
        "$(proxy_version)"
    printf '  api-proxy: LOG_LEVEL=%s, usage accounting on, real key; its figures include its redis-server\n' "$PROXY_LOG_LEVEL"
    printf '  (x) = api-proxy / nginx.  CPU %% = target CPU time / wall time.  busy: cores %s/%s busy %%;\n' "$LOAD_CPU" "$PROXY_CPU"
    printf '  other: the part of that not used by wrk, the mock or the target (other programs, kernel).\n\n'
    printf '%s\n' "${RESULTS[@]}" | awk -v scen="$SCENARIOS" -v lc="$LOAD_CPU" -v pc="$PROXY_CPU" '
        { row[$1, $2] = $0; for (i = 1; i <= NF; i++) f[$1, $2, i] = $i }
        function cell(sc, t, i, prec,   v, s, r) {
            v = f[sc, t, i]; s = sprintf("%." prec "f", v)
            r = f[sc, "nginx", i]
            if (t == "api-proxy" && ((sc, "nginx") in row) && r + 0 > 0) s = s sprintf(" (%.2fx)", v / r)
            return s }
        END {
            fmt = "%-8s %-10s %15s %14s %14s %13s %15s %5s %9s %7s %7s\n"
            printf fmt, "scenario", "target", "req/s", "p50 ms", "p99 ms", "peak RSS MB", "CPU us/req", "CPU %", "requests", "busy", "other"
            printf fmt, "--------", "------", "-----", "------", "------", "-----------", "----------", "-----", "--------", "----", "-----"
            n = split(scen, scs, " "); noisy = 0
            for (k = 1; k <= n; k++) {
                sc = scs[k]
                for (j = 1; j <= 3; j++) {
                    t = (j == 1 ? "mock" : j == 2 ? "nginx" : "api-proxy")
                    if (!((sc, t) in row)) continue
                    printf fmt, sc, t, cell(sc, t, 3, 0), cell(sc, t, 4, 2), cell(sc, t, 5, 2),
                        cell(sc, t, 6, 1), cell(sc, t, 7, 1), f[sc, t, 8], f[sc, t, 9],
                        f[sc, t, 10] "/" f[sc, t, 11], f[sc, t, 12] "/" f[sc, t, 13]
                    o = (f[sc, t, 12] > f[sc, t, 13] ? f[sc, t, 12] : f[sc, t, 13])
                    if (o > noisy) { noisy = o; noisy_at = sc "/" t }
                    if (t != "mock" && f[sc, t, 10] >= 95 && f[sc, t, 8] < 90)
                        bound[++nb] = sprintf("%s/%s: core %s was %s%% busy (wrk + mock, and %s%% other work) while the target used %s%%: its req/s is capped by the load side, not by the target", sc, t, lc, f[sc, t, 10], f[sc, t, 12], f[sc, t, 8])
                }
                if (((sc, "nginx") in row) && ((sc, "api-proxy") in row)) {
                    printf "         api-proxy vs nginx: %.2fx req/s, p50 %+.2f ms, p99 %+.2f ms, %.2fx CPU/request",
                        f[sc, "api-proxy", 3] / f[sc, "nginx", 3], f[sc, "api-proxy", 4] - f[sc, "nginx", 4],
                        f[sc, "api-proxy", 5] - f[sc, "nginx", 5],
                        (f[sc, "nginx", 7] > 0 ? f[sc, "api-proxy", 7] / f[sc, "nginx", 7] : 0)
                    if (f[sc, "api-proxy", 14] != "-")
                        printf "\n         (of api-proxy'"'"'s figures, redis-server: %s of the %s us/request, %s of the %s MB)",
                            f[sc, "api-proxy", 14], f[sc, "api-proxy", 7], f[sc, "api-proxy", 15], f[sc, "api-proxy", 6]
                    printf "\n"
                }
            }
            printf "\n"
            for (i = 1; i <= nb; i++) printf "  note: %s\n", bound[i]
            if (noisy > 10)
                printf "  WARNING: up to %s%% of a core went to other work during %s (see \"other\"): figures are noisy; rerun on a quiet machine\n", noisy, noisy_at
        }'
    local n
    for n in "${USAGE_NOTES[@]}"; do printf '  %s\n' "$n"; done
    printf '  mock rows: the mock (nginx answering from memory) loaded directly; RSS and CPU are its own.\n'
}

# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------

main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    [[ $CONNS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "BENCH_CONNECTIONS and BENCH_THREADS must be numbers"
    ((CONNS >= THREADS)) || die "BENCH_CONNECTIONS ($CONNS) must be at least BENCH_THREADS ($THREADS)"
    local sc
    for sc in $SCENARIOS; do scenario_env "$sc"; done

    ensure_tools
    build_proxy
    CLK_TCK=$(getconf CLK_TCK)
    TMP=$(mktemp -d /tmp/ap-bench.XXXXXX)
    python3 "$HERE/fixtures.py" "$TMP/fixtures" || die "generating fixtures failed"
    RESULTS=()
    USAGE_NOTES=()

    start_mock
    say "mock upstream (nginx) on $MOCK_URL, pid $MOCK_PID"
    for sc in $SCENARIOS; do
        scenario_env "$sc"
        say "== scenario $sc ($(wc -c <"$BODY_FILE") B request$( ((STREAM)) && echo ', streamed answer'))"

        TARGET_URL=$MOCK_URL TARGET_KEY=$FAKE_KEY TARGET_PIDS=$(pids_of "$MOCK_PID")
        check_answer "$sc" mock && measure "$sc" mock

        start_nginx_proxy "$sc"
        check_answer "$sc" nginx && measure "$sc" nginx
        stop_proc "$TARGET_PID"

        start_api_proxy "$sc"
        check_answer "$sc" api-proxy && measure "$sc" api-proxy
        stop_proc "$TARGET_PID"
        ((STOP_RC == 0)) || fail "$sc/api-proxy: exited with status $STOP_RC on SIGTERM (log: $TMP/api-proxy-$sc.log)"
        stop_proc "$REDIS_PID"
    done

    print_report
    if ((${#FAILURES[@]})); then
        printf '\nFAILED checks:\n' >&2
        printf '  - %s\n' "${FAILURES[@]}" >&2
        exit 1
    fi
    printf '\nall checks passed\n'
}

main "$@"
