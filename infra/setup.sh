#!/usr/bin/env bash
# Sets up a fresh checkout (python3.11, java 17 and mvn are all it needs): the .venv with the
# project and its dev tools, and the Kafka jars. Re-running is cheap: pip runs again only when
# pyproject.toml or the set of packaged files changes.
#   PYTHON  interpreter that creates the venv (default python3)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.elves-install"

if [[ ! -x "$VENV/bin/python" ]]; then
    echo "setup: creating $VENV" >&2
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' ||
    { echo "setup: $VENV needs Python 3.11 or newer; remove it and set PYTHON" >&2; exit 1; }

# Strict editable mode links each packaged file into build/__editable__: a file added later is
# invisible until reinstalled, so the stamp covers the list of files as well as pyproject.toml.
packaged_files() {
    if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files --cached --others --exclude-standard -- \
            '*.py' '*.pyi' '*.avsc' '*.html' '*py.typed' | sort -u
    else
        find . \( -path ./.venv -o -path ./build -o -path ./state -o -path ./.git \) -prune -o \
            -type f \( -name '*.py' -o -name '*.pyi' -o -name '*.avsc' -o -name '*.html' \
            -o -name py.typed \) -print | sed 's:^\./::' | sort -u
    fi
}
want="$({ "$VENV/bin/python" --version; cat pyproject.toml; packaged_files; } |
    "$VENV/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"

if [[ ! -f "$STAMP" || "$(cat "$STAMP")" != "$want" ]]; then
    echo "setup: installing elves[dev] into $VENV" >&2
    rm -f "$STAMP"
    log="$VENV/pip-install.log"
    # setuptools warns at length on every strict editable build: keep it unless pip fails.
    # mypy follows strict editable links; the default (a finder hook) hides elves.* from it.
    if ! { "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip &&
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
            -e '.[dev]' --config-settings editable_mode=strict; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: pip install failed (output above, also in $log)" >&2
        exit 1
    fi
    echo "$want" >"$STAMP"
fi

bash "$ROOT/infra/kafka.sh" fetch
