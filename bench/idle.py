"""What the stack costs when nothing happens: each part's CPU a second, idle, with N agents.

Starts its own broker and stack (as `bench/queues.py` does), lets it settle, then reads each
part's CPU over `--seconds`, `--rounds` times. Idle agents are most of what a broker hears, so
this is the cost a bigger fleet multiplies.

    .venv/bin/python bench/idle.py [--agents 8] [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from proc_cpu import Sampler, stack_parts

from elves.local import bench_settings, own_stack

ROOT = Path(__file__).resolve().parent.parent
SETTLE_S = 15  # the agents' first heartbeats, the streams' first commits, the watcher's catch-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = bench_settings("benchi", ROOT, heartbeat_s=2.0)
    agents = [f"benchi-agent-{i + 1}" for i in range(args.agents)]
    with own_stack(settings, agents, 4) as stack:
        time.sleep(SETTLE_S)
        parts = stack_parts(stack, settings)
        for n in range(args.rounds):
            with Sampler(parts) as cpu:
                time.sleep(args.seconds)
                used = cpu.at(time.time())
            spent = {name: used[name] - cpu.first()[name] for name in used}
            total = sum(spent.values())
            print(f"round {n + 1}: idle CPU over {args.seconds:.0f} s, in ms a second")
            for name, seconds in spent.items():
                print(f"  {name:<22} {seconds * 1000 / args.seconds:7.1f}")
            print(f"  {'all':<22} {total * 1000 / args.seconds:7.1f}")


if __name__ == "__main__":
    main()
