#!/usr/bin/env bash
# Runs every test from a fresh Debian machine: installs what is missing,
# builds, runs the unit + integration (+ SDK) tests, then the same tests
# again against an ASan/UBSan build.
#   scripts/test.sh            everything
#   scripts/test.sh --quick    the normal build only (no sanitizer pass)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
make -j"$(nproc)" all
status=0
make test || status=1
if [ "${1:-}" != "--quick" ]; then
    make -j"$(nproc)" sanitize || status=1
fi
exit $status
