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
import platform
import sys
import threading
import time
import timeit
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elves.config import Settings
    from elves.local import Stack

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


def own_and_reaped(pid: int) -> tuple[float, float]:
    """(a process's own CPU seconds, its reaped children's), 0 for one that is gone."""
    fields = _stat(pid)
    if fields is None:
        return 0.0, 0.0
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / TICK, (cutime + cstime) / TICK


def children_of(pid: int) -> list[int]:
    return _children().get(pid, [])


def stack_parts(stack: Stack, settings: Settings) -> dict[str, list[int]]:
    """The parts of a benchmark's own stack (`elves.local.own_stack`) by their root processes."""
    broker = int((settings.state_dir / "kafka" / "broker.pid").read_text())
    return {
        "kafka": [broker],
        "streams": [p.popen.pid for p in stack.processes if p.name == "streams"],
        "gateway and watcher": [p.popen.pid for p in stack.processes if p.name == "gateway"],
        "fleet (agents, apps)": [
            p.popen.pid for p in stack.processes if p.name.startswith("agent-")
        ],
    }


def members(parts: dict[str, list[int]]) -> dict[str, list[int]]:
    """Each part's processes now: its roots and every live process under them."""
    tree = _children()
    found: dict[str, list[int]] = {}
    for name, roots in parts.items():
        todo, pids = list(roots), []
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(tree.get(pid, []))
        found[name] = pids
    return found


def cpu_of(found: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds used so far by each part's processes (from `members`)."""
    return {name: sum(_seconds(pid) for pid in pids) for name, pids in found.items()}


class Sampler:
    """Reads the CPU of the parts' long-lived processes every `every_s`, in a thread, so that a
    run's CPU can be read as of the moment it ended, found out later. The processes are listed
    once (a scan of /proc is costly): an app process is counted through the fork server that
    reaps it, and one that ends unreaped while sampling takes its time with it."""

    def __init__(self, parts: dict[str, list[int]], every_s: float = 0.05) -> None:
        self._found = members(parts)
        self._every_s = every_s
        self._samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._samples.append((time.time(), cpu_of(self._found)))
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            self._samples.append((time.time(), cpu_of(self._found)))

    def first(self) -> dict[str, float]:
        return self._samples[0][1]

    def at(self, when: float) -> dict[str, float]:
        """The first reading at or after `when` (Unix seconds), else the last one."""
        for taken, used in self._samples:
            if taken >= when:
                return used
        return self._samples[-1][1]


def report(before: dict[str, float], after: dict[str, float], tasks: int) -> list[str]:
    """One line per part, and the total: CPU ms per task over the run."""
    lines = []
    spent = {name: after[name] - before.get(name, 0.0) for name in after}
    for name, seconds in spent.items():
        lines.append(f"  {name:<28} {seconds:6.2f} s  {seconds * 1000 / tasks:5.2f} ms/task")
    total = sum(spent.values())
    lines.append(f"  {'all':<28} {total:6.2f} s  {total * 1000 / tasks:5.2f} ms/task")
    return lines


def _reference_loop() -> None:
    counts: dict[int, int] = {}
    for i in range(100_000):
        counts[i % 1000] = counts.get(i % 1000, 0) + len(str(i))


def machine_speed_ms() -> float:
    """CPU ms of a fixed pure-Python loop (`infra/setup.sh` times the same one to pick the
    interpreter), the best of three: how fast the machine is right now. This one has run it in
    23 ms and, hours later, in 40 to 55 ms (pyenv's 3.11.7), and a run's CPU a task moves with
    it, so a benchmark's numbers mean little without it. Its number is the interpreter's as much
    as the machine's (Debian's 3.11.2 here: 17 to 30 ms, when pyenv's took 21 to 38): compare
    it only between runs of one interpreter (`interpreter()` names it)."""
    return 1000 * min(timeit.repeat(_reference_loop, number=1, repeat=3, timer=time.process_time))


def interpreter() -> str:
    """Which Python runs the benchmark (and the stack it starts, from the same venv): builds of
    one version differ by a third (`infra/setup.sh`), and a venv made before it chose keeps
    the build it was made with."""
    return f"python {platform.python_version()} ({os.path.realpath(sys.executable)})"


def machine_ticks() -> tuple[int, int, int]:
    """The whole machine's (idle, stolen, all) clock ticks so far, from /proc/stat's cpu line:
    idle (with iowait) says whether a run had CPU to spare; stolen is time the host gave the
    VM's cores to someone else, which a process's own CPU time does not show."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is already in user and nice)
    idle, steal = fields[3] + fields[4], fields[7]
    return idle, steal, sum(fields[:8])


def machine_share(
    before: tuple[int, int, int], after: tuple[int, int, int], stack_s: float | None = None
) -> str:
    """`machine_ticks` between two readings, as a line: how idle the cores were and how much
    of them the host took; with the stack's own CPU seconds meanwhile (`stack_s`), how much
    went to everything else. That share should be small: a leftover broker (a hand-run test
    session's) or a CI run beside the benchmark once skewed its numbers unseen."""
    idle, steal, total = (b - a for a, b in zip(before, after, strict=True))
    total = max(total, 1)
    line = f"cores idle {100 * idle / total:.0f}%, "
    line += f"taken by the host (steal) {100 * steal / total:.0f}%"
    if stack_s is not None:
        others = max(0.0, (total - idle - steal) / TICK - stack_s)
        line += f", used outside the stack (this script too) {100 * others * TICK / total:.0f}%"
    return line
