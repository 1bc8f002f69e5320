"""What a task prints, through the real stack to a follower: how late a line is read, and how
fast a burst gets through.

Starts its own broker and stack (one agent), then:
- sparse: a task prints a stamped line every `--every` seconds; a follower
  (`GET /api/v1/tasks/{id}/output?follow=true`) reads them, and each line's lateness is the time
  it was read minus the time it was printed (one machine, one clock);
- burst: a task prints `--lines` lines at once; the time from its submission to the follower
  holding the last one, and the parts they came in;
- ends: `--execs` instant tasks that print three lines, each followed as `elves exec --output`
  does (the CLI's own code) from the moment its reply came: how long after the result the
  output and the task's end are all printed.

    .venv/bin/python bench/output.py [--ticks 20] [--every 1.0] [--lines 50000] [--execs 20]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path
from typing import Any

from elves.local import Stack, bench_settings, own_stack, wait_for
from elves.output_cli import print_before_result

ROOT = Path(__file__).resolve().parent.parent
AGENT = "bencho-agent-1"


def submit(stack: Stack, params: dict[str, Any], timeout: int) -> str:
    reply = stack.client.post(
        "/api/v1/queues/quick",
        json={
            "app": "sleeper",
            "agent": AGENT,
            "func": "tick",
            "params": params,
            "timeout": timeout,
        },
    )
    reply.raise_for_status()
    return str(reply.json()["task_id"])


def follow(stack: Stack, task_id: str) -> list[tuple[float, dict[str, Any]]]:
    """Each part with the Unix time it was read, until the task's end line."""
    path = f"/api/v1/tasks/{task_id}/output"
    wait_for("the task in the audit", lambda: stack.client.get(path).status_code == 200, 30)
    read = []
    with stack.client.stream("GET", path, params={"follow": "true"}, timeout=None) as reply:
        for line in reply.iter_lines():
            if line.strip():
                record = json.loads(line)
                if "ended" in record:
                    return read
                read.append((time.time(), record))
    raise RuntimeError("the follow ended before the task did")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sparse(stack: Stack, ticks: int, every: float) -> None:
    task_id = submit(stack, {"n": ticks, "every": every, "stamp": True}, int(ticks * every) + 60)
    late_ms = []
    for read_at, part in follow(stack, task_id):
        for line in part["data"].splitlines():
            if line.startswith("tick "):
                late_ms.append((read_at - float(line.split()[2])) * 1000)
    if len(late_ms) != ticks:
        raise RuntimeError(f"read {len(late_ms)} of {ticks} lines")
    print(
        f"sparse: {ticks} lines, one each {every:g} s; from print to a follower's read, ms: "
        f"p50 {statistics.median(late_ms):.0f}  p90 {pct(late_ms, 0.9):.0f}  "
        f"max {max(late_ms):.0f}"
    )


def burst(stack: Stack, lines: int) -> None:
    started = time.time()
    task_id = submit(stack, {"n": lines, "every": 0}, 120)
    parts = follow(stack, task_id)
    text = "".join(p["data"] for _, p in parts if p["stream"] == "stdout")
    if text.count("\n") != lines:
        raise RuntimeError(f"read {text.count(chr(10))} of {lines} lines")
    last_read = parts[-1][0]
    size = len(text.encode())
    print(
        f"burst: {lines} lines ({size / 1024:.0f} KiB) in {len(parts)} parts; from submission "
        f"to the follower holding the last: {last_read - started:.2f} s"
    )


def ends(stack: Stack, runs: int) -> None:
    waits_ms = []
    for _ in range(runs):
        reply = stack.client.post(
            "/api/v1/tasks/instant",
            json={"agent": AGENT, "app": "sleeper", "func": "tick", "params": {"every": 0}},
        )
        reply.raise_for_status()
        replied = time.perf_counter()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
            print_before_result(stack.client, reply.json()["task_id"])
        waits_ms.append((time.perf_counter() - replied) * 1000)
        if printed.getvalue() != "tick 1\ntick 2\ntick 3\n":
            raise RuntimeError(f"printed {printed.getvalue()!r}")
    print(
        f"ends: {runs} instant tasks of three lines; from the result to the output printed "
        f"whole, ms: p50 {statistics.median(waits_ms):.0f}  p90 {pct(waits_ms, 0.9):.0f}  "
        f"max {max(waits_ms):.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--lines", type=int, default=50000)
    parser.add_argument("--execs", type=int, default=20)
    args = parser.parse_args()
    settings = bench_settings("bencho", ROOT, heartbeat_s=2.0)
    with own_stack(settings, [AGENT]) as stack:
        sparse(stack, args.ticks, args.every)
        burst(stack, args.lines)
        ends(stack, args.execs)


if __name__ == "__main__":
    main()
