#!/usr/bin/env bash
# The gates, the same locally and in CI: ruff, ruff format, mypy, pytest (extra args go to
# pytest). Every gate runs; the exit code is non-zero if any failed. The test session's broker
# (started by tests/conftest.py) is stopped at the end.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash infra/setup.sh

# The same defaults as tests/conftest.py, so the trap stops the broker the tests started.
TEST_KAFKA="${ELVES_TEST_KAFKA:-127.0.0.1:19192}"
TEST_STATE="${ELVES_TEST_STATE:-$ROOT/state/test}"
stop_test_broker() {
    ELVES_KAFKA="$TEST_KAFKA" ELVES_STATE_DIR="$TEST_STATE" bash infra/kafka.sh stop >/dev/null ||
        echo "test: could not stop the test broker on $TEST_KAFKA" >&2
}
trap stop_test_broker EXIT

BIN="$ROOT/.venv/bin"
failed=()
gate() { # name command...
    local name="$1"
    shift
    echo "== $name" >&2
    "$@" || failed+=("$name")
}
gate "ruff check" "$BIN/ruff" check .
gate "ruff format" "$BIN/ruff" format --check .
gate "mypy" "$BIN/mypy" -p elves
# pytest exits 5 when it collected no tests: that is a failure too, as is any non-zero code.
gate "pytest" "$BIN/pytest" -q "$@"

if ((${#failed[@]})); then
    echo "test: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test: all gates passed" >&2
