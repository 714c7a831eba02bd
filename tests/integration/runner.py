#!/usr/bin/env python3
"""Run api-proxy's integration tests (tests/integration/test_*.py) with unittest.

    tests/integration/runner.py [--bin DIR] [-k SUBSTRING] [--timeout S] [files...]

Prints one line per test (PASS/FAIL/SKIP name (time)), the traceback of each failure
indented under it, and ends with exactly one line:
    integration: N passed, N failed, N skipped
Exit code 1 if anything failed.
"""

import argparse
import importlib.util
import os
import signal
import sys
import time
import traceback
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout("test exceeded its time limit (--timeout / AP_TEST_TIMEOUT)")


def _indent(text):
    return "\n".join("    " + line for line in text.rstrip("\n").splitlines())


class LineResult(unittest.TestResult):
    """Prints one line per test as it finishes, and arms a per-test alarm."""

    def __init__(self, out, timeout):
        super().__init__()
        self.out = out
        self.timeout = timeout
        self.n_passed = self.n_failed = self.n_skipped = 0
        self._t0 = {}

    @staticmethod
    def name(test):
        # _ErrorHolder (setUpClass/class cleanup errors) has only a description.
        if isinstance(test, unittest.TestCase):
            return test.id()
        return str(test)

    def _elapsed(self, test):
        """" (1.23s)", or "" for class-level errors, which have no start time."""
        t0 = self._t0.get(id(test))
        return "" if t0 is None else " (%.2fs)" % (time.monotonic() - t0)

    def _line(self, text):
        self.out.write(text + "\n")
        self.out.flush()

    def startTest(self, test):
        super().startTest(test)
        self._t0[id(test)] = time.monotonic()
        if self.timeout:
            signal.setitimer(signal.ITIMER_REAL, self.timeout)

    def stopTest(self, test):
        signal.setitimer(signal.ITIMER_REAL, 0)
        super().stopTest(test)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.n_passed += 1
        self._line("PASS %s%s" % (self.name(test), self._elapsed(test)))

    def _fail(self, test, err):
        self.n_failed += 1
        self._line("FAIL %s%s" % (self.name(test), self._elapsed(test)))
        self._line(_indent(self._exc_info_to_string(err, test)))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail(test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._fail(test, err)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail(subtest, err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.n_skipped += 1
        self._line("SKIP %s (%s)" % (self.name(test), reason))

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.n_passed += 1
        self._line("PASS %s (expected failure)%s" % (self.name(test), self._elapsed(test)))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.n_failed += 1
        self._line("FAIL %s (unexpected success)" % self.name(test))


def iter_tests(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from iter_tests(t)
        else:
            yield t


def load_module(path):
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run the integration tests.")
    ap.add_argument("--bin", help="directory of the built binaries (sets AP_BIN)")
    ap.add_argument("-k", dest="pattern", action="append", default=[],
                    help="only tests whose id contains this substring (repeatable)")
    ap.add_argument("--timeout", type=float,
                    default=float(os.environ.get("AP_TEST_TIMEOUT", "300")),
                    help="per-test time limit in seconds (x10 under AP_VALGRIND=1; 0 = none)")
    ap.add_argument("files", nargs="*", help="test files (default: tests/integration/test_*.py)")
    args = ap.parse_args(argv)

    if args.bin:
        os.environ["AP_BIN"] = os.path.abspath(args.bin)
    # Test modules do "from lib import harness"; the mock is found via the harness.
    sys.path.insert(0, str(TESTS))
    sys.path.insert(0, str(HERE))

    timeout = args.timeout * (10 if os.environ.get("AP_VALGRIND") == "1" else 1)
    signal.signal(signal.SIGALRM, _on_alarm)
    # A SIGTERM (e.g. from a CI timeout) should still stop the children: SystemExit runs
    # the cleanups and the harness's atexit hook; the default action would skip them.
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))

    files = [Path(f).resolve() for f in args.files] or sorted(HERE.glob("test_*.py"))
    result = LineResult(sys.stdout, timeout)
    result.startTestRun()
    for path in files:
        try:
            mod = load_module(path)
            suite = unittest.defaultTestLoader.loadTestsFromModule(mod)
        except Exception:
            result.n_failed += 1
            result._line("FAIL import %s" % path.name)
            result._line(_indent(traceback.format_exc()))
            continue
        tests = [t for t in iter_tests(suite)
                 if not args.pattern or any(p in LineResult.name(t) for p in args.pattern)]
        # Loader errors (e.g. a syntax error in a test module) arrive as _FailedTest tests.
        if tests:
            unittest.TestSuite(tests).run(result)
    result.stopTestRun()
    print("integration: %d passed, %d failed, %d skipped"
          % (result.n_passed, result.n_failed, result.n_skipped), flush=True)
    return 1 if result.n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
