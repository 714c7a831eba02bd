#!/usr/bin/env bash
# Runs every test from a fresh Debian machine: installs what is missing, builds,
# runs the unit + integration (+ SDK, console, cluster) tests, the static analysis
# (make analyze), the compose fleet (docker-compose.yml under podman; skipped, saying
# why, where podman cannot run containers), then the same tests again against an
# ASan/UBSan build, the core integration tests with the daemons under valgrind (leaks
# and memory errors fail them), and every fuzz target for a few seconds
# (FUZZ_SECONDS, default 4) under ASan/UBSan.
#   scripts/test.sh            everything
#   scripts/test.sh --quick    the first pass only (no sanitizer, valgrind or fuzz pass)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test containers
make -j"$(nproc)" all unit
status=0
make test || status=1
make analyze || status=1
echo "== compose: docker-compose.yml brought up under podman (tests/compose)"
python3 tests/integration/runner.py tests/compose/test_compose.py || status=1
if [ "${1:-}" != "--quick" ]; then
    make -j"$(nproc)" sanitize || status=1
    echo "== valgrind: core integration tests with the daemons under valgrind"
    AP_VALGRIND=1 AP_BIN="$PWD/bin" python3 tests/integration/runner.py \
        tests/integration/test_auth.py tests/integration/test_relay.py tests/integration/test_usage.py \
        tests/integration/test_faults.py tests/integration/test_fallback.py tests/integration/test_poller.py \
        tests/integration/test_lark.py tests/integration/test_sentinel.py || status=1
    echo "== fuzz: every target for ${FUZZ_SECONDS:-4} s under ASan/UBSan (tests/fuzz/README.md)"
    make fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-4}" || status=1
fi
exit $status
