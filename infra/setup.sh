#!/usr/bin/env bash
# Sets up a fresh checkout (python3.11, java 17 and mvn are all it needs): the .venv with the
# project and its dev tools, and the Kafka jars. Re-running is cheap: pip runs again only when
# pyproject.toml or the set of packaged files changes.
#   PYTHON  interpreter that creates the venv (default: the fastest python3.11 on PATH, see
#           timings; python3 when there is none)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
STAMP="$VENV/.elves-install"

# Builds of one Python version differ more than versions do. On the development machine the
# distribution's python3.11 (a static, profile-optimized interpreter) ran a pure-Python loop a
# third faster than pyenv's build of 3.11 (a shared libpython, no profile), and the stack is
# mostly Python. So among the python3.11 interpreters on PATH that can make a venv, a static one
# (no libpython mapped: a shared libpython's calls go through its symbol table) comes first, and
# among those alike the one that runs a short loop fastest makes it. The choice is made again
# only when that set changes (below); remove .venv to choose again anyway.

# Prints "<interpreter> <shared>" for each python3.11 on PATH that can make a venv: its path, and
# 1 if it maps a shared libpython (its own /proc/self/maps; with no /proc, not Linux, every
# build counts as static and the loop decides).
candidates() {
    local cand exe shared
    local -A seen=()
    for cand in $(type -a -p python3.11 2>/dev/null); do
        exe="$("$cand" -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null)" ||
            continue
        [[ -v "seen[$exe]" ]] && continue
        seen[$exe]=1
        shared="$("$exe" -c 'import ensurepip, venv
try:
    print(int(any("libpython" in line for line in open("/proc/self/maps"))))
except OSError:
    print(0)' 2>/dev/null)" && echo "$exe $shared"
    done
}

# Prints "<shared> <ms> <interpreter>" for each candidate, best first: static builds (shared 0)
# before shared ones, then by the median of its best times in five rounds taken in turn. The loop
# alone could not be trusted to tell the builds apart: the machine's speed drifts within seconds,
# and even the median of the rounds chose pyenv's shared build twice (22 ms against Debian's 25,
# then 22 against 27), where the next runs gave Debian's the lead by a quarter and more. Whether a
# build is shared is a fact of it, not a moment of the machine. The venv's interpreter is named in
# bench/queues.py's output; PYTHON= settles it.
timings() {
    local exe is_shared ms round seen=()
    local -A times=() shared=()
    while read -r exe is_shared; do
        times[$exe]=""
        shared[$exe]="$is_shared"
        seen+=("$exe")
    done < <(candidates)
    for round in 1 2 3 4 5; do
        for exe in ${seen[@]+"${seen[@]}"}; do
            ms="$("$exe" -c '
import time, timeit
def loop():
    d = {}
    for i in range(100_000):
        d[i % 1000] = d.get(i % 1000, 0) + len(str(i))
print(int(min(timeit.repeat(loop, number=1, repeat=5, timer=time.process_time)) * 1e6))')" ||
                continue
            times[$exe]+="$ms "
        done
    done
    for exe in ${seen[@]+"${seen[@]}"}; do
        [[ -n "${times[$exe]}" ]] || continue
        # shellcheck disable=SC2086  # the times are words
        ms="$(printf '%s\n' ${times[$exe]} | sort -n |
            awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')"
        echo "setup: $exe ran the loop in $((ms / 1000)) ms (the median of its rounds' best)," \
            "$( ((shared[$exe])) && echo "a shared libpython" || echo "static")" >&2
        echo "${shared[$exe]} $ms $exe"
    done | sort -k1,1n -k2,2n
}

# What the venv's interpreter was chosen from: `PYTHON=<path>` when given (kept from then on),
# else the python3.11 on PATH. A venv made before the choice existed, or before another python3.11 came
# on PATH, has another record (or none): the choice is made again, and the venv made anew if
# another build wins clearly (a venv kept from before had the benchmarks run on the slower build
# for days, unseen).
CHOSEN="$VENV/.elves-python"
if [[ -n "${PYTHON:-}" ]]; then
    record="PYTHON=$PYTHON"
else
    # The python3.11 on PATH as they are found, not resolved: this runs at every setup, and
    # asking each (a pyenv shim is slow) what it runs took 0.5 s of setup's 0.6.
    record="$(type -a -p python3.11 2>/dev/null || true)"
fi
kept="$(cat "$CHOSEN" 2>/dev/null || true)"
best=""
if [[ -x "$VENV/bin/python" && -z "${PYTHON:-}" && "$kept" != PYTHON=* && "$kept" != "$record" ]]
then
    have="$("$VENV/bin/python" -c 'import os, sys; print(os.path.realpath(sys.executable))')"
    ranked="$(timings)"
    read -r best_shared best_ms best <<<"$ranked" || true
    read -r have_shared have_ms <<<"$(awk -v exe="$have" '$3 == exe { print $1, $2 }' <<<"$ranked")"
    # Remade for a static build in place of a shared one, or else only for a clear gain (a tenth):
    # a near tie must not make it anew at every change.
    if [[ -n "$best" && "$best" != "$have" && -n "$have_ms" ]] &&
        ((best_shared < have_shared || best_ms * 10 < have_ms * 9)); then
        echo "setup: $VENV was made with $have; remaking it with $best (static where it was shared, or clearly faster)" >&2
        rm -rf "$VENV"
    else
        echo "$record" >"$CHOSEN"
    fi
fi
if [[ ! -x "$VENV/bin/python" ]]; then
    if [[ -z "${PYTHON:-}" && -z "$best" ]]; then
        read -r _ _ best <<<"$(timings)" || true
    fi
    python="${PYTHON:-${best:-python3}}"
    echo "setup: creating $VENV with $python" >&2
    "$python" -m venv "$VENV"
    echo "$record" >"$CHOSEN"
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
