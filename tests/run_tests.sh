#!/usr/bin/env bash
# Run every test stage of api-proxy and print the totals.
#
#   tests/run_tests.sh --bin BIN --build BUILD [-- RUNNER_ARGS...]
#
# Stages:
#   1. unit:        every BUILD/tests/test_* binary (cmocka, TAP output)
#   2. integration: tests/integration/runner.py with AP_BIN=BIN (RUNNER_ARGS, e.g. -k NAME
#                   or test files, are passed to it)
#   3. sdk:         tests/sdk/run.sh, if it exists and is executable (last line
#                   "sdk: N passed, N failed")
# The last line is always "N passed, N failed"; the exit code is non-zero if anything failed.
set -u

usage() { echo "usage: $0 --bin BIN --build BUILD [-- runner args...]" >&2; exit 2; }

BIN=bin
BUILD=build
RUNNER_ARGS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) [ $# -ge 2 ] || usage; BIN=$2; shift 2 ;;
        --build) [ $# -ge 2 ] || usage; BUILD=$2; shift 2 ;;
        --) shift; RUNNER_ARGS=("$@"); break ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
BIN=$(cd "$BIN" 2>/dev/null && pwd || echo "$ROOT/$BIN")
BUILD=$(cd "$BUILD" 2>/dev/null && pwd || echo "$ROOT/$BUILD")

TMP=$(mktemp -d /tmp/ap-run-tests.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

TOTAL_PASS=0
TOTAL_FAIL=0

# ---- 1. unit tests --------------------------------------------------------------------
UNIT_PASS=0
UNIT_FAIL=0
shopt -s nullglob
for t in "$BUILD"/tests/test_*; do
    if [ ! -f "$t" ] || [ ! -x "$t" ]; then continue; fi
    name=$(basename "$t")
    out="$TMP/$name.out"
    # The braces make bash's own "Segmentation fault" report land in $out too.
    { CMOCKA_MESSAGE_OUTPUT=TAP "$t"; } >"$out" 2>&1
    rc=$?
    # TAP result lines: "ok N - name" / "not ok N - name" (possibly indented).
    ok=$(grep -cE '^[[:space:]]*ok([[:space:]]|$)' "$out")
    notok=$(grep -cE '^[[:space:]]*not ok([[:space:]]|$)' "$out")
    # A crash or a non-zero exit without a reported failure still counts as one failure.
    if [ "$rc" -ne 0 ] && [ "$notok" -eq 0 ]; then
        notok=1
    fi
    UNIT_PASS=$((UNIT_PASS + ok))
    UNIT_FAIL=$((UNIT_FAIL + notok))
    if [ "$notok" -gt 0 ]; then
        echo "FAIL unit $name (exit $rc, $ok ok, $notok not ok):"
        sed 's/^/    /' "$out"
    else
        echo "PASS unit $name ($ok ok)"
    fi
done
shopt -u nullglob
echo "unit: $UNIT_PASS passed, $UNIT_FAIL failed"
TOTAL_PASS=$((TOTAL_PASS + UNIT_PASS))
TOTAL_FAIL=$((TOTAL_FAIL + UNIT_FAIL))

# ---- 2. integration tests ---------------------------------------------------------------
# Output goes to the terminal as it comes (tee) and to a file for the summary line.
AP_BIN="$BIN" python3 tests/integration/runner.py ${RUNNER_ARGS[@]+"${RUNNER_ARGS[@]}"} \
    2>&1 | tee "$TMP/integration.out"
rc=${PIPESTATUS[0]}
summary=$(grep -E '^integration: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' \
              "$TMP/integration.out" | tail -n 1)
if [ -n "$summary" ]; then
    IT_PASS=$(echo "$summary" | sed -E 's/^integration: ([0-9]+) passed.*/\1/')
    IT_FAIL=$(echo "$summary" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    if [ "$rc" -ne 0 ] && [ "$IT_FAIL" -eq 0 ]; then IT_FAIL=1; fi
else
    echo "integration: the runner ended without its summary line (exit $rc)"
    IT_PASS=0
    IT_FAIL=1
fi
TOTAL_PASS=$((TOTAL_PASS + IT_PASS))
TOTAL_FAIL=$((TOTAL_FAIL + IT_FAIL))

# ---- 3. SDK tests (optional) --------------------------------------------------------------
if [ -x tests/sdk/run.sh ]; then
    AP_BIN="$BIN" tests/sdk/run.sh 2>&1 | tee "$TMP/sdk.out"
    rc=${PIPESTATUS[0]}
    last=$(grep -v '^[[:space:]]*$' "$TMP/sdk.out" | tail -n 1)
    if [[ "$last" =~ ^sdk:\ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        SDK_PASS=${BASH_REMATCH[1]}
        SDK_FAIL=${BASH_REMATCH[2]}
        if [ "$rc" -ne 0 ] && [ "$SDK_FAIL" -eq 0 ]; then SDK_FAIL=1; fi
    else
        echo "sdk: tests/sdk/run.sh ended without its summary line (exit $rc)"
        SDK_PASS=0
        SDK_FAIL=1
    fi
    echo "sdk: $SDK_PASS passed, $SDK_FAIL failed"
    TOTAL_PASS=$((TOTAL_PASS + SDK_PASS))
    TOTAL_FAIL=$((TOTAL_FAIL + SDK_FAIL))
fi

echo "$TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" -eq 0 ]
