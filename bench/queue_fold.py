"""How the queue flow's own work grows with the size of a queue, without Kafka.

A fan-out then fan-in queue of N tasks (as in bench/queues.py) goes through the calls the queue
flow makes for each event (`decide` or `decide_outcome`, then `fold` and `rows.changed`): every
add, the commit, the root's outcome (which readies the other N-1 at once, in one event) and every
other outcome; then the whole log is folded at once, as the gateway does to show a queue. Prints
the CPU of each phase. What grows faster than N shows here long before a real queue of that size
would find it. Pure CPU, one process, so the machine's drift matters less than in the stack's
benchmarks.

    .venv/bin/python bench/queue_fold.py [N ...]   (default: 1000 4000 16000)
"""

from __future__ import annotations

import sys
import time

from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    TaskSucceeded,
)
from elves.streams.queues import model, rows
from elves.streams.tasks.model import Limits

LIMITS = Limits(grace_ms=5000, max_params_bytes=65536)
NOW = 1_700_000_000_000


class Flow:
    """The queue flow's calls for one queue (streams/queues/wiring.py `handle`), no Kafka."""

    def __init__(self) -> None:
        self.state: model.QueueState | None = None
        self.log: list[Event] = []  # the queue's events, as the audit holds them

    def handle(self, event: model.Command | TaskSucceeded) -> list[Event]:
        if isinstance(event, TaskSucceeded):
            out = model.decide_outcome(self.state, event)
        else:
            out = model.decide(self.state, event, NOW, limits=LIMITS)
        events = [event, *out]
        new = model.fold(events, self.state)
        rows.changed(self.state, new, events)
        self.log += events
        self.state = new
        return out


def run(n: int) -> None:
    flow = Flow()
    ids = [f"t{i:06d}" for i in range(n)]

    def add(i: int, deps: tuple[str, ...]) -> AddQueueTask:
        return AddQueueTask(f"add-{i}", NOW, "q", ids[i], "agent-1", "noop", "{}", 60, "NP", deps)

    def ok(i: int) -> TaskSucceeded:
        return TaskSucceeded(f"ok-{i}", NOW, ids[i], 1, "agent-1", 0, "ok", 1, "q")

    started = time.process_time()
    flow.handle(CreateQueue("create", NOW, "q", "noop", ""))
    flow.handle(add(0, ()))
    for i in range(1, n - 1):
        flow.handle(add(i, (ids[0],)))
    flow.handle(add(n - 1, tuple(ids[1:-1])))
    built = time.process_time()
    flow.handle(CommitQueue("commit", NOW, "q"))
    readied = flow.handle(ok(0))
    fanned = time.process_time()
    for i in range(1, n - 1):
        flow.handle(ok(i))
    flow.handle(ok(n - 1))
    ended = time.process_time()
    assert len(readied) == n - 2 and flow.state is not None and flow.state.status == "succeeded"
    # What GET /api/v1/queues/{id} does with the audit's events (and `as_of`, with some of them).
    folded = model.fold(flow.log)
    read = time.process_time()
    assert folded == flow.state
    print(
        f"{n:7d} tasks: build {(built - started) / n * 1e3:.3f} ms a task; "
        f"the root's outcome (readies {n - 2}) {(fanned - built) * 1e3:.0f} ms; "
        f"the other outcomes {(ended - fanned) / (n - 1) * 1e3:.3f} ms each; "
        f"the whole log ({len(flow.log)} events) folded {(read - ended) * 1e3:.0f} ms",
        flush=True,
    )


def main() -> None:
    for n in [int(a) for a in sys.argv[1:]] or [1000, 4000, 16000]:
        run(n)


if __name__ == "__main__":
    main()
