"""CPU time of a benchmark's stack, by part, read from /proc: where a run's CPU went.

A part is a set of root processes and everything under them. A process counts its own time and
its reaped children's (`cutime`, `cstime`): a fork server waits for each app process it forked,
so the apps' time is there too. A process that ends between two readings takes its time with
it unless a live parent reaped it; the stack's parts all live for the whole run.

On this machine the center (Kafka, streams, gateway) and the simulated fleet (every agent, its
fork server and the apps) share two cores, so the fleet's CPU slows the center's wall clock.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            tree[int(fields[1])].append(int(entry))
    return tree


def _seconds(pid: int) -> float:
    fields = _stat(pid)
    if fields is None:
        return 0.0
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime + cutime + cstime) / TICK


def cpu_by_part(parts: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each part: its roots and every live process under them."""
    tree = _children()
    used: dict[str, float] = {}
    for name, roots in parts.items():
        todo, total = list(roots), 0.0
        while todo:
            pid = todo.pop()
            total += _seconds(pid)
            todo.extend(tree.get(pid, []))
        used[name] = total
    return used


def report(before: dict[str, float], after: dict[str, float], tasks: int) -> list[str]:
    """One line per part, and the total: CPU ms per task over the run."""
    lines = []
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    for name, seconds in spent.items():
        lines.append(f"  {name:<28} {seconds:6.2f} s  {seconds * 1000 / tasks:5.2f} ms/task")
    total = sum(spent.values())
    lines.append(f"  {'all':<28} {total:6.2f} s  {total * 1000 / tasks:5.2f} ms/task")
    return lines
