#!/usr/bin/env bash
# Runs the libFuzzer targets (make fuzz builds them into build-fuzz/fuzz first).
#
#   scripts/fuzz.sh --bin DIR [--seconds N] [--work DIR] [TARGET...]
#
# Each target (default: every fuzz_* binary in DIR) runs for N seconds (default 60,
# FUZZ_SECONDS) under ASan+UBSan, starting from its checked-in seed corpus
# tests/fuzz/corpus/<target>/ (only read) plus what earlier runs found, kept in
# <work>/<target>/corpus (default work dir var/fuzz). A finding stops that target and
# leaves its input in <work>/<target>/ (crash-*, leak-*, timeout-*, oom-*); replay it with
#   build-fuzz/fuzz/<target> <that file>
# The exit code is non-zero when any target found something. The last line is
# "fuzz: N targets, N findings".
set -u

usage() { echo "usage: $0 --bin DIR [--seconds N] [--work DIR] [target...]" >&2; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=""
SECONDS_EACH=${FUZZ_SECONDS:-60}
WORK=$ROOT/var/fuzz
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) [ $# -ge 2 ] || usage; BIN=$2; shift 2 ;;
        --seconds) [ $# -ge 2 ] || usage; SECONDS_EACH=$2; shift 2 ;;
        --work) [ $# -ge 2 ] || usage; WORK=$2; shift 2 ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
[ -n "$BIN" ] || usage
BIN=$(cd "$BIN" && pwd) || exit 2
if [ ${#TARGETS[@]} -eq 0 ]; then
    for t in "$BIN"/fuzz_*; do [ -x "$t" ] && TARGETS+=("$(basename "$t")"); done
fi
[ ${#TARGETS[@]} -gt 0 ] || { echo "fuzz: no targets in $BIN (make fuzz-build)" >&2; exit 2; }

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
findings=0
for t in "${TARGETS[@]}"; do
    dir=$WORK/$t
    mkdir -p "$dir/corpus"
    seeds=$ROOT/tests/fuzz/corpus/$t
    [ -d "$seeds" ] || seeds=""
    log=$dir/last.log
    # -max_len: requests and streams are larger than libFuzzer's default of 4 KiB.
    "$BIN/$t" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" ${seeds:+"$seeds"} >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | cut -d' ' -f2)
    if [ $rc -ne 0 ]; then
        findings=$((findings + 1))
        echo "FAIL fuzz $t (exit $rc, ${execs:-?} runs): see $log and $dir/"
        grep -E 'ERROR|SUMMARY|runtime error|^artifact_prefix|Test unit written' "$log" | head -n 8 | sed 's/^/    /'
    else
        echo "PASS fuzz $t (${SECONDS_EACH}s, ${execs:-?} runs, ${cov:-?} coverage points, $(ls "$dir/corpus" | wc -l) inputs in the work corpus)"
    fi
done
echo "fuzz: ${#TARGETS[@]} targets, $findings findings"
[ $findings -eq 0 ]
