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
#              fallback off (pass-through; UPSTREAM_FORMAT is the scenario's: anthropic, or
#              openai for the OpenAI scenarios, so those are same-format pass-through too)
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
# and six scenarios (the rows of issue 11), with wrk's BENCH_CONNECTIONS connections (16)
# unless said otherwise:
#   small      POST /v1/messages, ~300 B request, JSON answer
#   large      the same with a ~200 KB request (a long conversation)
#   stream     ~300 B request with "stream": true, SSE answer of 50 content_block_delta events
#   stream1    the same stream with one connection
#   openai     POST /v1/chat/completions (an OpenAI client), ~300 B request; the mock answers
#              in the OpenAI format (chat.completion with usage)
#   openai-stream  the same with "stream": true and stream_options.include_usage: the mock
#              streams 50 content chunks, the finish chunk, the usage chunk, data: [DONE]
# (the convert variant sends the small, large and stream requests in the OpenAI format;
# the fallback and convert variants run on the Anthropic scenarios only).
#
# After the table, the issue 11 table: each row beside nginx's on the same scenario (CPU
# us/request of both, of it redis-server, the ratio, req/s, p50/p99, RSS) and a verdict
# against its targets: at most 2x nginx's CPU per request, p99 within 1 ms of nginx's at
# 16 connections (the one-connection row is judged on CPU only). Targets not met are
# reported, not failures: the exit status is about the checks.
#
# BENCH_PERF=1 adds, for api-proxy in the BENCH_PERF_SCENARIOS (small and stream), one more
# wrk run (not in the figures) with `perf record -g` on api-proxy (the cpu-clock event: no
# PMU needed), and prints the top 15 symbols by self time (perf report --no-children
# --sort symbol), so a change's effect on where the time goes can be shown before/after.
# perf comes from Debian's linux-perf (installed when missing).
#
# The concurrency row (BENCH_CONCURRENCY=1, the default): BENCH_STREAMS (10000) concurrent
# streams through one api-proxy, each trickling one SSE event a second for
# BENCH_STREAM_SECONDS (30) s, opened over BENCH_STREAM_RAMP (10) s (1,000 new streams a
# second: opening a stream costs api-proxy some 0.5 ms of CPU, so a faster ramp measures the
# opening burst more than the trickling). wrk and nginx cannot
# do this: build/trickle (tests/bench/trickle.c, libevent; built by `make bench`, not by
# the default build) is both the upstream (each delta carries the monotonic time of its
# send) and the client (which records, for every event, the delay between that send and
# its arrival). Reported: streams completed and errors, api-proxy's RSS at the peak per
# open stream (VmHWM minus the idle RSS, over the open streams; target under 64 KB), its
# CPU over the run, the event delay (p50, p99, worst; target: every event within 100 ms),
# and usage, checked exactly against the streams the upstream finished. api-proxy holds two
# descriptors per stream: the script raises the soft limit to the hard one (and the hard
# one when it may); when the hard limit is too low for BENCH_STREAMS, the row runs with as
# many streams as fit and says so in a WARNING.
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
#   BENCH_SCENARIOS    subset/order of "small large stream stream1 openai openai-stream"
#                      (default: all six)
#   BENCH_FALLBACK_SCENARIOS  scenarios that also run api-proxy+fallback (default: small
#                      large stream; empty: none)
#   BENCH_CONVERT_SCENARIOS   scenarios that also run api-proxy+convert (default: small
#                      large stream; large converts a ~200 KB request; empty: none)
#   BENCH_PERF         1: perf record api-proxy in BENCH_PERF_SCENARIOS (default 0)
#   BENCH_PERF_SCENARIOS  default "small stream"
#   BENCH_CONCURRENCY  0: skip the concurrency row (default 1)
#   BENCH_STREAMS      concurrent streams of that row (default 10000)
#   BENCH_STREAM_SECONDS  events per stream, one a second (default 30)
#   BENCH_STREAM_RAMP  seconds over which the streams are opened (default 10)
#   BENCH_TRICKLE_BIN  the load tool (default <repo>/build/trickle)
#   BENCH_POLICY_SCENARIOS    scenarios that also run api-proxy+policy (default: small
#                      large stream; empty: none)
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
SCENARIOS=${BENCH_SCENARIOS:-small large stream stream1 openai openai-stream}
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
TARGET_CPU_RATIO=2 # issue 11: at most 2x nginx's CPU per request
TARGET_P99_MS=1    # issue 11: p99 within 1 ms of nginx's at 16 connections
PERF=${BENCH_PERF:-0}
PERF_SCENARIOS=${BENCH_PERF_SCENARIOS:-small stream}
PERF_TOP_N=15
CONCURRENCY=${BENCH_CONCURRENCY:-1}
STREAMS=${BENCH_STREAMS:-10000}
STREAM_SECONDS=${BENCH_STREAM_SECONDS:-30}
STREAM_RAMP=${BENCH_STREAM_RAMP:-10}
TRICKLE_BIN=${BENCH_TRICKLE_BIN:-$ROOT/build/trickle}
FD_RESERVE=256     # descriptors api-proxy needs besides two per stream (Redis, listener, curl...)
STREAM_RSS_TARGET_KB=64
STREAM_DELAY_TARGET_MS=100
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
    if [[ $MODE == default && $PERF == 1 ]]; then
        command -v perf >/dev/null || need+=(linux-perf)
    fi
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

# The concurrency row's load tool, likewise (make build/trickle; not in the default build).
build_trickle() {
    [[ $MODE == default && $CONCURRENCY == 1 ]] || return 0
    if [[ -z ${BENCH_TRICKLE_BIN:-} ]] && { [[ ${BENCH_NO_BUILD:-0} != 1 ]] || [[ ! -x $TRICKLE_BIN ]]; }; then
        say "building build/trickle"
        make -s -C "$ROOT" build/trickle >&2 || die "building build/trickle failed (make build/trickle)"
    fi
    [[ -x $TRICKLE_BIN ]] || die "$TRICKLE_BIN not found (make build/trickle, or BENCH_CONCURRENCY=0)"
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
# it on MOCK_URL, so its polls stay out of that log. /v1/chat/completions answers the
# same reply in the OpenAI format (JSON, or the stream with its usage chunk), for the
# OpenAI scenarios; /external/v1/chat/completions, where the fallback chain's external tier
# points, is not served (404): that tier must never be used.
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
location = /v1/chat/completions {
    if (\$http_x_bench_stream) { rewrite ^ /_bench/oai-stream last; }
    rewrite ^ /_bench/oai-message last;
}
location = /_bench/oai-message {
    internal;
    default_type application/json;
    include $TMP/fixtures/mock-oai-message.inc;
}
location = /_bench/oai-stream {
    internal;
    default_type text/event-stream;
    add_header Cache-Control no-cache;
    include $TMP/fixtures/mock-oai-stream.inc;
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
# a path of the mock that answers 404 (never used while the first tier is available; the
# checks would see it if it were).
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
     "base_url": "$MOCK_AP_URL/external/v1", "api_key": "sk-bench-external", "max_tokens_limit": 8192}
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
# and a poller on the same core). UPSTREAM_FORMAT is the scenario's UP_FORMAT (openai for
# the OpenAI scenarios: an OpenAI client on an OpenAI upstream, same-format pass-through).
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
    # AP_UPSTREAM and AP_EXTRA_ENV: the concurrency row's own upstream and settings.
    start_proc "$name" "$PROXY_CPU" env -u UPSTREAM_API_KEY -u KEYS_FILE -u POLL_INTERVAL_SECONDS \
        PROXY_BIND=127.0.0.1 PROXY_PORT="$PROXY_PORT" UPSTREAM_URL="${AP_UPSTREAM:-$MOCK_AP_URL}" \
        UPSTREAM_FORMAT="$UP_FORMAT" REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" ADMIN_KEY="$ADMIN_KEY" \
        FALLBACK_CONFIG="$dir/fallback.json" USAGE_TZ=+00:00 LOG_LEVEL="$PROXY_LOG_LEVEL" \
        "${AP_EXTRA_ENV[@]}" "$PROXY_BIN"
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

# scenario_env SCENARIO: what the client sends and what the mock answers.
#   BODY_FILE, REQ_PATH, OPENAI (an OpenAI client), STREAM, EXPECT (the mock's bytes),
#   SC_CONNS (wrk connections), UP_FORMAT (what api-proxy's UPSTREAM_URL speaks: the
#   OpenAI scenarios are same-format pass-through too), CONVERT_BODY (the same request as an
#   OpenAI client sends it, for api-proxy+convert), SC_LABEL (the row in the issue 11 table).
ALL_SCENARIOS="small large stream stream1 openai openai-stream"
ANTHROPIC_SCENARIOS="small large stream stream1"
scenario_env() {
    local fx=${TMP:-/nonexistent}/fixtures
    REQ_PATH=/v1/messages OPENAI=0 CHECK=exact EXPECT_TIER="" SC_CONNS=$CONNS UP_FORMAT=anthropic
    case $1 in
    small) BODY_FILE=$fx/req-small.json STREAM=0 EXPECT=$fx/resp-message.json SC_LABEL="small JSON" ;;
    large) BODY_FILE=$fx/req-large.json STREAM=0 EXPECT=$fx/resp-message.json SC_LABEL="200 KB request" ;;
    stream) BODY_FILE=$fx/req-stream.json STREAM=1 EXPECT=$fx/resp-stream.sse SC_LABEL="SSE stream" ;;
    stream1) BODY_FILE=$fx/req-stream.json STREAM=1 EXPECT=$fx/resp-stream.sse SC_LABEL="SSE stream" SC_CONNS=1 ;;
    openai | openai-stream)
        REQ_PATH=/v1/chat/completions OPENAI=1 UP_FORMAT=openai
        if [[ $1 == openai ]]; then
            BODY_FILE=$fx/oai-small.json STREAM=0 EXPECT=$fx/resp-oai-message.json SC_LABEL="OpenAI chat"
        else
            BODY_FILE=$fx/oai-stream.json STREAM=1 EXPECT=$fx/resp-oai-stream.sse SC_LABEL="OpenAI chat stream"
        fi
        ;;
    *) die "unknown scenario '$1' (BENCH_SCENARIOS takes $ALL_SCENARIOS)" ;;
    esac
    case $1 in
    small | large) CONVERT_BODY=$fx/oai-$1.json ;;
    stream | stream1) CONVERT_BODY=$fx/oai-stream.json ;;
    *) CONVERT_BODY="" ;;
    esac
}

# target_env SCENARIO TARGET: what the client sends and how its answer is checked.
#   CHECK exact: the mock's bytes; openai: check_openai.py. EXPECT_TIER: the
#   x-api-proxy-tier the answer must carry (fallback on).
target_env() {
    scenario_env "$1"
    case $2 in
    api-proxy+convert)
        BODY_FILE=$CONVERT_BODY REQ_PATH=/v1/chat/completions OPENAI=1 CHECK=openai ;;
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
    local d=$1 sc=$2 log=$TMP/wrk-$2-$CUR_TARGET-$1.log line threads=$THREADS
    ((threads <= SC_CONNS)) || threads=$SC_CONNS
    BENCH_BODY_FILE=$BODY_FILE BENCH_KEY=$TARGET_KEY BENCH_STREAM=$STREAM BENCH_PATH=$REQ_PATH \
        BENCH_OPENAI=$OPENAI taskset -c "$LOAD_CPU" wrk -t"$threads" -c"$SC_CONNS" -d"$d" --latency \
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
#   22 TCP connections opened on the machine per request 23 wrk connections
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
        A0=$(abandoned_total)
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
    RESULTS+=("$sc $target $row $SC_CONNS")
    say "$sc/$target: $(awk '{printf "%s req/s, p50 %s ms, p99 %s ms, RSS %s MB, %s us/req, CPU %s%%; core %s %s%% busy (%s%% not ours), core %s %s%% busy (%s%% not ours)", $3,$4,$5,$6,$7,$8, L,$10,$12, P,$11,$13}' \
        L="$LOAD_CPU" P="$PROXY_CPU" <<<"$sc $target $row")"
    if ((ap)); then
        say "$sc/$target: Redis commands per request: $cmd_tot (scripts $cmd_scr): ${CMD_TOP["$sc $target"]}"
    fi
}

# abandoned_total: requests api-proxy ended because their client left before the answer
# (ap_requests_total with status 499, over every replica): it then aborts the upstream
# transfer and counts nothing, even when the upstream had already sent the whole answer.
abandoned_total() {
    local -a urls=("$ADMIN_URL")
    [[ $MODE == fleet ]] && urls=("${REPLICA_URLS[@]}")
    local u n total=0
    for u in "${urls[@]}"; do
        curl -fsS --max-time 5 -o "$TMP/metrics-499" "$u/metrics" || die "GET $u/metrics failed"
        n=$(awk '/^ap_requests_total\{/ && /status="499"/ { n += $NF } END { print n + 0 }' "$TMP/metrics-499")
        total=$((total + n))
    done
    echo "$total"
}

# Usage must be exact: one request counted per 2xx answer, with its tokens. wrk counts
# only the answers it read; when it stops, up to one request per connection may have been
# answered by the proxy but not read, so usage may exceed wrk's count by at most SC_CONNS.
# The mock's log of what it answered api-proxy is the reference: every answer it completed
# is counted, except for requests whose client (wrk, stopping) left first: api-proxy then
# aborts the transfer and counts nothing (status 499 in its metrics), even when the mock
# had already sent its whole answer. So: counted <= served <= counted + abandoned. Sets SERVED.
check_usage() {
    local sc=$1 target=${2:-api-proxy} u1_req u1_in u1_out m1 exp_in exp_out
    read -r u1_req u1_in u1_out <<<"$(usage_settled)"
    local -a pids
    read -r -a pids <<<"$TARGET_PIDS"
    ensure_alive "after the $sc run" "${pids[@]}"
    [[ -n ${u1_out:-} ]] || die "cannot read GET /admin/usage"
    m1=$(mock_served)
    local a1
    a1=$(abandoned_total)
    local counted=$((u1_req - U0_REQ)) served=$((m1 - M0)) tin=$((u1_in - U0_IN)) tout=$((u1_out - U0_OUT))
    local abandoned=$((a1 - A0))
    SERVED=$served
    read -r exp_in exp_out <"$TMP/fixtures/expected-usage"
    local note="usage: $counted requests counted ($tin in / $tout out tokens); wrk completed $W_requests; mock answered $served for $target"
    # (Spelled with if: a false test as the last command of a substitution in an assignment
    # would stop the script under set -e, silently, whenever no abandoned answer was whole.)
    if ((abandoned > 0)); then
        note="$note; $abandoned abandoned by wrk at its stop (499, not counted"
        if ((served > counted)); then
            note="$note, $((served - counted)) of them answered whole by the mock"
        fi
        note="$note)"
    fi
    say "$sc/$target $note"
    USAGE_NOTES+=("$sc/$target: $note")
    if ((counted < W_requests || counted > W_requests + SC_CONNS)); then
        fail "$sc/$target: usage counted $counted requests, wrk completed $W_requests (allowed: up to $SC_CONNS more, in flight when wrk stopped)"
    fi
    if ((counted > served)); then
        fail "$sc/$target: usage counted $counted requests but the mock answered only $served"
    elif ((served > counted + abandoned)); then
        fail "$sc/$target: the mock answered $served requests, usage counted $counted and api-proxy saw $abandoned abandoned by their client: $((served - counted - abandoned)) answers neither counted nor abandoned"
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
    printf '  wrk -t%s -c%s -d%s (warm-up %s; stream1: -c1); wrk + mock pinned to core %s, the target to core %s; kernel %s\n' \
        "$THREADS" "$CONNS" "$DURATION" "$WARMUP" "$LOAD_CPU" "$PROXY_CPU" "$(uname -r)"
    printf '  %s; nginx %s; %s; %s\n' "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
        "$("$NGINX" -v 2>&1 | sed 's/.*nginx\///')" "$(redis-server --version | awk '{print $1" "$2" "$3}')" \
        "$(proxy_version)"
    printf '  api-proxy: LOG_LEVEL=%s, usage accounting on, real key; its figures include its redis-server\n' "$PROXY_LOG_LEVEL"
    printf '  api-proxy+fallback: three-tier chain on, poller every %ss on the mock'"'"'s /health (same core, not in the figures);\n' "$POLL_INTERVAL"
    printf '  api-proxy+policy: the key has rpm, tpm and a daily token budget (never reached): one admission per request in Redis\n'
    printf '  api-proxy+convert: OpenAI client (POST /v1/chat/completions) converted to the mock'"'"'s Anthropic /v1/messages and back\n'
    printf '  openai, openai-stream: OpenAI client on an OpenAI upstream (UPSTREAM_FORMAT=openai, same-format pass-through)\n'
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
            fmt = "%-13s %-18s %15s %14s %14s %13s %15s %5s %9s %7s %7s\n"
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
    print_targets
    local n
    for n in "${USAGE_NOTES[@]}"; do printf '  %s\n' "$n"; done
    for n in "${FALLBACK_NOTES[@]}"; do printf '  %s\n' "$n"; done
    for n in "${POLICY_NOTES[@]}"; do printf '  %s\n' "$n"; done
    local k
    for k in "${!CMD_TOP[@]}"; do printf '  Redis commands per request, %s: %s\n' "${k/ //}" "${CMD_TOP[$k]}"; done | sort
    printf '  (Redis 7 counts the commands a Lua script runs in INFO commandstats too, beside the EVAL/EVALSHA itself.)\n'
    printf '  mock rows: the mock (nginx answering from memory) loaded directly; RSS and CPU are its own.\n'
    print_conv
    print_perf
    print_concurrency
}

# The rows of issue 11, side by side with nginx on the same scenario, and a verdict
# against its targets: api-proxy (with its redis-server) at most TARGET_CPU_RATIO times
# nginx's CPU per request, and p99 within TARGET_P99_MS of nginx's at 16 connections (the
# one-connection row is judged on CPU only). The fallback and convert variants follow as
# extra rows, against the same nginx row (nginx does neither: their verdict shows what
# the extra work costs against the plain proxy, not a like-for-like comparison).
print_targets() {
    local sc rows="" extra=""
    for sc in $SCENARIOS; do
        scenario_env "$sc"
        rows="$rows$sc api-proxy $SC_CONNS $SC_LABEL"$'\n'
        extra="$extra$sc api-proxy+fallback $SC_CONNS $SC_LABEL, fallback on"$'\n'
        extra="$extra$sc api-proxy+convert $SC_CONNS $SC_LABEL, OpenAI client converted"$'\n'
    done
    {
        printf '%s\n' "${RESULTS[@]}" | sed 's/^/ROW /'
        printf '%s' "$rows" | sed 's/^/ISSUE /'
        printf '%s' "$extra" | sed 's/^/EXTRA /'
    } | awk -v maxr="$TARGET_CPU_RATIO" -v p99d="$TARGET_P99_MS" '
        $1 == "ROW" { k = $2 SUBSEP $3; have[k] = 1; for (i = 2; i <= NF; i++) f[k, i - 1] = $i; next }
        $1 == "ISSUE" || $1 == "EXTRA" {
            kind = $1; sc = $2; t = $3; c = $4; label = $5; for (i = 6; i <= NF; i++) label = label " " $i
            if (!((sc SUBSEP t) in have)) next
            n++; R_kind[n] = kind; R_sc[n] = sc; R_t[n] = t; R_c[n] = c; R_label[n] = label
        }
        function one(i,   sc, t, a, g, ratio, dp99, vcpu, vp, v, redis) {
            sc = R_sc[i]; t = R_t[i]; a = sc SUBSEP t; g = sc SUBSEP "nginx"
            redis = f[a, 14]
            if (!(g in have) || f[g, 7] + 0 <= 0) {
                printf fmt, R_label[i], R_c[i], "-", sprintf("%.1f", f[a, 7]), redis, "-", "-", f[a, 3], "-",
                    sprintf("%.2f/%.2f", f[a, 4], f[a, 5]), "-", f[a, 6], "no nginx row"
                return
            }
            ratio = f[a, 7] / f[g, 7]; dp99 = f[a, 5] - f[g, 5]
            vcpu = (ratio <= maxr) ? "ok" : "OVER"
            if (R_c[i] == 16) vp = (dp99 <= p99d) ? "ok" : "OVER"; else vp = "n/a"
            v = (vcpu == "ok" && vp != "OVER") ? "met" : "NOT MET"
            v = sprintf("%s (CPU %s %.2fx; p99 %s%s)", v, vcpu, ratio, vp, vp == "n/a" ? " at " R_c[i] " conn" : sprintf(" %+.2f ms", dp99))
            if (vcpu != "ok") ncpu++
            if (vp == "OVER") np99++
            if (R_kind[i] == "ISSUE") { nrows++; if (v ~ /^met/) nmet++ }
            printf fmt, R_label[i], R_c[i], sprintf("%.1f", f[g, 7]), sprintf("%.1f", f[a, 7]), redis,
                sprintf("%.2fx", ratio), f[g, 3], f[a, 3], sprintf("%.2f/%.2f", f[g, 4], f[g, 5]),
                sprintf("%.2f/%.2f", f[a, 4], f[a, 5]), f[g, 6], f[a, 6], v
        }
        END {
            if (!n) exit
            printf "\nissue 11 targets: api-proxy (with its redis-server) at most %sx nginx'"'"'s CPU per request; p99 within %s ms of nginx'"'"'s at 16 connections\n", maxr, p99d
            fmt = "%-42s %5s %8s %8s %6s %6s %8s %8s %11s %11s %6s %6s  %s\n"
            printf fmt, "row", "conns", "CPU us/req", "", "redis", "ratio", "req/s", "", "p50/p99 ms", "", "RSS MB", "", "verdict"
            printf fmt, "", "", "nginx", "ours", "of it", "", "nginx", "ours", "nginx", "ours", "nginx", "ours", ""
            for (i = 1; i <= n; i++) if (R_kind[i] == "ISSUE") one(i)
            hdr = 0
            for (i = 1; i <= n; i++) if (R_kind[i] == "EXTRA") {
                if (!hdr) { printf "  extra rows (not in the issue'"'"'s table; nginx does no fallback and no conversion):\n"; hdr = 1 }
                one(i)
            }
            printf "  issue 11 rows meeting both targets: %d of %d\n", nmet, nrows
        }'
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
# perf: where api-proxy's time goes
# ------------------------------------------------------------------------------------------

# perf_profile SCENARIO (BENCH_PERF=1): one more wrk run of BENCH_DURATION against the
# api-proxy just measured, with `perf record -g` on it (the default cpu-clock event, which
# needs no PMU), kept out of the figures above; then its top symbols by self time
# (`perf report --no-children --sort symbol`), for the README's before/after.
perf_profile() {
    local sc=$1 data=$TMP/perf-$1.data pid
    say "$sc/api-proxy: perf record -g during a separate ${DURATION} wrk run (not in the figures)"
    start_proc "perf-$sc" "$LOAD_CPU" perf record -g -o "$data" -p "$TARGET_PID"
    pid=$LAST_PID
    sleep 0.5
    alive "$pid" || {
        fail "$sc: perf record did not start: $(tail -n 3 "$TMP/perf-$sc.log")"
        return 0
    }
    CUR_TARGET=api-proxy-perf run_wrk "$DURATION" "$sc"
    kill -INT "$pid" 2>/dev/null || true
    stop_proc "$pid"
    if ! perf report -i "$data" --no-children --sort symbol --stdio -g none >"$TMP/perf-$sc.report" 2>"$TMP/perf-$sc.report.err"; then
        fail "$sc: perf report failed: $(tail -n 3 "$TMP/perf-$sc.report.err")"
        return 0
    fi
    PERF_SAMPLES["$sc"]=$(sed -n 's/.*(\([0-9]*\) samples).*/\1/p' "$TMP/perf-$sc.log" | tail -n 1)
    # The lines of symbols, without perf's IPC columns (no PMU here: "-  -").
    PERF_TOP["$sc"]=$(awk -v n="$PERF_TOP_N" '/^#/ || /^[[:space:]]*$/ { next }
        { sub(/([[:space:]]+-)+[[:space:]]*$/, ""); print; if (++k == n) exit }' "$TMP/perf-$sc.report")
}

print_perf() {
    [[ $PERF == 1 ]] || return 0
    local sc
    for sc in $PERF_SCENARIOS; do
        [[ -n ${PERF_TOP["$sc"]+x} ]] || continue
        printf '\nperf: api-proxy, scenario %s (%s connections), top %s symbols by self time (%s samples of cpu-clock,\n' \
            "$sc" "$(scenario_env "$sc"; echo "$SC_CONNS")" "$PERF_TOP_N" "${PERF_SAMPLES["$sc"]:-?}"
        printf '  perf record -g during a separate %s wrk run; perf report --no-children --sort symbol; [k] kernel, [.] user):\n' "$DURATION"
        printf '%s\n' "${PERF_TOP["$sc"]}" | sed 's/^/  /'
    done
}

# ------------------------------------------------------------------------------------------
# the concurrency row (issue 11): thousands of slow streams through one replica
# ------------------------------------------------------------------------------------------

# Descriptors: api-proxy holds two per stream (its client's and its upstream's socket);
# trickle's client and upstream one each. main() raised the soft limit to the hard one (the
# processes started later inherit it); here the hard limit is raised too if this shell may
# (root with CAP_SYS_RESOURCE), and when it cannot hold the streams asked for, the row runs
# with as many as fit and the report says so. Sets STREAMS_RUN, STREAMS_NOTE.
concurrency_plan() {
    local hard need
    STREAMS_RUN=$STREAMS STREAMS_NOTE=""
    need=$((2 * STREAMS + FD_RESERVE))
    hard=$(ulimit -Hn)
    [[ $hard == unlimited ]] && return 0
    if ((hard < need)) && ulimit -Hn "$need" 2>/dev/null; then
        ulimit -n "$need"
        say "raised the descriptor limit to $need for the concurrency row"
        return 0
    fi
    if ((hard < need)); then
        STREAMS_RUN=$(((hard - FD_RESERVE) / 2))
        STREAMS_NOTE="the descriptor hard limit is $hard (ulimit -Hn) and this shell cannot raise it (no CAP_SYS_RESOURCE, e.g. in a container); $STREAMS streams need $need in api-proxy (2 per stream + $FD_RESERVE), so this row ran $STREAMS_RUN streams, NOT $STREAMS. Raise the hard limit (docker run --ulimit nofile=32768:32768, limits.conf, systemd LimitNOFILE) for the full row."
        say "WARNING: $STREAMS_NOTE"
    fi
}

vm_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

# runq_wait_ns PID: time its threads have spent runnable but waiting for a CPU (schedstat's
# second field): when it is large, the machine's other work, not the process, set the pace.
runq_wait_ns() {
    local t v w total=0
    for t in /proc/"$1"/task/*/schedstat; do
        read -r v w _ 2>/dev/null <"$t" && total=$((total + w))
    done
    echo "$total"
}

# metric URL NAME: a metric's value from /metrics (first series), or "?".
metric() {
    curl -fsS --max-time 5 -o "$TMP/metric" "$1/metrics" 2>/dev/null || { echo "?"; return 0; }
    awk -v n="$2" '$1 == n && !f { print $2 + 0; f = 1 } END { if (!f) print "?" }' "$TMP/metric"
}

# run_concurrency: STREAMS_RUN streams from trickle's client (core LOAD_CPU) through one
# api-proxy (with its redis-server, core PROXY_CPU) to trickle's upstream (core LOAD_CPU),
# each one event a second for STREAM_SECONDS s. Samples api-proxy's RSS and open streams
# every second (and how long /metrics takes to answer: a stalled loop shows there too).
run_concurrency() {
    concurrency_plan
    if ((STREAMS_RUN < 1)); then
        fail "concurrency: the descriptor limit ($(ulimit -Hn)) leaves no room for a stream"
        return 0
    fi
    local dir=$TMP/concurrency
    mkdir -p "$dir"
    say "== concurrency: $STREAMS_RUN streams through one api-proxy, one SSE event a second for ${STREAM_SECONDS}s each (ramp-up ${STREAM_RAMP}s)"
    start_proc trickle-upstream "$LOAD_CPU" "$TRICKLE_BIN" upstream -b 127.0.0.1 -p 0 -e "$STREAM_SECONDS" -i 1000 \
        -P "$dir/upstream.port"
    local up_pid=$LAST_PID up_url
    wait_for "trickle's upstream to listen" 10 "$up_pid" trickle-upstream test -s "$dir/upstream.port"
    up_url=http://127.0.0.1:$(cat "$dir/upstream.port")
    wait_for "trickle's upstream /health" 10 "$up_pid" trickle-upstream http_ok "$up_url/health"

    local maxc=16384
    ((STREAMS_RUN + 1024 > maxc)) && maxc=$((STREAMS_RUN + 1024))
    scenario_env stream
    AP_UPSTREAM=$up_url AP_EXTRA_ENV=(MAX_CONNECTIONS="$maxc")
    start_api_proxy api-proxy concurrency
    AP_UPSTREAM="" AP_EXTRA_ENV=()
    local ap_pid=$TARGET_PID ap_url=$TARGET_URL

    local idle_rss t0 w0 r0 u0 c1 c1e
    idle_rss=$(vm_kb "$ap_pid" VmRSS)
    read -r U0_REQ U0_IN U0_OUT <<<"$(usage_settled)"
    t0=$(cpu_ticks "$ap_pid")
    w0=$(runq_wait_ns "$ap_pid")
    r0=$(cpu_ticks "$REDIS_PID")
    u0=$(cpu_ticks "$up_pid")
    c1=$(core_ticks "$PROXY_CPU")
    local start=$EPOCHREALTIME
    start_proc trickle-client "$LOAD_CPU" "$TRICKLE_BIN" client -u "$ap_url" -k "$TARGET_KEY" -n "$STREAMS_RUN" \
        -R "$STREAM_RAMP" -e "$STREAM_SECONDS" -i 1000 -m "$MODEL"
    local cl_pid=$LAST_PID
    local peak_rss=$idle_rss peak_streams=0 max_streams=0 rss streams t_ms slow_ms=0 slow_at=0 el
    : >"$dir/samples"
    while alive "$cl_pid"; do
        sleep 1
        ensure_alive "during the concurrency row" "$ap_pid" "$REDIS_PID" "$up_pid"
        rss=$(vm_kb "$ap_pid" VmRSS)
        t_ms=$(curl -fsS --max-time 10 -o "$dir/metrics" -w '%{time_total}' "$ap_url/metrics" 2>/dev/null |
            awk '{ printf "%.0f", $1 * 1000 }') || t_ms=timeout
        streams=$(awk '$1 == "ap_active_streams" { print $2 + 0; f = 1; exit } END { if (!f) print 0 }' "$dir/metrics" 2>/dev/null)
        el=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
        printf '%s %s %s %s\n' "$el" "$rss" "$streams" "$t_ms" >>"$dir/samples"
        ((rss > peak_rss)) && peak_rss=$rss peak_streams=$streams
        ((streams > max_streams)) && max_streams=$streams
        if [[ $t_ms == timeout ]]; then
            slow_ms=timeout slow_at=$el
        elif [[ $slow_ms != timeout ]] && ((t_ms > slow_ms)); then
            slow_ms=$t_ms slow_at=$el
        fi
    done
    local cl_rc=0
    wait "$cl_pid" 2>/dev/null || cl_rc=$?
    forget_proc "$cl_pid"
    local t1 w1 r1 u1 c1e
    c1e=$(core_ticks "$PROXY_CPU")
    t1=$(cpu_ticks "$ap_pid")
    w1=$(runq_wait_ns "$ap_pid")
    r1=$(cpu_ticks "$REDIS_PID")
    u1=$(cpu_ticks "$up_pid")
    local hwm wall
    wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    hwm=$(vm_kb "$ap_pid" VmHWM)

    local line
    line=$(grep '^TRICKLE_RESULT ' "$TMP/trickle-client.log") || {
        fail "concurrency: trickle's client printed no result (exit $cl_rc; $TMP/trickle-client.log)"
        line=""
    }
    declare -gA CONC=()
    local kv
    for kv in ${line#TRICKLE_RESULT }; do CONC["${kv%%=*}"]=${kv#*=}; done
    CONC[first_error]=$(sed -n 's/^TRICKLE_FIRST_ERROR //p' "$TMP/trickle-client.log")
    CONC[runq_wait_us]=$(((w1 - w0) / 1000))
    # TRICKLE_PHASE NAME events=E late=L delay_max_us=D -> CONC[NAME_events] etc.
    local ph
    while read -r _ ph line; do
        for kv in $line; do CONC["${ph}_${kv%%=*}"]=${kv#*=}; done
    done < <(grep '^TRICKLE_PHASE ' "$TMP/trickle-client.log")
    local up_stats
    up_stats=$(curl -fsS --max-time 5 "$up_url/stats") || up_stats="{}"
    CONC[up_completed]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("completed", "?"))' "$up_stats")
    CONC[up_aborted]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("aborted", "?"))' "$up_stats")
    CONC[up_late]=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("tick_late_max_us", "?"))' "$up_stats")
    CONC[refused]=$(metric "$ap_url" ap_connections_refused_total)
    CONC[idle_rss]=$idle_rss CONC[peak_rss]=$peak_rss CONC[hwm]=$hwm CONC[peak_streams]=$peak_streams
    CONC[max_streams]=$max_streams CONC[metrics_ms]=$slow_ms CONC[metrics_at]=$slow_at CONC[wall]=$wall
    CONC[ap_us]=$(cpu_us "$t0" "$t1" concurrency-api-proxy)
    CONC[redis_us]=$(cpu_us "$r0" "$r1" concurrency-redis)
    CONC[up_us]=$(cpu_us "$u0" "$u1" concurrency-upstream)
    CONC[core1]=$(awk -v a="$c1" -v b="$c1e" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.0f", 100 * (y[1] - x[1]) / (y[2] - x[2]) }')

    # Usage: every stream the upstream finished is counted, with its tokens.
    local u1_req u1_in u1_out
    read -r u1_req u1_in u1_out <<<"$(usage_settled)"
    CONC[counted]=$((u1_req - U0_REQ)) CONC[tok_in]=$((u1_in - U0_IN)) CONC[tok_out]=$((u1_out - U0_OUT))
    CONC[warnings]=$(grep -c '"level":"\(warn\|error\)"' "$TMP/api-proxy-concurrency.log" || true)
    CONC[first_warning]=$(grep -m 1 '"level":"\(warn\|error\)"' "$TMP/api-proxy-concurrency.log" | head -c 300 || true)

    stop_proc "$ap_pid"
    ((STOP_RC == 0)) || fail "concurrency: api-proxy exited with status $STOP_RC on SIGTERM (log: $TMP/api-proxy-concurrency.log)"
    stop_proc "$REDIS_PID"
    stop_proc "$up_pid"

    [[ -n $line ]] || return 0
    ((CONC[completed] == STREAMS_RUN)) ||
        fail "concurrency: $((STREAMS_RUN - CONC[completed])) of $STREAMS_RUN streams did not complete (first error: ${CONC[first_error]:-none})"
    if [[ ${CONC[up_completed]} != "${CONC[counted]}" ]]; then
        fail "concurrency: usage counted ${CONC[counted]} requests, the upstream completed ${CONC[up_completed]} streams"
    elif ((CONC[tok_in] != CONC[counted] * 12 || CONC[tok_out] != CONC[counted] * STREAM_SECONDS)); then
        fail "concurrency: tokens ${CONC[tok_in]}/${CONC[tok_out]}, expected $((CONC[counted] * 12))/$((CONC[counted] * STREAM_SECONDS))"
    fi
    say "concurrency: ${CONC[completed]}/$STREAMS_RUN completed, worst event delay ${CONC[delay_max_us]} us, RSS $idle_rss -> $hwm kB"
}

print_concurrency() {
    [[ $CONCURRENCY == 1 && -n ${CONC[streams]:-} ]] || return 0
    local n=${CONC[streams]}
    printf '\nconcurrency (issue 11): %s streams through one api-proxy, each one SSE event a second for %s s (ramp-up %s s)\n' \
        "$n" "$STREAM_SECONDS" "$STREAM_RAMP"
    printf '  %s (client and upstream) on core %s; api-proxy and its redis-server on core %s; descriptor limit %s; LOG_LEVEL=%s\n' \
        "${TRICKLE_BIN#"$ROOT"/}" "$LOAD_CPU" "$PROXY_CPU" "$(ulimit -n)" "$PROXY_LOG_LEVEL"
    [[ -z $STREAMS_NOTE ]] || printf '  WARNING: %s\n' "$STREAMS_NOTE"
    local k args=()
    for k in "${!CONC[@]}"; do [[ $k == first_* ]] || args+=(-v "c_$k=${CONC[$k]}"); done
    awk "${args[@]}" -v n="$n" -v rss_t="$STREAM_RSS_TARGET_KB" -v del_t="$STREAM_DELAY_TARGET_MS" -v pc="$PROXY_CPU" \
        -v first_error="${CONC[first_error]}" -v first_warning="${CONC[first_warning]}" 'BEGIN {
        open = (c_max_streams > 0 ? c_max_streams : c_peak_open)
        per = (open > 0 ? (c_hwm - c_idle_rss) / open : 0)
        printf "  %-22s %d of %d (errors: connect %d, non-200 %d%s, closed early %d, bad stream %d, timed out %d)\n",
            "streams completed", c_completed, n, c_connect_errors, c_status_errors,
            (c_first_status ? " first " c_first_status : ""), c_early_close, c_bad_stream, c_timeouts
        if (first_error != "") printf "  %-22s %s\n", "first error", first_error
        printf "  %-22s %d in api-proxy (ap_active_streams, sampled each second), %d on the client side; refused connections %s\n",
            "peak open streams", c_max_streams, c_peak_open, c_refused
        printf "  %-22s idle %.1f MB, peak %.1f MB (VmHWM): %.1f KB per open stream (target < %d KB): %s\n",
            "api-proxy RSS", c_idle_rss / 1024, c_hwm / 1024, per, rss_t, (per < rss_t ? "met" : "NOT MET")
        printf "  %-22s p50 %.1f ms, p99 %.1f ms, p99.9 %.1f ms, worst %.1f ms (in second %d of the run); %d of %d events over %d ms: %s\n",
            "event delay", c_delay_p50_us / 1000, c_delay_p99_us / 1000, c_delay_p999_us / 1000, c_delay_max_us / 1000,
            c_worst_second, c_late, c_events, del_t, (c_events > 0 && c_delay_max_us <= del_t * 1000 ? "met (every event within " del_t " ms)" : "NOT MET")
        printf "  %-22s opening (until every stream has its reply head): worst %.1f ms, %d of %d over %d ms;\n",
            "  by phase", c_opening_delay_max_us / 1000, c_opening_late, c_opening_events, del_t
        printf "  %-22s steady (all open, none done): worst %.1f ms, %d of %d over; closing: worst %.1f ms, %d of %d over\n",
            "", c_steady_delay_max_us / 1000, c_steady_late, c_steady_events, c_closing_delay_max_us / 1000,
            c_closing_late, c_closing_events
        printf "  %-22s the client'"'"'s own loop ran up to %.1f ms late (its 10 ms timer): delays up to that are the load side'"'"'s, not api-proxy'"'"'s\n",
            "load side", c_client_lag_max_us / 1000
        printf "  %-22s p50 %.1f ms, p99 %.1f ms, worst %.1f ms (request sent -> reply head; includes the ramp-up queueing)\n",
            "time to first byte", c_ttfb_p50_us / 1000, c_ttfb_p99_us / 1000, c_ttfb_max_us / 1000
        printf "  %-22s %.2f s over %.1f s (%.0f%% of a core), %.1f us per event relayed (%d events); redis-server %.2f s\n",
            "api-proxy CPU", c_ap_us / 1e6, c_wall, 100 * c_ap_us / 1e6 / (c_wall > 0 ? c_wall : 1),
            (c_events > 0 ? c_ap_us / c_events : 0), c_events, c_redis_us / 1e6
        printf "  %-22s %.2f s runnable but waiting for a CPU (schedstat)%s\n", "api-proxy run queue",
            c_runq_wait_us / 1e6, (c_runq_wait_us > c_ap_us ? ": longer than it ran, the machine'"'"'s other work set the pace" : "")
        other = c_core1 - 100 * (c_ap_us + c_redis_us) / 1e6 / (c_wall > 0 ? c_wall : 1)
        if (other < 0) other = 0
        noisy = (other > 10 ? ": delays are noisy, rerun on a quiet machine" : "")
        printf "  %-22s core %d busy %s%% on average, %.0f%% of it other work (not api-proxy or its redis-server)%s; trickle'"'"'s upstream used %.2f s (its timer at worst %.1f ms late)\n",
            "machine", pc, c_core1, other, noisy, c_up_us / 1e6, c_up_late / 1000
        if (c_metrics_ms == "timeout")
            printf "  %-22s /metrics did not answer within 10 s (at second %s): its loop stalled, or it was starved of CPU (see run queue)\n", "api-proxy loop", c_metrics_at
        else
            printf "  %-22s /metrics took at most %s ms to answer (at second %s)\n", "api-proxy loop", c_metrics_ms, c_metrics_at
        printf "  %-22s %d requests counted (%d in / %d out tokens) for %d streams the upstream finished (%s left early)\n",
            "usage", c_counted, c_tok_in, c_tok_out, c_up_completed, c_up_aborted
        printf "  %-22s %d warn/error lines in api-proxy'"'"'s log%s\n", "log", c_warnings, (first_warning != "" ? "; first: " first_warning : "")
    }'
    # A few of the per-second samples, evenly spread: how RSS follows the open streams.
    awk '{ s[NR] = $0 } END {
        step = (NR > 12 ? int(NR / 12) : 1); out = ""
        for (i = step; i <= NR; i += step) { split(s[i], f, " ")
            out = out sprintf("%s%ss %.0f MB/%d", out == "" ? "" : ", ", f[1], f[2] / 1024, f[3]) }
        if (out != "") printf "  %-22s %s\n", "samples (RSS/streams)", out }' "$TMP/concurrency/samples"
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
    target_env "$sc" "$variant"
    start_api_proxy "$variant" "$sc"
    if check_answer "$sc" "$variant"; then
        measure "$sc" "$variant"
        [[ $variant == api-proxy+fallback ]] && check_fallback "$sc" "$variant" "$TARGET_URL"
        # shellcheck disable=SC2086
        if [[ $PERF == 1 && $variant == api-proxy ]] && in_list "$sc" $PERF_SCENARIOS; then perf_profile "$sc"; fi
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
    for sc in $SCENARIOS $FALLBACK_SCENARIOS $CONVERT_SCENARIOS $POLICY_SCENARIOS $PERF_SCENARIOS; do scenario_env "$sc"; done
    for sc in $FALLBACK_SCENARIOS $CONVERT_SCENARIOS $POLICY_SCENARIOS; do
        # shellcheck disable=SC2086
        in_list "$sc" $ANTHROPIC_SCENARIOS ||
            die "BENCH_FALLBACK_SCENARIOS and BENCH_CONVERT_SCENARIOS take Anthropic scenarios ($ANTHROPIC_SCENARIOS), not $sc"
    done
    [[ $STREAMS =~ ^[0-9]+$ && $STREAMS -ge 1 ]] || die "BENCH_STREAMS must be a whole number of streams (>= 1)"
    [[ $STREAM_SECONDS =~ ^[0-9]+$ && $STREAM_SECONDS -ge 1 ]] || die "BENCH_STREAM_SECONDS must be a whole number of seconds (>= 1)"
    [[ $STREAM_RAMP =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_STREAM_RAMP must be a number of seconds"
    [[ $CONCURRENCY == 0 || $CONCURRENCY == 1 ]] || die "BENCH_CONCURRENCY takes 0 or 1"
    [[ $PERF == 0 || $PERF == 1 ]] || die "BENCH_PERF takes 0 or 1"
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
    build_trickle
    # Every process started from here inherits this: the concurrency row needs thousands.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || say "could not raise the descriptor limit to $(ulimit -Hn)"
    CLK_TCK=$(getconf CLK_TCK)
    TMP=$(mktemp -d /tmp/ap-bench.XXXXXX)
    python3 "$HERE/fixtures.py" "$TMP/fixtures" || die "generating fixtures failed"
    MODEL=$(cat "$TMP/fixtures/model.txt")
    RESULTS=()
    USAGE_NOTES=()
    FALLBACK_NOTES=()
    POLICY_NOTES=()
    declare -gA CMD_TOP=() IDLE_RATE=() IDLE_TOP=() PERF_TOP=() PERF_SAMPLES=() CONC=()
    AUX_PIDS="" LB_PIDS="" POLLER_URL="" ADMIN_URL="" REDIS_PORT="" AP_UPSTREAM="" STREAMS_NOTE=""
    AP_EXTRA_ENV=()

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
        [[ $CONCURRENCY == 1 ]] && run_concurrency
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
