"""Cold `python app-worker.py` against a fork from the warm fork server, for the noop app.

Usage: python bench/fork.py [runs]. Prints the median and p90 wall time per task (ms), measured
through the agent's Runner (spawn, pipes, tags parsed), and the raw process start alone; for the
fork server, also the CPU per task of the agent's side, of the server and of the forked children
(on a loaded machine they count more than the wall time: the CPU is what the other tasks wait
for).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from elves.agent.forkclient import ForkServer
from elves.agent.output import OutputParts, OutputStream, Part
from elves.agent.runner import Runner, TaskSpec

APPS = Path(__file__).resolve().parent.parent / "apps" / "samples"
NOOP = TaskSpec("noop", "noop", "{}", timeout_s=30)


def _stats(name: str, samples: list[float]) -> None:
    samples.sort()
    p90 = samples[int(len(samples) * 0.9) - 1]
    print(f"{name:<40} median {statistics.median(samples):7.2f} ms   p90 {p90:7.2f} ms")


def _time(fn: object, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _ticks(pid: int) -> tuple[int, int]:
    """(the process's own CPU, its reaped children's), in clock ticks, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    argv = Runner(APPS, 1 << 20).command(NOOP)
    _stats(
        "bare: python app-worker.py (subprocess.run)",
        _time(lambda: subprocess.run(argv, capture_output=True, check=True), runs),
    )
    cold = Runner(APPS, 1 << 20)
    _stats("runner, cold interpreter per task", _time(lambda: cold.run(NOOP), runs))
    server = ForkServer()
    server.start()
    try:
        warm = Runner(APPS, 1 << 20, forkserver=server)
        result = warm.run(NOOP)
        assert result.forked and result.worker_flag == 1, result
        assert server.pid is not None
        sent: list[Part] = []

        def as_the_agent_runs_it() -> None:
            # With its output streamed, as the agent does: the noop prints only its result,
            # so nothing is sent, but every chunk goes through the output rules.
            warm.run(NOOP, output=OutputStream(OutputParts(1 << 20), sent.extend))

        own, server_before = _own_cpu_s(), _ticks(server.pid)
        _stats("runner, forked from the warm server", _time(as_the_agent_runs_it, runs))
        own, server_after = _own_cpu_s() - own, _ticks(server.pid)
        print(f"  output parts sent: {len(sent)}")
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        server_ms, child_ms = (
            (after - before) * tick_ms / runs
            for before, after in zip(server_before, server_after, strict=True)
        )
        print(
            f"  CPU per task: agent side {own * 1000 / runs:.2f} ms, server {server_ms:.2f} ms, "
            f"child {child_ms:.2f} ms"
        )
    finally:
        server.close()


if __name__ == "__main__":
    main()
