"""The cron clock's own CPU per fire, without Kafka: N one-second crons, S seconds of ticks.

It runs the real `streams.cron.wiring.Crons` (decide, apply, encode, the fire's task command)
and counts what it would send instead of sending it, so the number is the fold's cost alone;
`bench/cron.py` measures the same through the real stack.

    .venv/bin/python bench/cron_clock.py [--crons 1000] [--seconds 5] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from typing import Any

from elves.config import Settings
from elves.local import every_second_cron
from elves.streams.context import FoldContext
from elves.streams.cron.wiring import Crons


class Counting:
    """Stands in for the loop: owns every partition, counts sends."""

    owned = {0, 1, 2, 3}

    def __init__(self) -> None:
        self.sent = 0

    def send(self, *_args: Any, **_kwargs: Any) -> None:
        self.sent += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crons", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()

    clock = [int(time.time()) * 1000]
    sink = Counting()
    ctx = FoldContext(
        sink,  # type: ignore[arg-type]
        Settings(),
        None,  # type: ignore[arg-type]  # center crons without a selector never ask it
        lambda _app, _agent: True,
        None,  # type: ignore[arg-type]  # only agent crons are signed
        lambda: clock[0],
    )
    crons = Crons(ctx)
    for _ in range(args.crons):
        crons.on_command(every_second_cron(clock[0]))
    sink.sent = 0

    def run() -> None:
        for _ in range(args.seconds):
            clock[0] += 1000
            crons.clock()

    started = time.perf_counter()
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run)
        pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    else:
        run()
    took = time.perf_counter() - started
    fires = args.crons * args.seconds
    print(f"{fires} fires in {took:.2f} s: {took / fires * 1e6:.0f} us per fire, {sink.sent} sends")


if __name__ == "__main__":
    main()
