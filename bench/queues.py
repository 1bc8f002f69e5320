"""A fan-out then fan-in queue through the real stack: total time and scheduling overhead.

One root task, N-2 tasks that depend on it, one task that depends on all of them; the noop app
on 8 agents. Starts its own broker and stack, prints the numbers, stops it all. The queue is
built in batch calls, and the clock starts once the audit holds the whole build.

The clock runs from the commit's request to the moment `QueueFinished` was written to Kafka (its
record's timestamp, read off the `queues` topic): the audit would add its own flush delay.

    .venv/bin/python bench/queues.py [--tasks 1000] [--agents 8] [--workers 4] [--queues 1]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from proc_cpu import (
    Sampler,
    interpreter,
    machine_share,
    machine_speed_ms,
    machine_ticks,
    report,
    stack_parts,
)

from elves.config import Settings
from elves.kafka import consumer
from elves.local import Stack, bench_settings, own_stack, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import QueueFinished

ROOT = Path(__file__).resolve().parent.parent
BATCH = 1000  # tasks a call (the gateway's most)


def at_the_end(settings: Settings, topic: str) -> Consumer:
    """A consumer of every partition of `topic`, from what is written after now."""
    # Few fetches: the record's timestamp is the time measured, so reading it late costs the
    # measure nothing, while a fetch each time a record lands was a fifth of the broker's fetches.
    reader = consumer(
        settings,
        f"bench-{uuid.uuid4().hex[:8]}",
        **{"fetch.wait.max.ms": 200, "fetch.min.bytes": 1 << 20},
    )
    partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
    ends = []
    for p in partitions:
        _, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        ends.append(TopicPartition(topic, p, high))
    reader.assign(ends)
    return reader


def finished_at(reader: Consumer, queue_id: str, timeout: float) -> float:
    """When the queue's `QueueFinished` was written (Unix seconds, the record's timestamp)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = reader.poll(0.1)
        if msg is None or msg.error():
            continue
        event = CODEC.decode(msg.value())
        if isinstance(event, QueueFinished) and event.queue_id == queue_id:
            return float(msg.timestamp()[1]) / 1000
    raise TimeoutError(f"queue {queue_id} did not finish within {timeout:.0f} s")


def one_queue(
    stack: Stack, settings: Settings, agents: list[str], args: argparse.Namespace
) -> tuple[float, float]:
    """Build, commit and time one queue on the running stack; print its numbers; return its
    scheduling overhead per task (ms) and the machine's speed just before (`machine_speed_ms`)."""
    client = stack.client
    queue_id = client.post("/api/v1/queues", json={"app": "noop"}).json()["queue_id"]
    ids = [f"{queue_id[:8]}-t{i:05d}" for i in range(args.tasks)]  # task ids are global

    def task(i: int, deps: list[str]) -> dict[str, Any]:
        return {
            "task_id": ids[i],
            "agent": agents[i % len(agents)],
            "func": "noop",
            "depends_on": deps,
            "timeout": 60,
        }

    built = time.perf_counter()
    tasks = [task(0, []), *(task(i, [ids[0]]) for i in range(1, args.tasks - 1))]
    tasks.append(task(args.tasks - 1, ids[1:-1]))
    for start in range(0, len(tasks), BATCH):  # in order: the fan-in task comes last
        reply = client.post(
            f"/api/v1/queues/{queue_id}/tasks/batch", json={"tasks": tasks[start : start + BATCH]}
        )
        if reply.status_code != 201:
            raise RuntimeError(f"adding tasks: {reply.status_code} {reply.text[:500]}")
    print(f"queue of {args.tasks} tasks built in {time.perf_counter() - built:.1f} s")

    def audited(kind: str) -> int:
        sql = f"SELECT count() FROM events WHERE type = '{kind}' AND queue_id = '{queue_id}'"
        [[n]] = client.post("/api/v1/audit", json={"sql": sql}).json()["rows"]
        return int(n)

    # The clock starts on a settled stack: the build's events (a command and its answer per
    # task) are through the streams and the audit, as a queue built over time would be.
    wait_for("the audit to hold the build", lambda: audited("QueueTaskAdded") == args.tasks, 120)

    parts = stack_parts(stack, settings)
    reader = at_the_end(settings, settings.topic("queues"))
    speed = machine_speed_ms()
    print(f"machine: the reference loop took {speed:.0f} ms of CPU on {interpreter()}")
    with Sampler(parts) as cpu:
        started, machine_before = time.time(), machine_ticks()
        client.post(f"/api/v1/queues/{queue_id}/commit").raise_for_status()
        ended = finished_at(reader, queue_id, 1800)
        machine_after = machine_ticks()  # read a moment after the end: close enough
    wall = ended - started
    cpu_before, cpu_after = cpu.first(), cpu.at(ended)
    reader.close()

    wait_for("the audit to hold the whole queue", lambda: audited("QueueFinished") > 0, 120)
    queue = client.get(f"/api/v1/queues/{queue_id}").json()
    costs = {t["task_id"]: t["worker_costtime"] for t in queue["tasks"]}
    statuses = collections.Counter(t["status"] for t in queue["tasks"])
    print(f"status {queue['status']} {dict(statuses)}; {args.agents} agents x {args.workers}")
    examples = {t["status"]: t for t in queue["tasks"] if t["status"] != "succeeded"}
    for t in examples.values():
        print(f"  e.g. {t['task_id']} {t['status']}: {t['cause']}")
    critical_ms = costs[ids[0]] + max(costs[i] for i in ids[1:-1]) + costs[ids[-1]]
    app_total_ms = sum(costs.values())
    slots = args.agents * args.workers
    print(f"total {wall:.2f} s = {args.tasks / wall:.0f} tasks/s")
    print(f"app time: sum {app_total_ms / 1000:.1f} s, critical path {critical_ms} ms")
    overhead = (wall * 1000 - critical_ms) / args.tasks
    print(
        f"scheduling overhead per task: {overhead:.1f} ms (total minus critical-path app "
        "time, over the tasks)"
    )
    # The app's own time alone needs at least its sum spread over every slot: on a small
    # machine the noop's process start is most of what remains.
    floor_ms = max(critical_ms, app_total_ms / slots)
    print(
        f"  and {(wall * 1000 - floor_ms) / args.tasks:.1f} ms over the app-bound floor "
        f"({floor_ms / 1000:.2f} s: the larger of the critical path and the app time "
        f"over {slots} slots)"
    )
    print("CPU from the commit to the end, by part (two cores give 2 s each second):")
    print("\n".join(report(cpu_before, cpu_after, args.tasks)))
    stack_s = sum(cpu_after.values()) - sum(cpu_before.values())
    print(f"the machine meanwhile: {machine_share(machine_before, machine_after, stack_s)}")

    return overhead, speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--queues", type=int, default=1, help="queues run one after another on the same stack"
    )
    args = parser.parse_args()

    settings = bench_settings("benchq", ROOT, heartbeat_s=2.0)
    agents = [f"benchq-agent-{i + 1}" for i in range(args.agents)]
    with own_stack(settings, agents, args.workers) as stack:
        overheads = []
        for n in range(args.queues):
            if args.queues > 1:
                print(f"--- queue {n + 1} of {args.queues}")
            overheads.append(one_queue(stack, settings, agents, args))
    if len(overheads) > 1:
        print(
            "scheduling overhead per task, by queue (the reference loop's ms before it): "
            + ", ".join(f"{o:.1f} ({loop:.0f})" for o, loop in overheads)
            + f"; median {statistics.median(o for o, _ in overheads):.1f} ms"
        )


if __name__ == "__main__":
    main()
