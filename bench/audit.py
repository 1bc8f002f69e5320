"""Audit store throughput into embedded chDB: rows/s per batch size, replay cost, task lookup,
the queue and task lists, and what one watcher insert costs as the table grows, for random ids,
for a mix, and for the platform's.

    python bench/audit.py [--rows 200000] [--grow 0,1000000,4000000]

The watcher checks which ids of a batch are stored before it inserts it (`AuditStore.insert`).
The table is ordered by `event_id`, so that check reads the granules its ids fall in: the newest
ones for time-ordered ids (UUIDv7, what `new_id` makes), every one for random ids (v4, what it
made before). An embedded store answers for the time-ordered ids it wrote itself without the
check (`api/recent_ids.py`); "looked up" is the cost with the check, as with a server's store.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import tempfile
import time
from collections.abc import Callable

from elves.api import tasks as tasks_api
from elves.api.audit import AuditRow, AuditStore
from elves.schemas.events import (
    TaskDispatched,
    TaskFailed,
    TaskSubmitted,
    TaskSucceeded,
    new_id,
    random_id,
)

T0 = 1_700_000_000_000
PAYLOAD = '{"worker_message": "' + "x" * 300 + '"}'
GROW_BATCH = 500  # a watcher's insert in a busy half second (ELVES_WATCHER_FLUSH)
GROW_INSERTS = 20  # timed inserts at each size


def rows(n: int, make_id: Callable[[], str] = new_id, first: int = 0) -> list[AuditRow]:
    out = []
    for i in range(first, first + n):
        task = f"task-{i // 6}"  # about six events per task, as a task's lifecycle has
        out.append(
            AuditRow(
                make_id(),
                "TaskStarted",
                "elves.tasks",
                i % 4,
                i,
                T0 + i,
                "agent-1",
                task,
                "demo",
                PAYLOAD,
            )  # fmt: skip
        )
    return out


def throughput(total: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"chdb://{tmp}/audit")
        data = rows(total)
        for batch in (50, 500, 5000):
            part, data = data[: total // 3], data[total // 3 :]
            start = time.perf_counter()
            for i in range(0, len(part), batch):
                store.insert(part[i : i + batch])
            took = time.perf_counter() - start
            print(f"batch {batch:>5}: {len(part) / took:>9.0f} rows/s ({len(part)} rows)")
        stored = store.count()
        _, sample = store.query("SELECT event_id, task_id FROM events LIMIT 500")
        replay = [AuditRow(r[0], "TaskStarted", "elves.tasks", 0, 0, T0, "a", r[1], "d", "{}")
                  for r in sample]  # fmt: skip
        start = time.perf_counter()
        assert store.insert(replay) == 0
        took_ms = 1000 * (time.perf_counter() - start)
        print(f"replay of 500 stored ids at {stored} rows: {took_ms:.1f} ms")
        start = time.perf_counter()
        n = 100
        for i in range(n):
            store.task_events(f"task-{i * 97}")
        each_ms = 1000 * (time.perf_counter() - start) / n
        print(f"task_events at {stored} rows: {each_ms:.2f} ms each")
        start = time.perf_counter()
        store.count()
        print(f"count() at {stored} rows: {1000 * (time.perf_counter() - start):.1f} ms")
        queue_list(store)
        task_list(store)
        store.close()


def queue_list(store: AuditStore, queues: int = 2000, tasks: int = 10) -> None:
    """`GET /api/v1/queues`'s statement among the task rows: `queues` queues, one a minute up to
    now, each created, with `tasks` tasks added and succeeded, and finished."""
    now = int(time.time() * 1000)
    made = []
    for q in range(queues):
        queue_id, at = f"queue-{q}", now - (queues - q) * 60_000
        made.append(row_of("QueueCreated", at, queue_id, app="demo", payload='{"name": "n"}'))
        for t in range(tasks):
            task_id = f"{queue_id}-{t}"
            made.append(row_of("QueueTaskAdded", at + t, queue_id, task_id))
            made.append(row_of("TaskSucceeded", at + 100 + t, queue_id, task_id))
        made.append(row_of("QueueFinished", at + 200, queue_id, payload='{"status": "failed"}'))
    store.insert_new(made)
    stored = store.count()
    for hours, limit in ((24, 50), (24, 500), (2, 50)):
        start = time.perf_counter()
        found = store.queues(now - hours * 3_600_000, limit)
        took_ms = 1000 * (time.perf_counter() - start)
        assert len(found) == limit and found[0]["status"] == "failed", found[:1]
        print(f"queue list at {stored} rows, {hours} h back, {limit} queues: {took_ms:.0f} ms")


def task_list(store: AuditStore, tasks: int = 20_000, agents: int = 50) -> None:
    """`GET /api/v1/tasks`'s two statements among the other rows: `tasks` tasks over the last
    day, each submitted, dispatched and ended (one in ten failed), on `agents` agents. The list
    finds a page's ids, reads their events in one query and folds each task (api/tasks.py)."""
    now = int(time.time() * 1000)
    made = []
    for t in range(tasks):
        at, task_id, agent = now - (tasks - t) * 4_000, f"listed-{t}", f"agent-{t % agents}"
        submitted = TaskSubmitted(new_id(), at, task_id, agent, "demo", "f", "{}", 60)
        dispatched = TaskDispatched(new_id(), at + 1, task_id, 1, agent, "demo", "f", "{}", 60,
                                    at + 65_000)  # fmt: skip
        kind = TaskFailed if t % 10 == 0 else TaskSucceeded
        ended = kind(new_id(), at + 20, task_id, 1, agent, 1, "ok", 9)
        for event in (submitted, dispatched, ended):
            payload = json.dumps(dataclasses.asdict(event))
            made.append(
                AuditRow(
                    event.event_id,
                    type(event).__name__,
                    "elves.tasks",
                    0,
                    0,
                    event.occurred_at,
                    agent,
                    task_id,
                    "demo",
                    payload,
                )  # fmt: skip
            )
    store.insert_new(made)
    stored = store.count()
    day_ago = now - 24 * 3_600_000
    for name, limit, extra in (
        ("50 tasks", 50, {}),
        ("500 tasks", 500, {}),
        ("50 failed", 50, {"had": ("TaskFailed",)}),
        ("50 of one agent", 50, {"agents": ["agent-7"]}),
    ):
        start = time.perf_counter()
        ids = store.task_ids(day_ago, limit, **extra)
        found_ms = 1000 * (time.perf_counter() - start)
        events = store.tasks_events(ids)
        folded = [tasks_api.summary(task_id, events[task_id]) for task_id in ids]
        took_ms = 1000 * (time.perf_counter() - start)
        assert len(ids) == limit and all(f is not None for f in folded), (name, len(ids))
        print(
            f"task list at {stored} rows, a day back, {name}: {took_ms:.0f} ms "
            f"({found_ms:.0f} to find them, the rest to read and fold them)"
        )


def row_of(
    kind: str, at: int, queue_id: str, task_id: str = "", app: str = "", payload: str = "{}"
) -> AuditRow:
    return AuditRow(new_id(), kind, "elves.queues", 0, 0, at, "", task_id, app, payload, queue_id)


def growth(
    sizes: list[int], name: str, make_id: Callable[[], str], sole_writer: bool = True
) -> None:
    """Fill a table to each size (without the check), then time watcher inserts of fresh rows."""
    with tempfile.TemporaryDirectory() as tmp:
        store = AuditStore(f"chdb://{tmp}/audit", sole_writer=sole_writer)
        held = 0
        for size in sizes:
            while held < size:
                step = min(size - held, 200_000)
                store.insert_new(rows(step, make_id, held))
                held += step
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(GROW_INSERTS):
                assert store.insert(rows(GROW_BATCH, make_id, held)) == GROW_BATCH
                held += GROW_BATCH
            cpu_ms = 1000 * (time.process_time() - cpu) / GROW_INSERTS
            wall_ms = 1000 * (time.perf_counter() - wall) / GROW_INSERTS
            print(
                f"{name:<22} at {size:>9} rows: an insert of {GROW_BATCH} costs "
                f"{cpu_ms:6.1f} ms CPU, {wall_ms:6.1f} ms wall"
            )
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--grow", default="0,1000000,4000000", help="table sizes; empty: skip")
    args = parser.parse_args()
    throughput(args.rows)
    if args.grow:
        sizes = sorted(int(s) for s in args.grow.split(","))
        growth(sizes, "random ids (v4)", random_id)
        # A few random ids among time-ordered ones are enough to make it grow again: each one
        # reads its own granule (why every id the platform makes is time-ordered).
        count = itertools.count()
        growth(sizes, "one in nine random", lambda: new_id() if next(count) % 9 else random_id())
        growth(sizes, "v7, looked up", new_id, sole_writer=False)
        growth(sizes, "time-ordered ids (v7)", new_id)


if __name__ == "__main__":
    main()
