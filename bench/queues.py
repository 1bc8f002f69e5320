"""A fan-out then fan-in queue through the real stack: total time and scheduling overhead.

One root task, N-2 tasks that depend on it, one task that depends on all of them; the noop app
on 8 agents. Starts its own broker and stack, prints the numbers, stops it all.

    .venv/bin/python bench/queues.py [--tasks 1000] [--agents 8] [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path

from elves.config import Settings
from elves.local import free_port, own_stack, wait_for

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--agents", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="elves-bench-queue-"))
    settings = Settings(
        bootstrap=f"127.0.0.1:{os.environ.get('BENCH_KAFKA_PORT', '19492')}",
        topic_prefix=f"benchq{uuid.uuid4().hex[:6]}.",
        state_dir=state,
        gateway_port=free_port(),
        heartbeat_s=2.0,
        apps_dir=ROOT / "apps" / "samples",
    )
    agents = [f"benchq-agent-{i + 1}" for i in range(args.agents)]
    with own_stack(settings, agents, args.workers) as stack:
        client = stack.client
        queue_id = client.post("/api/v1/queues", json={"app": "noop"}).json()["queue_id"]
        ids = [f"t{i:05d}" for i in range(args.tasks)]

        def add(i: int, deps: list[str]) -> None:
            reply = client.post(
                f"/api/v1/queues/{queue_id}/tasks",
                json={
                    "task_id": ids[i],
                    "agent": agents[i % len(agents)],
                    "func": "noop",
                    "depends_on": deps,
                    "timeout": 60,
                },
            )
            reply.raise_for_status()

        built = time.perf_counter()
        add(0, [])
        for i in range(1, args.tasks - 1):
            add(i, [ids[0]])
        add(args.tasks - 1, ids[1:-1])
        print(f"queue of {args.tasks} tasks built in {time.perf_counter() - built:.1f} s")

        started = time.perf_counter()
        client.post(f"/api/v1/queues/{queue_id}/commit").raise_for_status()

        def finished() -> bool:
            [[n]] = client.post(
                "/api/v1/audit",
                json={
                    "sql": (
                        "SELECT count() FROM events WHERE type = 'QueueFinished' "
                        f"AND queue_id = '{queue_id}'"
                    )
                },
            ).json()["rows"]
            return int(n) > 0

        wait_for("the queue to finish", finished, 1800)
        wall = time.perf_counter() - started
        queue = client.get(f"/api/v1/queues/{queue_id}").json()
        costs = {t["task_id"]: t["worker_costtime"] for t in queue["tasks"]}
        statuses = {t["status"] for t in queue["tasks"]}
        critical_ms = costs[ids[0]] + max(costs[i] for i in ids[1:-1]) + costs[ids[-1]]
        app_total_ms = sum(costs.values())
        print(f"status {queue['status']} ({statuses}); {args.agents} agents x {args.workers}")
        print(f"total {wall:.2f} s = {args.tasks / wall:.0f} tasks/s")
        print(f"app time: sum {app_total_ms / 1000:.1f} s, critical path {critical_ms} ms")
        overhead = (wall * 1000 - critical_ms) / args.tasks
        print(
            f"scheduling overhead per task: {overhead:.1f} ms (total minus critical-path app "
            "time, over the tasks)"
        )


if __name__ == "__main__":
    main()
