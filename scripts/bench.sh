#!/usr/bin/env bash
# Benchmark api-proxy against nginx, with wrk, in one run (`make bench`; not part of `make test`).
#
#   scripts/bench.sh [default]   the comparison below (also BENCH_MODE=default)
#   scripts/bench.sh fleet       the fleet mode: HAProxy in front of 1, 2, 3 replicas (below)
#   scripts/bench.sh -h          this text
#
# Targets, all in front of the same mock upstream:
#   mock       the mock itself, loaded directly (the ceiling: what wrk + mock can do)
#   nginx      nginx as a plain proxy_pass reverse proxy, upstream keep-alive
#   api-proxy  bin/api-proxy with a real key, usage accounting on, its own redis-server,
#              fallback off (pass-through)
#   api-proxy+fallback   the same api-proxy with fallback on (issue 4): FALLBACK_CONFIG with
#              `enabled: true` and a chain of three tiers (an antigravity tier whose model is
#              the one the benchmark asks for, an upstream tier, an external tier pointing at
#              the mock, never used while the first is available), and a real bin/api-poller
#              polling the mock's fixed /health every BENCH_POLL_INTERVAL s, so each request
#              decides on real, fresh quota data (checked before and after the run). The
#              requested tier is available, so nothing is rewritten: the answer must still be
#              the mock's exact bytes, served by tier 1 (x-api-proxy-tier), with no switch.
#   api-proxy+policy     the plain api-proxy, its key with a policy (issue 12): rpm, tpm and a
#              daily token budget, all far above what the run can reach, so every request
#              takes the real path (one admission EVALSHA in Redis: sliding window, reservation,
#              lease; settled in the usage batch) and is admitted. Checked after the run: every
#              request admitted by Redis, none refused (GET /metrics).
#   api-proxy+convert    the plain api-proxy, loaded by an OpenAI client (issue 3):
#              POST /v1/chat/completions with the same conversation; the model is outside
#              the chain and UPSTREAM_FORMAT=anthropic, so api-proxy converts the request to
#              /v1/messages, and the mock's Anthropic answer (JSON or SSE) back to OpenAI.
#              The answer is checked by scripts/bench/check_openai.py (text, finish reason,
#              usage), as its bytes cannot equal the mock's.
# and three scenarios, all POST /v1/messages in the Anthropic wire format (the convert
# variant sends the same in the OpenAI format):
#   small      ~300 B request, JSON answer
#   large      ~200 KB request, JSON answer
#   stream     ~300 B request with "stream": true, SSE answer of 50 content_block_delta events
#
# For each it prints requests/s, p50/p99 latency, peak RSS (VmHWM) and CPU time per request
# (CPU time / requests; per-thread run time in ns from schedstat, checked against
# utime+stime) of the target (nginx: master + worker; api-proxy: api-proxy + its
# redis-server), and api-proxy's figures as a ratio to nginx's; the fallback and
# convert variants also as a ratio to plain api-proxy ("fallback vs pass-through"), with
# the 5% budget of issue 4 for fallback. On the way it checks that every answer was 2xx,
# that each target returns the mock's exact bytes, and that api-proxy's usage counters
# (GET /admin/usage) match exactly the requests it served. It also shows the Redis
# commands per request of each api-proxy run (INFO commandstats, see the fleet mode).
# Last, the conversion micro-benchmark (build/bench_conv, built with make when missing,
# pinned to the target's core): MB/s of SSE in per core for each stream path and the cost
# of converting a ~200 KB request, printed beside the pass-through figures and the
# end-to-end ones of api-proxy+convert.
#
# Placement: wrk and the mock share core 0, the target (and redis-server, and the poller)
# gets core 1, so runs compare. The mock is nginx answering from memory (`return 200
# '<body>'`, picked by an `x-bench-stream` header), several times cheaper per request than
# any proxy, so it is not the bottleneck (the "mock" rows show its ceiling). The report
# also shows how busy each core was and how much of that was other work (anything else
# running on the machine): pinning does not keep other programs off these cores, so a
# busy machine gives noisy figures, and the report says so. The poller's CPU is not in
# api-proxy+fallback's figures (it is per poll, not per request); the report shows it apart.
#
# Fleet mode (issue 6): HAProxy (the Debian package, run as a plain process with its own
# config made from tests/cluster/haproxy.cfg.in: round robin, /health checks, http-server-
# close) in front of 1, then 2, then 3 api-proxy replicas sharing one redis-server (and,
# with BENCH_FLEET_FALLBACK=1, the default, the three-tier chain and one poller, as in
# tests/cluster/cluster.sh), loaded with wrk. Everything is started fresh for each row.
# First row: one replica loaded directly, without HAProxy, for reference. It prints a table
# per scenario: replicas, req/s, p50, p99, CPU us/request of the fleet (all replicas +
# redis-server + HAProxy, and that split), Redis commands per proxied request (the
# difference of INFO commandstats calls before/after the run, divided by the requests the
# mock answered; with the top commands below the table, and the idle rate of background
# commands measured just before), and checks usage exactly as the default mode does.
# Placement: this is a 2-core machine, so pinning cannot give every process its own core:
# wrk + mock stay on core 0, and HAProxy, redis-server, the poller and ALL replicas share
# BENCH_FLEET_CPUS (default core 1). More replicas therefore add no CPU: the table shows
# what the fleet costs per request as it grows (extra hop, more Redis clients, usage
# batches split across replicas), not how it scales on more cores. BENCH_FLEET_CPUS=0,1
# lets the fleet float over both cores (then it shares core 0 with wrk and the mock).
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
#   BENCH_FALLBACK_SCENARIOS  scenarios that also run api-proxy+fallback (default: all
#                      three; empty: none)
#   BENCH_POLICY_SCENARIOS    scenarios that also run api-proxy+policy (default: all three;
#                      empty: none)
#   BENCH_CONVERT_SCENARIOS   scenarios that also run api-proxy+convert (default: all three;
#                      large converts a ~200 KB request; empty: none)
#   BENCH_POLL_INTERVAL  the poller's interval in seconds (default 1)
#   BENCH_CONV         0: skip the conversion micro-benchmark (default 1)
#   BENCH_CONV_BIN     the micro-benchmark (default <repo>/build/bench_conv)
#   BENCH_LOG_LEVEL    api-proxy LOG_LEVEL (default warn: no per-request access log; with
#                      info/debug nginx gets an access log too, so the comparison stays fair)
#   BENCH_REDIS_ARGS   extra redis-server arguments (e.g. "--appendonly yes")
#   BENCH_KEEP         1: keep the temp dir (logs, configs) even on success
#   BENCH_NO_BUILD     1: do not run make first (bench_conv is still built when missing)
#   AP_BIN             directory holding api-proxy and api-poller (default <repo>/bin)
# Fleet mode:
#   BENCH_FLEET_REPLICAS   replica counts, in order (default "1 2 3"; at most 3)
#   BENCH_FLEET_SCENARIOS  scenarios (default "small stream")
#   BENCH_FLEET_CPUS       taskset CPU list for HAProxy, redis, poller, replicas (default 1)
#   BENCH_FLEET_FALLBACK   1 (default): the three-tier chain and a poller; 0: fallback off
#   BENCH_FLEET_DIRECT     1 (default): a first row with one replica and no HAProxy
#   BENCH_FLEET_IDLE       seconds of idle Redis traffic measured before each row (default 2)
#   HAPROXY                the haproxy executable (default: from PATH or /usr/sbin)
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
FALLBACK_SCENARIOS=${BENCH_FALLBACK_SCENARIOS-small large stream}
CONVERT_SCENARIOS=${BENCH_CONVERT_SCENARIOS-small large stream}
POLICY_SCENARIOS=${BENCH_POLICY_SCENARIOS-small large stream}
# The benchmark key's policy: every limit set, none reachable in a run.
BENCH_POLICY='{"rpm": 1000000000, "tpm": 1000000000000, "daily_tokens": 1000000000000000}'
POLL_INTERVAL=${BENCH_POLL_INTERVAL:-1}
RUN_CONV=${BENCH_CONV:-1}
CONV_BIN=${BENCH_CONV_BIN:-$ROOT/build/bench_conv}
FALLBACK_BUDGET_PCT=5 # issue 4: fallback on must stay within 5% of pass-through
FLEET_REPLICAS=${BENCH_FLEET_REPLICAS:-1 2 3}
FLEET_SCENARIOS=${BENCH_FLEET_SCENARIOS:-small stream}
FLEET_CPUS=${BENCH_FLEET_CPUS:-$PROXY_CPU}
FLEET_FALLBACK=${BENCH_FLEET_FALLBACK:-1}
FLEET_DIRECT=${BENCH_FLEET_DIRECT:-1}
FLEET_IDLE=${BENCH_FLEET_IDLE:-2}
MODE=default

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
    if [[ $MODE == fleet ]] && [[ -z ${HAPROXY:-} ]]; then
        command -v haproxy >/dev/null || [[ -x /usr/sbin/haproxy ]] || need+=(haproxy)
    fi
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
    if [[ $MODE == fleet ]]; then
        HAPROXY=${HAPROXY:-$(command -v haproxy || echo /usr/sbin/haproxy)}
        [[ -x $HAPROXY ]] || die "haproxy not found at $HAPROXY (apt-get install haproxy, or set HAPROXY)"
        taskset -c "$FLEET_CPUS" true 2>/dev/null || die "BENCH_FLEET_CPUS=$FLEET_CPUS is not a CPU list this shell may use"
    fi
    local ncpu
    ncpu=$(taskset -pc $$ | awk -F': ' '{print $2}')
    taskset -c "$LOAD_CPU,$PROXY_CPU" true 2>/dev/null ||
        die "this benchmark pins to cores $LOAD_CPU and $PROXY_CPU, but this shell may only use cores $ncpu"
}

build_proxy() {
    # Only the programs this run needs: `make bench` built everything already, and a direct
    # run should not depend on the other programs building.
    if [[ ${BENCH_NO_BUILD:-0} != 1 && -z ${AP_BIN:-} ]]; then
        say "building api-proxy and api-poller"
        make -s -C "$ROOT" bin/api-proxy bin/api-poller >&2 || die "building api-proxy/api-poller failed"
    fi
    PROXY_BIN=$BIN_DIR/api-proxy
    POLLER_BIN=$BIN_DIR/api-poller
    [[ -x $PROXY_BIN ]] || die "$PROXY_BIN not found (run make, or set AP_BIN)"
    if [[ -n $FALLBACK_SCENARIOS || ($MODE == fleet && $FLEET_FALLBACK == 1) ]]; then
        [[ -x $POLLER_BIN ]] || die "$POLLER_BIN not found (run make, or set AP_BIN; or BENCH_FALLBACK_SCENARIOS=)"
    fi
}

# The conversion micro-benchmark: built with make (up to date, or when missing); a failure
# is reported, it does not stop the benchmark.
build_conv() {
    [[ $MODE == default && $RUN_CONV == 1 ]] || return 0
    if [[ -z ${BENCH_CONV_BIN:-} ]] && { [[ ${BENCH_NO_BUILD:-0} != 1 ]] || [[ ! -x $CONV_BIN ]]; }; then
        say "building build/bench_conv"
        make -s -C "$ROOT" build/bench_conv >&2 || fail "building build/bench_conv failed (make build/bench_conv)"
    fi
    [[ -x $CONV_BIN ]] || fail "$CONV_BIN not found: no conversion micro-benchmark figures"
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

# CPU time used so far by PIDS, as "TICKS NS": utime+stime in clock ticks from
# /proc/PID/stat (all threads, also those that exited; exact, but in 10 ms units), and the
# run time in ns of the threads alive now, from /proc/PID/task/*/schedstat. cpu_us turns
# two snapshots into microseconds: the ns figure when it agrees with the ticks (a low-rate
# run uses a few ticks only, too coarse for a 5% comparison), else the ticks (a thread
# that exited in between took its ns with it).
cpu_ticks() {
    local pid stat total=0 ns=0 t v
    local -a fields
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat") || die "process $pid is gone"
        read -r -a fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12])) # fields 14 and 15 of stat(5)
        for t in /proc/"$pid"/task/*/schedstat; do
            read -r v _ 2>/dev/null <"$t" && ns=$((ns + v))
        done
    done
    echo "$total $ns"
}
cpu_us() { # SNAPSHOT0 SNAPSHOT1 WHAT (for $TMP/cpu-source.log)
    local r
    r=$(awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        ticks = y[1] - x[1]; ns = y[2] - x[2]
        # ticks are rounded at each end: within 2 ticks (and 2%) of the ns figure is agreement
        if (ns >= 0 && (ns / 1e9 * hz - ticks) ^ 2 <= (2 + 0.02 * ticks) ^ 2) printf "%.0f ns", ns / 1000
        else printf "%.0f ticks(ns:%.0f)", ticks * 1e6 / hz, ns / 1000 }')
    printf '%s %s: %s us from %s\n' "${CUR_TARGET:-}" "$3" "${r%% *}" "${r#* }" >>"$TMP/cpu-source.log"
    echo "${r%% *}"
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
# usage counters can be checked against what the mock really answered it. /health is the
# fixed quota document of the fixtures (several accounts, three models); the poller polls
# it on MOCK_URL, so its polls stay out of that log. /v1/chat/completions is not served
# (404): the external tier that points at it must never be used.
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
location = /health {
    default_type application/json;
    include $TMP/fixtures/mock-health.inc;
}
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

# start_redis NAME CPU: a private redis-server (no RDB snapshots: a fork mid-run would
# distort the figures; AOF stays off as in redis' defaults unless BENCH_REDIS_ARGS says
# otherwise). Sets REDIS_PID, REDIS_PORT.
start_redis() {
    local name=$1 cpu=$2 dir=$TMP/$1
    mkdir -p "$dir"
    REDIS_PORT=$(free_port)
    # shellcheck disable=SC2086
    start_proc "$name" "$cpu" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$dir" --daemonize no --logfile '' $REDIS_EXTRA
    REDIS_PID=$LAST_PID
    wait_for "redis-server on port $REDIS_PORT" 10 "$REDIS_PID" "$name" redis_ping "$REDIS_PORT"
}

# The tier chain of the fallback runs (issue 4): the benchmark's model as an antigravity
# tier (quota from /health: 0.8), an upstream tier (0.5), and an external tier pointing at
# the mock's OpenAI path (never used while the first tier is available; the mock would
# answer it 404, which the checks would see).
TIER1_NAME="Bench model (antigravity)"
write_chain() {
    cat >"$1" <<EOF
{
  "enabled": true,
  "health_poll_interval_seconds": $POLL_INTERVAL,
  "min_remaining_fraction": 0.05,
  "reactive_cooldown_seconds": 60,
  "recovery_margin": 0.0,
  "tiers": [
    {"name": "$TIER1_NAME", "model": "$MODEL", "type": "antigravity", "health_key": "$MODEL"},
    {"name": "Gemini 3 Pro High (upstream)", "model": "gemini-3-pro-high", "type": "upstream"},
    {"name": "Kimi K2.5 (external: the mock)", "model": "kimi-k2.5", "type": "external",
     "base_url": "$MOCK_AP_URL/v1", "api_key": "sk-bench-external", "max_tokens_limit": 8192}
  ]
}
EOF
}

# start_poller NAME CPU CHAIN: a real bin/api-poller on the mock's /health (MOCK_URL, whose
# requests are not logged) every POLL_INTERVAL s; waits until it holds the lease. Sets
# POLLER_PID, POLLER_URL.
start_poller() {
    local name=$1 cpu=$2 chain=$3 port
    port=$(free_port)
    start_proc "$name" "$cpu" env -u UPSTREAM_FORMAT -u UPSTREAM_API_KEY -u KEYS_FILE \
        UPSTREAM_URL="$MOCK_URL" REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
        FALLBACK_CONFIG="$chain" POLL_INTERVAL_SECONDS="$POLL_INTERVAL" INSTANCE_ID="bench-poller" \
        POLLER_PORT="$port" POLLER_BIND=127.0.0.1 LOG_LEVEL="$PROXY_LOG_LEVEL" "$POLLER_BIN"
    POLLER_PID=$LAST_PID
    POLLER_URL=http://127.0.0.1:$port
    wait_for "the poller to hold the lease" 15 "$POLLER_PID" "$name" poller_leader "$POLLER_URL"
}
poller_leader() { curl -fsS --max-time 2 "$1/health" | grep -q '"leader":true'; }
poller_polls() {
    curl -fsS --max-time 2 "$1/metrics" | awk '$1 == "ap_poller_polls_total" { print $2 + 0; f = 1 } END { if (!f) print 0 }'
}

# fallback_state URL: GET /admin/fallback shows the chain on and fresh quota data
# from the poller, as the fixture's /health says: tier 1 available at 0.8, tier 2 at 0.5,
# not stale (data younger than three intervals). Prints why not, when not.
fallback_state() {
    local doc
    doc=$(curl -fsS --max-time 2 -H "x-api-key: $ADMIN_KEY" "$1/admin/fallback" 2>&1) || { echo "GET /admin/fallback: $doc"; return 1; }
    python3 -c 'import json, sys
d = json.loads(sys.argv[1]); t = d.get("tiers") or []; iv = float(sys.argv[2])
why = []
if not d.get("enabled"): why.append("fallback is off")
if len(t) != 3: why.append("%d tiers" % len(t))
elif not (t[0].get("available") and t[0].get("fraction") == 0.8 and t[1].get("fraction") == 0.5):
    why.append("tiers not as /health says: %s" % [(x.get("model"), x.get("available"), x.get("fraction")) for x in t])
if d.get("stale") or not d.get("last_health_poll"): why.append("quota data stale or missing")
elif (d.get("data_age_seconds") or 0) > 3 * iv: why.append("quota data %.1f s old" % d["data_age_seconds"])
if why: print("; ".join(why)); sys.exit(1)' "$doc" "$POLL_INTERVAL"
}
fallback_ready() { fallback_state "$1" >/dev/null; }

# api-proxy as deployed: a real key made through the admin API, usage accounting on (it
# always is), its own redis-server on the same core. VARIANT: api-proxy (fallback off),
# api-proxy+convert (the same; the client differs), api-proxy+fallback (the chain on,
# and a poller on the same core).
start_api_proxy() {
    local variant=$1 sc=$2 name=$1-$2
    local dir=$TMP/$name
    mkdir -p "$dir"
    start_redis "redis-$name" "$PROXY_CPU"
    AUX_PIDS="" POLLER_URL="" LB_PIDS=""
    if [[ $variant == api-proxy+fallback ]]; then
        write_chain "$dir/fallback.json"
        start_poller "poller-$name" "$PROXY_CPU" "$dir/fallback.json"
        AUX_PIDS=$POLLER_PID
    else
        printf '{"enabled": false, "tiers": []}\n' >"$dir/fallback.json"
    fi

    PROXY_PORT=$(free_port)
    ADMIN_KEY=sk-bench-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    start_proc "$name" "$PROXY_CPU" env -u UPSTREAM_FORMAT -u UPSTREAM_API_KEY -u KEYS_FILE \
        -u POLL_INTERVAL_SECONDS \
        PROXY_BIND=127.0.0.1 PROXY_PORT="$PROXY_PORT" UPSTREAM_URL="$MOCK_AP_URL" \
        REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" ADMIN_KEY="$ADMIN_KEY" \
        FALLBACK_CONFIG="$dir/fallback.json" USAGE_TZ=+00:00 LOG_LEVEL="$PROXY_LOG_LEVEL" \
        "$PROXY_BIN"
    TARGET_PID=$LAST_PID
    TARGET_URL=http://127.0.0.1:$PROXY_PORT
    ADMIN_URL=$TARGET_URL
    wait_for "api-proxy /health on port $PROXY_PORT" 10 "$TARGET_PID" "$name" http_ok "$TARGET_URL/health"
    TARGET_PIDS="$TARGET_PID $REDIS_PID"

    local doc
    local key_doc='{"name":"bench"}'
    [[ $variant == api-proxy+policy ]] && key_doc="{\"name\":\"bench\",\"policy\":$BENCH_POLICY}"
    doc=$(curl -sS --max-time 5 -H "x-api-key: $ADMIN_KEY" -H 'Content-Type: application/json' \
        --data "$key_doc" "$TARGET_URL/admin/keys") || die "POST /admin/keys failed"
    TARGET_KEY=$(json_field api_key <<<"$doc") || die "POST /admin/keys answered: $doc"
    if [[ $variant == api-proxy+fallback ]]; then
        wait_for "api-proxy to have the poller's quota data (GET /admin/fallback)" 20 "$TARGET_PID" "$name" \
            fallback_ready "$TARGET_URL"
    fi
}

# json_field NAME < doc: print a top-level field of a JSON document (fails when absent).
json_field() {
    python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}

# usage_totals: "requests input output" from GET /admin/usage.
usage_totals() {
    local doc
    doc=$(curl -sS --max-time 5 -H "x-api-key: $ADMIN_KEY" "$ADMIN_URL/admin/usage" 2>&1) || return 1
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
    REQ_PATH=/v1/messages OPENAI=0 CHECK=exact EXPECT_TIER=""
}

# target_env SCENARIO TARGET: what the client sends and how its answer is checked.
#   CHECK exact: the mock's bytes; openai: check_openai.py. EXPECT_TIER: the
#   x-api-proxy-tier the answer must carry (fallback on).
target_env() {
    scenario_env "$1"
    case $2 in
    api-proxy+convert)
        BODY_FILE=$TMP/fixtures/oai-$1.json REQ_PATH=/v1/chat/completions OPENAI=1 CHECK=openai ;;
    api-proxy+fallback) EXPECT_TIER=$TIER1_NAME ;;
    fleet:*) [[ $FLEET_FALLBACK == 1 ]] && EXPECT_TIER=$TIER1_NAME ;;
    esac
    return 0
}

is_ap() { [[ $1 == api-proxy* || $1 == fleet:* ]]; }

# check_answer SCENARIO TARGET: one request with curl; it must be 200 with the mock's exact
# bytes (a proxy must pass the body through unchanged; a converted answer is checked by
# check_openai.py), before wrk loads the target.
check_answer() {
    local sc=$1 target=$2 out=$TMP/answer-$1-$2 code
    local -a hdr=(-H 'Content-Type: application/json')
    if ((OPENAI)); then
        hdr+=(-H "Authorization: Bearer $TARGET_KEY")
    else
        hdr+=(-H 'anthropic-version: 2023-06-01' -H "x-api-key: $TARGET_KEY")
    fi
    ((STREAM)) && hdr+=(-H 'x-bench-stream: 1' -H 'Accept: text/event-stream')
    code=$(curl -sS -N --max-time 10 -o "$out" -D "$out.headers" -w '%{http_code}' "${hdr[@]}" \
        --data-binary "@$BODY_FILE" "$TARGET_URL$REQ_PATH") || code="curl failed"
    if [[ $code != 200 ]]; then
        fail "$sc/$target: check request answered $code: $(head -c 300 "$out" 2>/dev/null)"
        return 1
    fi
    if [[ $CHECK == openai ]]; then
        local why
        if ! why=$(python3 "$HERE/check_openai.py" "$TMP/fixtures" "$out" "$( ((STREAM)) && echo stream || echo message)" 2>&1); then
            fail "$sc/$target: converted answer is wrong: $why (got $out)"
            return 1
        fi
    elif ! cmp -s "$out" "$EXPECT"; then
        fail "$sc/$target: answer differs from the mock's bytes (got $out, expected $EXPECT)"
        return 1
    fi
    if [[ -n $EXPECT_TIER ]]; then
        local tier
        tier=$(awk 'tolower($1) == "x-api-proxy-tier:" { sub(/^[^:]*: */, ""); sub(/\r$/, ""); print }' "$out.headers")
        if [[ $tier != "$EXPECT_TIER" ]]; then
            fail "$sc/$target: served by tier '$tier', expected '$EXPECT_TIER' (headers: $out.headers)"
            return 1
        fi
    fi
}

# run_wrk DURATION SCENARIO: wrk on core LOAD_CPU against TARGET_URL; sets W_* from the
# BENCH_RESULT line post.lua prints. The full wrk output goes to $TMP/wrk-*.log.
run_wrk() {
    local d=$1 sc=$2 log=$TMP/wrk-$2-$CUR_TARGET-$1.log line
    BENCH_BODY_FILE=$BODY_FILE BENCH_KEY=$TARGET_KEY BENCH_STREAM=$STREAM BENCH_PATH=$REQ_PATH \
        BENCH_OPENAI=$OPENAI taskset -c "$LOAD_CPU" wrk -t"$THREADS" -c"$CONNS" -d"$d" --latency \
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

# TCP connections opened so far on this machine (ActiveOpens in /proc/net/snmp): over a
# run, divided by its requests, it shows who opens a connection per request (0 when every
# hop keeps its connections alive). Machine-wide: other programs add theirs.
tcp_opens() {
    awk '/^Tcp:/ && !h { for (i = 1; i <= NF; i++) col[$i] = i; h = 1; next }
        /^Tcp:/ { print $col["ActiveOpens"]; exit }' /proc/net/snmp
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

# cmdstats PORT FILE: "command calls" per command from INFO commandstats. Since Redis 7
# (this is what Debian bookworm ships), commands a Lua script runs with redis.call are
# counted there too, under their own names, beside the EVAL/EVALSHA that ran them (the
# benchmark checks this once per fleet run: SCRIPT_CALLS_COUNTED).
cmdstats() {
    redis-cli -h 127.0.0.1 -p "$1" info commandstats 2>/dev/null | tr -d '\r' |
        awk -F'[:,=]' '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); print $1, $3 }' >"$2"
}

# cmd_delta BEFORE AFTER REQUESTS: two lines: "total scripts" commands per request, and the
# top commands per request ("name n.nn, ..."). Our own INFO calls are left out.
cmd_delta() {
    awk -v n="$3" 'FNR == NR { b[$1] = $2; next }
        $1 != "info" { d = $2 - b[$1]; if (d > 0) { c[$1] = d; tot += d }
            if ($1 ~ /^(eval|evalsha|eval_ro|evalsha_ro|fcall|fcall_ro)$/) scr += d }
        END {
            if (n <= 0) { print "- -"; print "-"; exit }
            printf "%.3f %.3f\n", tot / n, scr / n
            s = ""
            for (k = 0; k < 8; k++) {
                best = ""; bv = 0
                for (x in c) if (c[x] > bv) { bv = c[x]; best = x }
                if (best == "") break
                s = s (s == "" ? "" : ", ") sprintf("%s %.3f", best, bv / n)
                delete c[best]
            }
            print (s == "" ? "none" : s)
        }' "$1" "$2"
}

# measure SCENARIO TARGET: warm up, then one measured wrk run; appends a row to RESULTS:
#   1 scenario 2 target 3 req/s 4 p50ms 5 p99ms 6 rssMB 7 cpu_us/req 8 cpu% 9 requests
#   10 core0% 11 core1% 12 other0% 13 other1% 14 redis_us/req 15 redis_rssMB
#   16 aux_us/req (poller) 17 lb_us/req (HAProxy) 18 redis_cmds/req 19 script_calls/req
#   20 other% (both cores) 21 served (answers the mock gave the target, when logged)
#   22 TCP connections opened on the machine per request
# TARGET_PIDS: the target's processes (api-proxy: with its redis-server; fleet: replicas,
# HAProxy, redis-server); REDIS_PID, LB_PIDS, AUX_PIDS (not part of the target's figures).
measure() {
    local sc=$1 target=$2 ap=0
    CUR_TARGET=$target
    is_ap "$target" && ap=1
    local -a pids aux lb
    read -r -a pids <<<"$TARGET_PIDS"
    read -r -a aux <<<"${AUX_PIDS:-}"
    read -r -a lb <<<"${LB_PIDS:-}"
    if [[ $WARMUP != 0 && $WARMUP != 0s ]]; then
        run_wrk "$WARMUP" "$sc"
        ensure_alive "during the $sc warm-up" "${pids[@]}" "${aux[@]}" "$MOCK_PID"
    fi
    local polls0=0
    if ((ap)); then
        read -r U0_REQ U0_IN U0_OUT <<<"$(usage_settled)"
        ensure_alive "after the $sc warm-up" "${pids[@]}" "${aux[@]}"
        [[ -n ${U0_OUT:-} ]] || die "cannot read GET /admin/usage"
        M0=$(mock_served)
        cmdstats "$REDIS_PORT" "$TMP/cmdstats-0"
        [[ -n ${POLLER_URL:-} ]] && polls0=$(poller_polls "$POLLER_URL")
    fi
    # CPU before/after: the target, the mock, wrk (as our child), redis, poller, HAProxy,
    # both cores.
    local -a mock_pids
    read -r -a mock_pids <<<"$(pids_of "$MOCK_PID")"
    local t0 m0 r0="0 0" a0 l0 w0 c0 c1
    t0=$(cpu_ticks "${pids[@]}")
    m0=$(cpu_ticks "${mock_pids[@]}")
    ((ap)) && r0=$(cpu_ticks "$REDIS_PID")
    a0=$(cpu_ticks "${aux[@]}")
    l0=$(cpu_ticks "${lb[@]}")
    children_cpu w0
    local o0 o1
    o0=$(tcp_opens)
    c0=$(core_ticks "$LOAD_CPU")
    c1=$(core_ticks "$PROXY_CPU")

    run_wrk "$DURATION" "$sc"

    local t1 m1 r1="0 0" a1 l1 w1 c0e c1e
    c0e=$(core_ticks "$LOAD_CPU")
    c1e=$(core_ticks "$PROXY_CPU")
    o1=$(tcp_opens)
    ensure_alive "during the $sc run" "${pids[@]}" "${aux[@]}" "$MOCK_PID"
    t1=$(cpu_ticks "${pids[@]}")
    m1=$(cpu_ticks "${mock_pids[@]}")
    ((ap)) && r1=$(cpu_ticks "$REDIS_PID")
    a1=$(cpu_ticks "${aux[@]}")
    l1=$(cpu_ticks "${lb[@]}")
    children_cpu w1
    local rss redis_rss=0
    rss=$(peak_rss_kb "${pids[@]}")
    ((ap)) && redis_rss=$(peak_rss_kb "$REDIS_PID")
    POLLS_DELTA=""
    [[ -n ${POLLER_URL:-} ]] && POLLS_DELTA=$(($(poller_polls "$POLLER_URL") - polls0))
    # Redis commands: the window closes once the last usage flush is done (replies wait
    # for their usage to be in Redis, and deltas are flushed every 100 ms), before the
    # admin API calls of the usage check, which would add commands of their own.
    if ((ap)); then
        sleep 0.5
        cmdstats "$REDIS_PORT" "$TMP/cmdstats-1"
    fi

    local errs=$((W_err_status + W_err_connect + W_err_read + W_err_write + W_err_timeout))
    if ((W_err_status)); then
        fail "$sc/$target: $W_err_status non-2xx answers out of $W_requests"
    fi
    if ((errs - W_err_status)); then
        fail "$sc/$target: socket errors: connect $W_err_connect, read $W_err_read, write $W_err_write, timeout $W_err_timeout"
    fi
    ((W_requests > 0)) || fail "$sc/$target: no request completed"

    # Usage; and the Redis commands per request (between the settled totals before the run
    # and the end of the last flush after it, exactly SERVED requests went through).
    local cmd_tot=- cmd_scr=- served=-
    if ((ap)); then
        check_usage "$sc" "$target"
        served=$SERVED
        local dl
        dl=$(cmd_delta "$TMP/cmdstats-0" "$TMP/cmdstats-1" "$SERVED")
        read -r cmd_tot cmd_scr <<<"$(head -n 1 <<<"$dl")"
        CMD_TOP["$sc $target"]=$(tail -n 1 <<<"$dl")
    fi

    # Everything in % of one core over wrk's duration. "foreign" = what the cores did
    # beyond our own processes (other programs on the machine, and kernel work such as
    # softirqs not charged to any process): if large, the figures are noisy.
    local row
    row=$(awk -v n="$W_requests" -v us="$W_duration_us" -v p50="$W_p50_us" -v p99="$W_p99_us" \
        -v rss="$rss" -v ticks="$(cpu_us "$t0" "$t1" target)" -v mticks="$(cpu_us "$m0" "$m1" mock)" \
        -v rticks="$(cpu_us "$r0" "$r1" redis)" -v aticks="$(cpu_us "$a0" "$a1" aux)" \
        -v lticks="$(cpu_us "$l0" "$l1" lb)" \
        -v naux=${#aux[@]} -v nlb=${#lb[@]} \
        -v wcpu="$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')" \
        -v c0="$c0" -v c0e="$c0e" -v c1="$c1" -v c1e="$c1e" -v hz=1000000 \
        -v is_mock="$([[ $target == mock ]] && echo 1 || echo 0)" -v redis_rss="$redis_rss" \
        -v cmd_tot="$cmd_tot" -v cmd_scr="$cmd_scr" -v served="$served" -v opens=$((o1 - o0)) 'BEGIN {
            secs = us / 1e6
            cpu_s = ticks / hz
            split(c0, a, " "); split(c0e, b, " "); core0 = 100 * (b[1] - a[1]) / (b[2] - a[2])
            split(c1, a, " "); split(c1e, b, " "); core1 = 100 * (b[1] - a[1]) / (b[2] - a[2])
            mock = 100 * mticks / hz / secs
            wrk = 100 * wcpu / secs
            target = 100 * cpu_s / secs
            aux = 100 * aticks / hz / secs
            f0 = core0 - wrk - mock
            f1 = core1 - (is_mock ? 0 : target + aux)
            fall = core0 + core1 - wrk - mock - (is_mock ? 0 : target + aux)
            printf "%.0f %.3f %.3f %.1f %.1f %.0f %d %.0f %.0f %.0f %.0f %s %s %s %s %s %s %.0f %s %.2f",
                n / secs, p50 / 1000, p99 / 1000, rss / 1024, n ? cpu_s * 1e6 / n : 0, target, n,
                core0, core1, f0, f1, (redis_rss && n ? sprintf("%.1f", rticks / hz * 1e6 / n) : "-"),
                (redis_rss ? sprintf("%.1f", redis_rss / 1024) : "-"),
                (naux && n ? sprintf("%.2f", aticks / hz * 1e6 / n) : "-"),
                (nlb && n ? sprintf("%.1f", lticks / hz * 1e6 / n) : "-"), cmd_tot, cmd_scr, fall, served,
                n ? opens / n : 0 }')
    RESULTS+=("$sc $target $row")
    say "$sc/$target: $(awk '{printf "%s req/s, p50 %s ms, p99 %s ms, RSS %s MB, %s us/req, CPU %s%%; core %s %s%% busy (%s%% not ours), core %s %s%% busy (%s%% not ours)", $3,$4,$5,$6,$7,$8, L,$10,$12, P,$11,$13}' \
        L="$LOAD_CPU" P="$PROXY_CPU" <<<"$sc $target $row")"
    if ((ap)); then
        say "$sc/$target: Redis commands per request: $cmd_tot (scripts $cmd_scr): ${CMD_TOP["$sc $target"]}"
    fi
}

# Usage must be exact: one request counted per 2xx answer, with its tokens. wrk counts
# only the answers it read; when it stops, up to one request per connection may have been
# answered by the proxy but not read, so usage may exceed wrk's count by at most CONNS.
# The mock's log of what it answered api-proxy is the exact reference. Sets SERVED.
check_usage() {
    local sc=$1 target=${2:-api-proxy} u1_req u1_in u1_out m1 exp_in exp_out
    read -r u1_req u1_in u1_out <<<"$(usage_settled)"
    local -a pids
    read -r -a pids <<<"$TARGET_PIDS"
    ensure_alive "after the $sc run" "${pids[@]}"
    [[ -n ${u1_out:-} ]] || die "cannot read GET /admin/usage"
    m1=$(mock_served)
    local counted=$((u1_req - U0_REQ)) served=$((m1 - M0)) tin=$((u1_in - U0_IN)) tout=$((u1_out - U0_OUT))
    SERVED=$served
    read -r exp_in exp_out <"$TMP/fixtures/expected-usage"
    local note="usage: $counted requests counted ($tin in / $tout out tokens); wrk completed $W_requests; mock answered $served for $target"
    say "$sc/$target $note"
    USAGE_NOTES+=("$sc/$target: $note")
    if ((counted < W_requests || counted > W_requests + CONNS)); then
        fail "$sc/$target: usage counted $counted requests, wrk completed $W_requests (allowed: up to $CONNS more, in flight when wrk stopped)"
    fi
    if ((counted != served)); then
        fail "$sc/$target: usage counted $counted requests but the mock answered $served"
    fi
    if ((tin != counted * exp_in || tout != counted * exp_out)); then
        fail "$sc/$target: tokens $tin/$tout, expected $((counted * exp_in))/$((counted * exp_out)) for $counted answers"
    fi
    local bad
    bad=$(mock_unserved)
    ((bad == 0)) || say "$sc/$target: note: the mock logged $bad incomplete/non-200 answers to api-proxy so far"
}

# check_fallback SCENARIO TARGET URL...: after a run with fallback on, the decision was
# real and took the requested tier: fresh quota data all along (the poller kept polling,
# and the replicas still see it fresh), and no request switched tier (metrics).
check_fallback() {
    local sc=$1 target=$2 url why switched
    shift 2
    for url in "$@"; do
        why=$(fallback_state "$url") || fail "$sc/$target: after the run, $url/admin/fallback: $why"
        switched=$(curl -fsS --max-time 5 "$url/metrics" |
            awk '/^ap_fallback_switches_total/ { n += $NF } END { print n + 0 }') ||
            switched="?"
        [[ $switched == 0 ]] || fail "$sc/$target: $switched requests switched tier on $url (ap_fallback_switches_total)"
    done
    if [[ -n ${POLLS_DELTA:-} ]]; then
        local want
        want=$(awk -v us="$W_duration_us" -v iv="$POLL_INTERVAL" 'BEGIN { w = int(us / 1e6 / iv) - 1; print (w < 1 ? 1 : w) }')
        ((POLLS_DELTA >= want)) ||
            fail "$sc/$target: the poller polled $POLLS_DELTA times during the run, expected at least $want"
        FALLBACK_NOTES+=("$sc/$target: poller polled /health $POLLS_DELTA times during the run; quota data fresh before and after; no tier switch")
    fi
}

# check_policy SCENARIO TARGET URL: after a run with a policy on the key, every request was
# admitted by Redis (ap_policy_admissions_total{result="checked"} at least the requests the
# mock served) and none was refused or admitted unchecked.
check_policy() {
    local sc=$1 target=$2 url=$3 m checked refused unchecked
    m=$(curl -fsS --max-time 5 "$url/metrics") || { fail "$sc/$target: GET /metrics failed"; return; }
    checked=$(awk '/^ap_policy_admissions_total\{result="checked"\}/ { print $NF + 0 }' <<<"$m")
    unchecked=$(awk '/^ap_policy_admissions_total\{result="unchecked"\}/ { n += $NF } END { print n + 0 }' <<<"$m")
    refused=$(awk '/^ap_policy_refused_total/ { n += $NF } END { print n + 0 }' <<<"$m")
    ((${checked:-0} >= ${SERVED:-0})) ||
        fail "$sc/$target: only ${checked:-0} admissions checked by Redis for ${SERVED:-0} requests served"
    ((refused == 0 && unchecked == 0)) || fail "$sc/$target: $refused refused, $unchecked admitted unchecked"
    POLICY_NOTES+=("$sc/$target: ${checked:-0} admissions checked by Redis (every request), none refused")
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
    printf '  api-proxy+fallback: three-tier chain on, poller every %ss on the mock'"'"'s /health (same core, not in the figures);\n' "$POLL_INTERVAL"
    printf '  api-proxy+policy: the key has rpm, tpm and a daily token budget (never reached): one admission per request in Redis\n'
    printf '  api-proxy+convert: OpenAI client (POST /v1/chat/completions) converted to the mock'"'"'s Anthropic /v1/messages and back\n'
    printf '  (x) = api-proxy / nginx.  CPU %% = target CPU time / wall time.  busy: cores %s/%s busy %%;\n' "$LOAD_CPU" "$PROXY_CPU"
    printf '  other: the part of that not used by wrk, the mock or the target (other programs, kernel).\n\n'
    printf '%s\n' "${RESULTS[@]}" | awk -v scen="$SCENARIOS" -v lc="$LOAD_CPU" -v pc="$PROXY_CPU" \
        -v budget="$FALLBACK_BUDGET_PCT" -v iv="$POLL_INTERVAL" '
        { row[$1, $2] = $0; for (i = 1; i <= NF; i++) f[$1, $2, i] = $i }
        function cell(sc, t, i, prec,   v, s, r) {
            v = f[sc, t, i]; s = sprintf("%." prec "f", v)
            r = f[sc, "nginx", i]
            if (t ~ /^api-proxy/ && ((sc, "nginx") in row) && r + 0 > 0) s = s sprintf(" (%.2fx)", v / r)
            return s }
        # t against plain api-proxy (pass-through), same scenario.
        function vs(sc, t, label,   b, r, c, ok_r, ok_c) {
            b = "api-proxy"
            if (!((sc, t) in row) || !((sc, b) in row) || f[sc, b, 3] + 0 == 0) return
            r = f[sc, t, 3] / f[sc, b, 3]
            c = (f[sc, b, 7] > 0 ? f[sc, t, 7] / f[sc, b, 7] : 0)
            printf "         %s vs pass-through: %.2fx req/s, p50 %+.2f ms, p99 %+.2f ms, %+.1f us CPU/request (%.2fx",
                label, r, f[sc, t, 4] - f[sc, b, 4], f[sc, t, 5] - f[sc, b, 5], f[sc, t, 7] - f[sc, b, 7], c
            if (f[sc, t, 14] != "-" && f[sc, b, 14] != "-")
                printf "; of it redis-server %+.1f us", f[sc, t, 14] - f[sc, b, 14]
            printf ")\n"
            if (t == "api-proxy+fallback") {
                ok_r = (r >= 1 - budget / 100); ok_c = (c <= 1 + budget / 100)
                printf "           issue 4 budget (within %d%% of pass-through): req/s %s, CPU/request %s",
                    budget, ok_r ? "within" : "OVER", ok_c ? "within" : "OVER"
                if (f[sc, b, 8] < 90 && f[sc, t, 8] < 90)
                    printf " (neither run kept its core busy, CPU %s%%/%s%%: req/s is set by latency, CPU/request is the measure)", f[sc, b, 8], f[sc, t, 8]
                printf "\n"
                if (f[sc, t, 16] != "-")
                    printf "           the poller beside it (1 poll per %ss, not included above): %s us/request\n", iv, f[sc, t, 16]
                if (!ok_r || !ok_c) over[++no] = sc
            }
        }
        END {
            fmt = "%-8s %-18s %15s %14s %14s %13s %15s %5s %9s %7s %7s\n"
            printf fmt, "scenario", "target", "req/s", "p50 ms", "p99 ms", "peak RSS MB", "CPU us/req", "CPU %", "requests", "busy", "other"
            printf fmt, "--------", "------", "-----", "------", "------", "-----------", "----------", "-----", "--------", "----", "-----"
            n = split(scen, scs, " "); noisy = 0
            nt = split("mock nginx api-proxy api-proxy+fallback api-proxy+policy api-proxy+convert", ts, " ")
            for (k = 1; k <= n; k++) {
                sc = scs[k]
                for (j = 1; j <= nt; j++) {
                    t = ts[j]
                    if (!((sc, t) in row)) continue
                    printf fmt, sc, t, cell(sc, t, 3, 0), cell(sc, t, 4, 2), cell(sc, t, 5, 2),
                        cell(sc, t, 6, 1), cell(sc, t, 7, 1), f[sc, t, 8], f[sc, t, 9],
                        f[sc, t, 10] "/" f[sc, t, 11], f[sc, t, 12] "/" f[sc, t, 13]
                    o = (f[sc, t, 12] > f[sc, t, 13] ? f[sc, t, 12] : f[sc, t, 13])
                    if (o > noisy) { noisy = o; noisy_at = sc "/" t }
                    if (t != "mock" && f[sc, t, 10] >= 95 && f[sc, t, 8] < 90)
                        bound[++nb] = sprintf("%s/%s: core %s was %s%% busy (wrk + mock, and %s%% other work) while the target used %s%%: its req/s is capped by the load side, not by the target", sc, t, lc, f[sc, t, 10], f[sc, t, 12], f[sc, t, 8])
                    if (t ~ /^api-proxy/ && f[sc, t, 8] < 50 && f[sc, t, 10] < 50)
                        idle[++ni] = sprintf("%s/%s: neither core was busy (%s%%/%s%%) yet only %s req/s: each request waits (p50 %s ms) on something other than CPU", sc, t, f[sc, t, 10], f[sc, t, 11], f[sc, t, 3], f[sc, t, 4])
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
                vs(sc, "api-proxy+fallback", "fallback")
                vs(sc, "api-proxy+policy", "policy")
                vs(sc, "api-proxy+convert", "convert")
                s = ""
                for (j = 3; j <= nt; j++) {
                    t = ts[j]
                    if (((sc, t) in row) && f[sc, t, 18] != "-")
                        s = s (s == "" ? "" : ", ") sprintf("%s %s [%s]", t, f[sc, t, 18], f[sc, t, 19])
                }
                if (s != "") printf "         Redis commands per request (INFO commandstats, [of which EVAL/EVALSHA]): %s\n", s
            }
            printf "\n"
            for (i = 1; i <= nb; i++) printf "  note: %s\n", bound[i]
            for (i = 1; i <= ni; i++) printf "  note: %s\n", idle[i]
            if (noisy > 10)
                printf "  WARNING: up to %s%% of a core went to other work during %s (see \"other\"): figures are noisy; rerun on a quiet machine\n", noisy, noisy_at
            if (no) {
                s = ""; for (i = 1; i <= no; i++) s = s (i > 1 ? ", " : "") over[i]
                printf "  note: fallback on is over the %d%% budget of issue 4 in: %s (one run each: rerun to tell noise from cost)\n", budget, s
            }
        }'
    local n
    for n in "${USAGE_NOTES[@]}"; do printf '  %s\n' "$n"; done
    for n in "${FALLBACK_NOTES[@]}"; do printf '  %s\n' "$n"; done
    for n in "${POLICY_NOTES[@]}"; do printf '  %s\n' "$n"; done
    local k
    for k in "${!CMD_TOP[@]}"; do printf '  Redis commands per request, %s: %s\n' "${k/ //}" "${CMD_TOP[$k]}"; done | sort
    printf '  (Redis 7 counts the commands a Lua script runs in INFO commandstats too, beside the EVAL/EVALSHA itself.)\n'
    printf '  mock rows: the mock (nginx answering from memory) loaded directly; RSS and CPU are its own.\n'
    print_conv
}

# The conversion micro-benchmark, pinned to the target's core once every target has
# stopped; its output goes in the report with the matching end-to-end figures beside it.
run_conv() {
    CONV_OUT=""
    [[ $RUN_CONV == 1 && -x $CONV_BIN ]] || return 0
    say "conversion micro-benchmark: $CONV_BIN on core $PROXY_CPU"
    if ! taskset -c "$PROXY_CPU" "$CONV_BIN" >"$TMP/bench_conv.txt" 2>&1; then
        fail "$CONV_BIN failed: $(tail -n 3 "$TMP/bench_conv.txt")"
        return 0
    fi
    CONV_OUT=$TMP/bench_conv.txt
}

print_conv() {
    [[ -n ${CONV_OUT:-} ]] || return 0
    printf '\nconversion (issue 3): %s pinned to core %s (the conversion code alone, one core, CPU time)\n' \
        "${CONV_BIN#"$ROOT"/}" "$PROXY_CPU"
    sed 's/^/  /' "$CONV_OUT"
    local sse_bytes
    sse_bytes=$(wc -c <"$TMP/fixtures/resp-stream.sse")
    {
        cat "$CONV_OUT"
        printf '%s\n' "${RESULTS[@]}" | sed 's/^/ROW /'
    } | awk -v sse="$sse_bytes" '
        /^ROW / { f[$2, $3] = $8; next }
        /Anthropic -> Anthropic/ { aa = $NF } /OpenAI -> OpenAI/ { oo = $NF }
        /Anthropic -> OpenAI/ { ao = $NF } /OpenAI -> Anthropic/ { oa = $NF }
        /request of .*KB:/ {
            line = $0
            if (match(line, /request of [0-9.]+ KB/)) kb = substr(line, RSTART + 11, RLENGTH - 14)
            if (match(line, /validate\) [0-9.]+ us/)) rp = substr(line, RSTART + 10, RLENGTH - 13)
            if (match(line, /print\) [0-9.]+ us/)) rc = substr(line, RSTART + 7, RLENGTH - 10)
            if (match(line, /overhead [0-9.-]+ us/)) ro = substr(line, RSTART + 9, RLENGTH - 12)
        }
        END {
            print "  beside the pass-through figures:"
            if (ao != "" && aa + 0 > 0)
                printf "    stream, conversion code alone: Anthropic -> OpenAI %s MB/s of SSE in per core vs %s MB/s pass-through (%.1fx the CPU per byte); OpenAI -> Anthropic %s vs %s\n", ao, aa, aa / ao, oa, oo
            p = f["stream", "api-proxy"]; c = f["stream", "api-proxy+convert"]
            if (p + 0 > 0 && c + 0 > 0)
                printf "    stream, end to end (api-proxy + its redis, per core, %d B of SSE per answer): pass-through %.1f MB/s of SSE in, converted %.1f MB/s (%+.1f us CPU/request)\n", sse, sse / p, sse / c, c - p
            if (rc != "")
                printf "    %s KB request, conversion code alone (Anthropic -> OpenAI): parse %s us -> parse + convert + print %s us (overhead %s us as bench_conv counts it)\n", kb, rp, rc, ro
            p = f["large", "api-proxy"]; c = f["large", "api-proxy+convert"]
            if (p + 0 > 0 && c + 0 > 0)
                printf "    ~200 KB request, end to end (OpenAI client -> Anthropic upstream, answer converted back): api-proxy+convert %.1f us CPU/request vs pass-through %.1f: %+.1f us per converted request\n", c, p, c - p
            if (rc != "") {
                print "    notes: the end-to-end stream converts Anthropic -> OpenAI, the path of bench_conv'"'"'s \"Anthropic -> OpenAI\" line;"
                print "    the end-to-end request converts OpenAI -> Anthropic, bench_conv'"'"'s request line Anthropic -> OpenAI (another code path)."
                print "    bench_conv'"'"'s request baseline (\"pass-through\") builds a full cJSON tree, but api-proxy'"'"'s pass-through path only"
                print "    scans the body (relay_check_body, no tree), so converting costs more than that \"overhead\" over the real pass-through."
            }
        }'
}

# ------------------------------------------------------------------------------------------
# fleet mode
# ------------------------------------------------------------------------------------------

# probe_script_stats PORT: whether this redis-server counts the commands a Lua script runs
# in INFO commandstats (Redis 7 does): one HINCRBY from a script on a throwaway key in db
# 15 (the product uses db 0), before any measurement. Sets SCRIPT_CALLS_COUNTED.
probe_script_stats() {
    local port=$1 before after
    cmdstats "$port" "$TMP/probe-0"
    redis-cli -h 127.0.0.1 -p "$port" -n 15 eval "redis.call('hincrby', KEYS[1], 'n', 1) return 1" 1 bench:probe >/dev/null
    redis-cli -h 127.0.0.1 -p "$port" -n 15 del bench:probe >/dev/null
    cmdstats "$port" "$TMP/probe-1"
    before=$(awk '$1 == "hincrby" { print $2 }' "$TMP/probe-0")
    after=$(awk '$1 == "hincrby" { print $2 }' "$TMP/probe-1")
    if ((${after:-0} > ${before:-0})); then SCRIPT_CALLS_COUNTED=yes; else SCRIPT_CALLS_COUNTED=no; fi
}

# write_haproxy_cfg OUT N LB_PORT STATS_PORT PORT...: the local fleet's own HAProxy config
# (tests/cluster/haproxy.cfg.in, read only) with our ports and only N servers.
write_haproxy_cfg() {
    local out=$1 n=$2 lbp=$3 stp=$4
    shift 4
    local -a p=("$@")
    sed -e "s|@BIND@|127.0.0.1|g" -e "s|@LB_PORT@|$lbp|g" -e "s|@LB_STATS_PORT@|$stp|g" \
        -e "s|@PROXY1_PORT@|${p[0]:-1}|g" -e "s|@PROXY2_PORT@|${p[1]:-1}|g" -e "s|@PROXY3_PORT@|${p[2]:-1}|g" \
        "$ROOT/tests/cluster/haproxy.cfg.in" |
        awk -v n="$n" '$1 == "server" && $2 ~ /^proxy[0-9]+$/ && substr($2, 6) + 0 > n { next } { print }' >"$out"
    local servers
    servers=$(grep -c '^[[:space:]]*server proxy' "$out" || true)
    ((servers == n)) || die "$out has $servers replica servers, expected $n (tests/cluster/haproxy.cfg.in changed?)"
    local left
    left=$(grep -v '^[[:space:]]*#' "$out" | grep -o '@[A-Z0-9_]*@' | sort -u | tr '\n' ' ' || true)
    [[ -z $left ]] || die "$out: placeholders left: $left"
    local out_c
    out_c=$("$HAPROXY" -c -q -f "$out" 2>&1) || die "haproxy rejected $out: $out_c"
}

lb_all_up() { # STATS_URL N
    curl -fsS --max-time 2 "$1/stats;csv" |
        awk -F, -v n="$2" '$1 == "replicas" && $2 ~ /^proxy/ && $18 == "UP" { c++ } END { exit !(c == n) }'
}

# start_fleet SCENARIO N DIRECT: redis-server, the poller (fallback on), N replicas and
# (unless DIRECT) HAProxy in front of them, all on FLEET_CPUS. Sets TARGET_*, ADMIN_URL,
# REPLICA_URLS, REDIS_PID/PORT, LB_PIDS, AUX_PIDS, FLEET_PIDS (start order).
start_fleet() {
    local sc=$1 n=$2 direct=$3 label=$2 i
    ((direct)) && label=direct
    local base=fleet-$sc-$label dir=$TMP/fleet-$sc-$label
    mkdir -p "$dir"
    FLEET_PIDS=()
    start_redis "$base-redis" "$FLEET_CPUS"
    FLEET_PIDS+=("$REDIS_PID")
    [[ -n ${SCRIPT_CALLS_COUNTED:-} ]] || probe_script_stats "$REDIS_PORT"
    AUX_PIDS="" POLLER_URL="" LB_PIDS=""
    if [[ $FLEET_FALLBACK == 1 ]]; then
        write_chain "$dir/fallback.json"
        start_poller "$base-poller" "$FLEET_CPUS" "$dir/fallback.json"
        AUX_PIDS=$POLLER_PID
        FLEET_PIDS+=("$POLLER_PID")
    else
        printf '{"enabled": false, "tiers": []}\n' >"$dir/fallback.json"
    fi
    ADMIN_KEY=sk-bench-admin-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    REPLICA_URLS=() REPLICA_PIDS=()
    local -a ports=()
    for ((i = 1; i <= n; i++)); do
        ports+=("$(free_port)")
        start_proc "$base-proxy$i" "$FLEET_CPUS" env -u UPSTREAM_API_KEY -u KEYS_FILE -u POLL_INTERVAL_SECONDS \
            INSTANCE_ID="proxy$i" PROXY_BIND=127.0.0.1 PROXY_PORT="${ports[i - 1]}" \
            UPSTREAM_URL="$MOCK_AP_URL" UPSTREAM_FORMAT=anthropic REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" \
            ADMIN_KEY="$ADMIN_KEY" FALLBACK_CONFIG="$dir/fallback.json" USAGE_TZ=+00:00 \
            LOG_LEVEL="$PROXY_LOG_LEVEL" "$PROXY_BIN"
        REPLICA_PIDS+=("$LAST_PID")
        FLEET_PIDS+=("$LAST_PID")
        REPLICA_URLS+=("http://127.0.0.1:${ports[i - 1]}")
    done
    for ((i = 1; i <= n; i++)); do
        wait_for "replica $i /health" 10 "${REPLICA_PIDS[i - 1]}" "$base-proxy$i" http_ok "${REPLICA_URLS[i - 1]}/health"
    done
    ADMIN_URL=${REPLICA_URLS[0]}
    TARGET_URL=$ADMIN_URL
    if ((!direct)); then
        local lbp stp
        lbp=$(free_port)
        stp=$(free_port)
        write_haproxy_cfg "$dir/haproxy.cfg" "$n" "$lbp" "$stp" "${ports[@]}"
        start_proc "$base-haproxy" "$FLEET_CPUS" "$HAPROXY" -f "$dir/haproxy.cfg" -db
        LB_PIDS=$LAST_PID
        FLEET_PIDS+=("$LAST_PID")
        TARGET_URL=http://127.0.0.1:$lbp
        wait_for "HAProxy to see the $n replica(s) UP" 15 "$LB_PIDS" "$base-haproxy" lb_all_up "http://127.0.0.1:$stp/stats" "$n"
    fi
    local doc
    doc=$(curl -sS --max-time 5 -H "x-api-key: $ADMIN_KEY" -H 'Content-Type: application/json' \
        --data '{"name":"bench"}' "$ADMIN_URL/admin/keys") || die "POST /admin/keys failed"
    TARGET_KEY=$(json_field api_key <<<"$doc") || die "POST /admin/keys answered: $doc"
    if [[ $FLEET_FALLBACK == 1 ]]; then
        for ((i = 1; i <= n; i++)); do
            wait_for "replica $i to have the poller's quota data" 20 "${REPLICA_PIDS[i - 1]}" "$base-proxy$i" \
                fallback_ready "${REPLICA_URLS[i - 1]}"
        done
    fi
    TARGET_PIDS="${REPLICA_PIDS[*]} $LB_PIDS $REDIS_PID"
    TARGET_PIDS=${TARGET_PIDS//  / }
}

# stop_fleet TARGET: everything in reverse start order (HAProxy, replicas, poller, redis);
# replicas and the poller must exit 0 on SIGTERM.
stop_fleet() {
    local i pid name
    for ((i = ${#FLEET_PIDS[@]} - 1; i >= 0; i--)); do
        pid=${FLEET_PIDS[i]}
        name=$(proc_name "$pid")
        stop_proc "$pid"
        if [[ $name == *-proxy* || $name == *-poller ]] && ((STOP_RC != 0)); then
            fail "$1: $name exited with status $STOP_RC on SIGTERM (log: $TMP/$name.log)"
        fi
    done
    FLEET_PIDS=()
    AUX_PIDS="" POLLER_URL="" LB_PIDS=""
}

# fleet_idle KEY: Redis commands per second with no load (PINGs, quota refreshes, the
# poller's lease and publications, HAProxy's /health checks do not touch Redis), over
# FLEET_IDLE seconds; they run during the measured run too and are in its totals.
fleet_idle() {
    cmdstats "$REDIS_PORT" "$TMP/idle-0"
    sleep "$FLEET_IDLE"
    cmdstats "$REDIS_PORT" "$TMP/idle-1"
    local dl
    dl=$(cmd_delta "$TMP/idle-0" "$TMP/idle-1" "$FLEET_IDLE")
    IDLE_RATE["$1"]=$(head -n 1 <<<"$dl" | awk '{ printf "%.1f", $1 }')
    IDLE_TOP["$1"]=$(tail -n 1 <<<"$dl" | sed -E 's/([0-9]+\.[0-9])[0-9]+/\1/g')
}

fleet_label() { [[ ${1#fleet:} == direct ]] && echo "1 (no LB)" || echo "${1#fleet:}"; }

print_fleet_report() {
    printf '\n'
    printf 'api-proxy fleet benchmark  %s\n' "$(date -u '+%Y-%m-%d %H:%M:%SZ')"
    printf '  wrk -t%s -c%s -d%s (warm-up %s) through HAProxy; wrk + mock pinned to core %s; HAProxy, redis-server,%s and\n' \
        "$THREADS" "$CONNS" "$DURATION" "$WARMUP" "$LOAD_CPU" "$([[ $FLEET_FALLBACK == 1 ]] && echo ' the poller')"
    printf '  every replica share core(s) %s: a %s-core machine cannot give replicas cores of their own, so more\n' \
        "$FLEET_CPUS" "$(nproc)"
    printf '  replicas add no CPU here; the rows show what the fleet costs per request as it grows, not how it scales\n'
    printf '  %s; %s; %s; %s; kernel %s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
        "$("$HAPROXY" -v 2>&1 | awk 'NR == 1 {print "HAProxy " $3}')" \
        "$(redis-server --version | awk '{print $1" "$2" "$3}')" "$(proxy_version)" "$(uname -r)"
    printf '  HAProxy config: tests/cluster/haproxy.cfg.in (round robin, /health checks every 500 ms,\n'
    printf '  kept-alive connections to the replicas)\n'
    printf '  replicas: LOG_LEVEL=%s, usage accounting on, real key, fallback %s\n' \
        "$PROXY_LOG_LEVEL" "$([[ $FLEET_FALLBACK == 1 ]] && echo "on (three-tier chain, one poller every ${POLL_INTERVAL}s)" || echo off)"
    printf '  CPU us/req: all replicas + redis-server + HAProxy (then split); the poller apart. Redis cmds/req: INFO\n'
    printf '  commandstats calls after - before the run / requests the mock answered; scripts = EVAL/EVALSHA calls.\n'
    printf '  TCP conn/req: connections opened on the machine during the run (/proc/net/snmp ActiveOpens) per request.\n'
    if [[ ${SCRIPT_CALLS_COUNTED:-} == yes ]]; then
        printf '  This Redis counts the commands a Lua script runs in commandstats (checked): a usage script'"'"'s HINCRBYs\n'
        printf '  etc. are in the total one by one, beside the one EVAL/EVALSHA (one round trip) that ran them.\n'
    elif [[ ${SCRIPT_CALLS_COUNTED:-} == no ]]; then
        printf '  This Redis does not count commands run inside Lua scripts in commandstats (checked): the total\n'
        printf '  counts each EVAL/EVALSHA once, whatever it does.\n'
    fi
    local sc
    for sc in $FLEET_SCENARIOS; do
        printf '\nscenario %s\n' "$sc"
        printf '%s\n' "${RESULTS[@]}" | awk -v sc="$sc" '$1 == sc' | awk -v reps="$FLEET_ORDER" '
            { t = $2; row[t] = 1; for (i = 1; i <= NF; i++) f[t, i] = $i }
            END {
                fmt = "%-10s %8s %8s %8s %8s %10s %9s %7s %8s %7s %9s %8s %8s %10s %6s\n"
                printf fmt, "replicas", "req/s", "p50 ms", "p99 ms", "RSS MB", "CPU us/req", "replicas", "redis", "haproxy", "poller", "Redis cmd", "scripts", "TCP conn", "busy c0/c1", "other"
                printf fmt, "", "", "", "", "", "(total)", "us/req", "us/req", "us/req", "us/req", "/req", "/req", "/req", "%", "%"
                n = split(reps, r, " ")
                for (k = 1; k <= n; k++) {
                    t = r[k]; if (!(t in row)) continue
                    lb = (f[t, 17] == "-" ? 0 : f[t, 17]); rd = (f[t, 14] == "-" ? 0 : f[t, 14])
                    label = t; sub(/^fleet:/, "", label); if (label == "direct") label = "1 (no LB)"
                    printf fmt, label, f[t, 3], sprintf("%.2f", f[t, 4]), sprintf("%.2f", f[t, 5]), f[t, 6], f[t, 7],
                        sprintf("%.1f", f[t, 7] - rd - lb), f[t, 14], f[t, 17], f[t, 16], f[t, 18], f[t, 19],
                        f[t, 22], f[t, 10] "/" f[t, 11], f[t, 20]
                }
            }'
        printf '%s\n' "${RESULTS[@]}" | awk -v sc="$sc" '$1 == sc && $8 < 50 && $10 < 50 && $11 < 50 {
            label = $2; sub(/^fleet:/, "", label); if (label == "direct") label = "1 (no LB)"
            printf "  note: %s: no core was busy (%s%%/%s%%) yet only %s req/s: each request waits (p50 %.2f ms) on something other than CPU\n", label, $10, $11, $3, $4 }'
        local t
        printf '  top Redis commands per proxied request (and with no load, commands/s):\n'
        for t in $FLEET_ORDER; do
            [[ -n ${CMD_TOP["$sc $t"]+x} ]] || continue
            printf '    %-10s %s\n' "$(fleet_label "$t")" "${CMD_TOP["$sc $t"]}"
            printf '    %-10s idle: %s commands/s (%s)\n' "" "${IDLE_RATE["$sc $t"]:-?}" "${IDLE_TOP["$sc $t"]:-?}"
        done
    done
    printf '\n'
    local n
    for n in "${USAGE_NOTES[@]}"; do printf '  %s\n' "$n"; done
    for n in "${FALLBACK_NOTES[@]}"; do printf '  %s\n' "$n"; done
    for n in "${POLICY_NOTES[@]}"; do printf '  %s\n' "$n"; done
}

fleet_main() {
    local sc n t direct
    FLEET_ORDER=""
    [[ $FLEET_DIRECT == 1 ]] && FLEET_ORDER="fleet:direct"
    for n in $FLEET_REPLICAS; do FLEET_ORDER="$FLEET_ORDER fleet:$n"; done
    start_mock
    say "mock upstream (nginx) on $MOCK_URL, pid $MOCK_PID"
    for sc in $FLEET_SCENARIOS; do
        for t in $FLEET_ORDER; do
            n=${t#fleet:} direct=0
            [[ $n == direct ]] && n=1 direct=1
            say "== fleet: scenario $sc, $(fleet_label "$t") replica(s)"
            start_fleet "$sc" "$n" "$direct"
            target_env "$sc" "$t"
            fleet_idle "$sc $t"
            if check_answer "$sc" "$t"; then
                measure "$sc" "$t"
                [[ $FLEET_FALLBACK == 1 ]] && check_fallback "$sc" "$t" "${REPLICA_URLS[@]}"
            fi
            stop_fleet "$sc/$t"
        done
    done
    print_fleet_report
}

# ------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------

in_list() { # WORD LIST...
    local w=$1 x
    shift
    for x in "$@"; do [[ $x == "$w" ]] && return 0; done
    return 1
}

# run_api_proxy SCENARIO VARIANT: start, check one answer, measure, stop.
run_api_proxy() {
    local sc=$1 variant=$2
    start_api_proxy "$variant" "$sc"
    target_env "$sc" "$variant"
    if check_answer "$sc" "$variant"; then
        measure "$sc" "$variant"
        [[ $variant == api-proxy+fallback ]] && check_fallback "$sc" "$variant" "$TARGET_URL"
        [[ $variant == api-proxy+policy ]] && check_policy "$sc" "$variant" "$TARGET_URL"
    fi
    stop_proc "$TARGET_PID"
    ((STOP_RC == 0)) || fail "$sc/$variant: exited with status $STOP_RC on SIGTERM (log: $TMP/$variant-$sc.log)"
    if [[ -n $AUX_PIDS ]]; then
        stop_proc "$AUX_PIDS"
        ((STOP_RC == 0)) || fail "$sc/$variant: the poller exited with status $STOP_RC on SIGTERM (log: $TMP/poller-$variant-$sc.log)"
    fi
    stop_proc "$REDIS_PID"
    AUX_PIDS="" POLLER_URL=""
}

main() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    case ${1:-${BENCH_MODE:-default}} in
    default) MODE=default ;;
    fleet) MODE=fleet ;;
    -h | --help | help)
        sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown mode '${1:-$BENCH_MODE}' (scripts/bench.sh [default|fleet])" ;;
    esac
    [[ $CONNS =~ ^[0-9]+$ && $THREADS =~ ^[0-9]+$ ]] || die "BENCH_CONNECTIONS and BENCH_THREADS must be numbers"
    ((CONNS >= THREADS)) || die "BENCH_CONNECTIONS ($CONNS) must be at least BENCH_THREADS ($THREADS)"
    [[ $POLL_INTERVAL =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_POLL_INTERVAL must be a number of seconds"
    local sc n
    for sc in $SCENARIOS $FALLBACK_SCENARIOS $CONVERT_SCENARIOS $POLICY_SCENARIOS; do scenario_env "$sc"; done
    if [[ $MODE == fleet ]]; then
        for sc in $FLEET_SCENARIOS; do scenario_env "$sc"; done
        for n in $FLEET_REPLICAS; do
            [[ $n =~ ^[123]$ ]] || die "BENCH_FLEET_REPLICAS takes 1, 2 or 3 (the fleet's HAProxy config has three servers)"
        done
        [[ $FLEET_IDLE =~ ^[0-9]+$ && $FLEET_IDLE -ge 1 ]] || die "BENCH_FLEET_IDLE must be a whole number of seconds (>= 1)"
    fi

    ensure_tools
    build_proxy
    build_conv
    CLK_TCK=$(getconf CLK_TCK)
    TMP=$(mktemp -d /tmp/ap-bench.XXXXXX)
    python3 "$HERE/fixtures.py" "$TMP/fixtures" || die "generating fixtures failed"
    MODEL=$(cat "$TMP/fixtures/model.txt")
    RESULTS=()
    USAGE_NOTES=()
    FALLBACK_NOTES=()
    POLICY_NOTES=()
    declare -gA CMD_TOP=() IDLE_RATE=() IDLE_TOP=()
    AUX_PIDS="" LB_PIDS="" POLLER_URL="" ADMIN_URL="" REDIS_PORT=""

    if [[ $MODE == fleet ]]; then
        fleet_main
    else
        start_mock
        say "mock upstream (nginx) on $MOCK_URL, pid $MOCK_PID"
        for sc in $SCENARIOS; do
            scenario_env "$sc"
            say "== scenario $sc ($(wc -c <"$BODY_FILE") B request$( ((STREAM)) && echo ', streamed answer'))"

            TARGET_URL=$MOCK_URL TARGET_KEY=$FAKE_KEY TARGET_PIDS=$(pids_of "$MOCK_PID")
            target_env "$sc" mock
            check_answer "$sc" mock && measure "$sc" mock

            start_nginx_proxy "$sc"
            target_env "$sc" nginx
            check_answer "$sc" nginx && measure "$sc" nginx
            stop_proc "$TARGET_PID"

            run_api_proxy "$sc" api-proxy
            # shellcheck disable=SC2086
            if in_list "$sc" $FALLBACK_SCENARIOS; then run_api_proxy "$sc" api-proxy+fallback; fi
            # shellcheck disable=SC2086
            if in_list "$sc" $POLICY_SCENARIOS; then run_api_proxy "$sc" api-proxy+policy; fi
            # shellcheck disable=SC2086
            if in_list "$sc" $CONVERT_SCENARIOS; then run_api_proxy "$sc" api-proxy+convert; fi
        done
        run_conv
        print_report
    fi
    if ((${#FAILURES[@]})); then
        printf '\nFAILED checks:\n' >&2
        printf '  - %s\n' "${FAILURES[@]}" >&2
        exit 1
    fi
    printf '\nall checks passed\n'
}

main "$@"
