"""Compare two revisions on `bench/queues.py`: overhead and CPU a task by part, side by side.

This machine's speed drifts: the same code has used from 6 to 10 ms of CPU a task within an
hour, so two runs made one after the other compare the machine as much as the code. Two ways to
take that out:

- interleaved (default): A B B A, `--rounds` times, each run of `--queues` queues;
- `--together`: both revisions at once, each on its own broker, so both see the same phase of
  the machine (their overheads are then those of a shared machine: compare their CPU).

Each revision gets a git worktree of its own under `--work` with its own venv (made by
`infra/setup.sh` with the Python this script runs on, so that both sides run one build; kept
for the next comparison). What moves less than the spread between runs
of one side is noise: the per-run lines are printed so that can be judged.

    .venv/bin/python bench/compare.py REV_A REV_B [--rounds 2] [--queues 3] [--together]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("kafka", "streams", "gateway and watcher", "fleet (agents, apps)", "all")
OVERHEAD = re.compile(r"scheduling overhead per task: ([\d.]+) ms")
MACHINE = re.compile(r"machine: the reference loop took (\d+) ms")
PART = re.compile(r"^  (\S.*?)\s+[\d.]+ s\s+([\d.]+) ms/task$")
PORTS = {"A": "19492", "B": "19592"}  # one broker each when run together

Numbers = dict[str, list[float]]  # "overhead" or a part -> one value a queue


def worktree(work: Path, rev: str) -> Path:
    """A checkout of `rev` with its venv, made once and reused."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    tree = work / sha[:12]
    venv_python = tree / ".venv" / "bin" / "python"
    python = os.path.realpath(sys.executable)
    if venv_python.exists() and os.path.realpath(venv_python) != python:
        # Made with another build: setup's own choice is a timing, which this machine's noise
        # can tip (it once chose pyenv's build, a fifth slower, for one side only).
        print(f"{tree}'s venv runs {os.path.realpath(venv_python)}: making it anew", flush=True)
        shutil.rmtree(tree / ".venv")
    if not venv_python.exists():
        if not tree.exists():
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(tree), sha], cwd=ROOT, check=True
            )
        print(f"setting up {rev} ({sha[:12]}) in {tree} with {python}", flush=True)
        subprocess.run(
            ["bash", "infra/setup.sh"],
            cwd=tree,
            check=True,
            stdout=subprocess.DEVNULL,
            env={**os.environ, "PYTHON": python},  # both sides on the build this runs on
        )
    return tree


def _bench(tree: Path) -> str:
    """The queue benchmark of that revision: `bench/queues.py`, or `bench/queue.py` in the few
    revisions that had issue 3's name for it (it shadowed the standard `queue` module for every
    script in bench/: DECISIONS.md)."""
    return "bench/queue.py" if (tree / "bench" / "queue.py").exists() else "bench/queues.py"


def start(tree: Path, queues: int, port: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(tree / ".venv/bin/python"), _bench(tree), "--queues", str(queues)],
        cwd=tree,
        env={**os.environ, "BENCH_KAFKA_PORT": port},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def parse(output: str) -> Numbers:
    numbers: Numbers = defaultdict(list)
    for line in output.splitlines():
        if m := OVERHEAD.search(line):
            numbers["overhead"].append(float(m.group(1)))
        elif m := MACHINE.search(line):  # revisions before the bench printed it have none
            numbers["loop"].append(float(m.group(1)))
        elif (m := PART.match(line)) and m.group(1) in PARTS:
            numbers[m.group(1)].append(float(m.group(2)))
    return numbers


def finish(run: subprocess.Popen[str], side: str) -> Numbers:
    return judge(side, run.communicate()[0], run.returncode)


def judge(side: str, output: str, returncode: int) -> Numbers:
    numbers = parse(output)
    if returncode != 0 or not numbers["overhead"]:
        sys.exit(f"side {side}: bench/queues.py failed ({returncode}):\n{output[-3000:]}")
    loop = f", reference loop {numbers['loop']} ms" if numbers["loop"] else ""
    print(
        f"  {side}: overhead {numbers['overhead']} ms, CPU {numbers['all']} ms a task{loop}",
        flush=True,
    )
    return numbers


def summary(side: str, numbers: Numbers) -> str:
    cells = []
    for name in ("overhead", *PARTS):
        values = numbers[name]
        cells.append(f"{name.split(' ')[0]} {statistics.mean(values):.2f}")
    loop = f"; reference loop {statistics.mean(numbers['loop']):.0f} ms" if numbers["loop"] else ""
    return (
        f"{side}: " + ", ".join(cells) + f"  (ms a task, mean of {len(numbers['all'])} queues)"
    ) + loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rev_a")
    parser.add_argument("rev_b")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--queues", type=int, default=3, help="queues a run")
    parser.add_argument("--together", action="store_true", help="run both sides at once")
    parser.add_argument("--work", type=Path, default=ROOT / "state" / "compare")
    args = parser.parse_args()
    trees = {"A": worktree(args.work, args.rev_a), "B": worktree(args.work, args.rev_b)}
    totals: dict[str, Numbers] = {"A": defaultdict(list), "B": defaultdict(list)}

    def add(side: str, numbers: Numbers) -> None:
        for name, values in numbers.items():
            totals[side][name] += values

    for n in range(args.rounds):
        print(f"round {n + 1} of {args.rounds}", flush=True)
        if args.together:
            runs = {s: start(trees[s], args.queues, PORTS[s]) for s in ("A", "B")}
            # Both ended before either is judged: a failed side exits, and the other side's
            # run (its broker and stack) would be left running on its port.
            outputs = {s: run.communicate()[0] for s, run in runs.items()}
            for side, run in runs.items():
                add(side, judge(side, outputs[side], run.returncode))
        else:
            for side in ("A", "B", "B", "A"):
                add(side, finish(start(trees[side], args.queues, PORTS["A"]), side))
    print(summary(f"A {args.rev_a}", totals["A"]))
    print(summary(f"B {args.rev_b}", totals["B"]))


if __name__ == "__main__":
    main()
