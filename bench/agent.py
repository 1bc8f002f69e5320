"""One agent alone on a real broker: its CPU a task, by process, for the noop app.

Signs noop dispatches as the streams would and writes them to the agent's dispatch topic at a
steady rate (as a fleet's agent gets them in `bench/queues.py`: about 20 a second each), reads
the results back, and prints the CPU a task of the agent daemon, of its fork server and of the
forked app processes. No streams, gateway or watcher: what an agent costs, apart from the rest.

    .venv/bin/python bench/agent.py [--tasks 600] [--rate 20] [--workers 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer
from proc_cpu import children_of, own_and_reaped

from elves.client import client
from elves.config import Settings
from elves.kafka import consumer, producer
from elves.local import Stack, bench_settings, bench_state, kafka, term_as_exit
from elves.schemas.codec import CODEC
from elves.schemas.events import TaskDispatched, TaskResultReported
from elves.signing import Signer, center_signer
from elves.topics import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
AGENT = "bench-agent"
IDLE_S = 10.0


def cpu(agent_pid: int) -> dict[str, float]:
    """The agent daemon's own CPU, its fork server's, and the apps' (reaped by the server)."""
    daemon, _ = own_and_reaped(agent_pid)
    server = apps = 0.0
    for child in children_of(agent_pid):
        own, reaped = own_and_reaped(child)
        server += own
        apps += reaped
    return {"agent daemon": daemon, "fork server": server, "apps": apps}


def dispatch(task_id: str) -> TaskDispatched:
    now = int(time.time() * 1000)
    return TaskDispatched(
        event_id=str(uuid.uuid4()),
        occurred_at=now,
        task_id=task_id,
        attempt=1,
        agent_id=AGENT,
        app="noop",
        func="noop",
        params=json.dumps({}),
        timeout_s=30,
        deadline_at=now + 600_000,
    )


def send_and_wait(
    settings: Settings, signer: Signer, results: Consumer, count: int, rate: float
) -> float:
    """Write `count` signed dispatches at `rate` a second, wait for every result; the seconds
    from the first dispatch to the last result."""
    prod = producer(settings)
    topic = settings.dispatch_topic(AGENT)
    ids = [uuid.uuid4().hex[:16] for _ in range(count)]
    start = time.monotonic()
    for n, task_id in enumerate(ids):
        # A steady rate: each dispatch at its time, none in a burst.
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        sealed = signer.seal(dispatch(task_id), int(time.time() * 1000))
        prod.produce(topic, key=task_id.encode(), value=sealed)
        prod.poll(0)
    prod.flush(10)
    left = set(ids)
    deadline = time.monotonic() + 60 + count / rate
    while left and time.monotonic() < deadline:
        msg = results.poll(0.2)
        if msg is None or msg.error() is not None:
            continue
        event = CODEC.decode(msg.value())
        if isinstance(event, TaskResultReported):
            left.discard(event.task_id)
    elapsed = time.monotonic() - start
    if left:
        raise SystemExit(f"{len(left)} of {count} results missing after {elapsed:.0f} s")
    return elapsed


def one_round(
    settings: Settings, signer: Signer, results: Consumer, agent_pid: int, args: argparse.Namespace
) -> float:
    """One measured round: prints each part's CPU a task; returns the agent daemon's."""
    before = cpu(agent_pid)
    elapsed = send_and_wait(settings, signer, results, args.tasks, args.rate)
    after = cpu(agent_pid)
    per_task = {part: (after[part] - before[part]) * 1000 / args.tasks for part in after}
    total = sum(per_task.values())
    print(f"{args.tasks} tasks at {args.rate}/s in {elapsed:.1f} s; CPU a task, ms:")
    for part, ms in per_task.items():
        print(f"  {part:<14} {ms:6.2f}")
    print(f"  {'all':<14} {total:6.2f}")
    return float(per_task["agent daemon"])


def idle(agent_pid: int) -> str:
    """What the agent costs a second with nothing to run (heartbeats, fetches, its cron)."""
    before = cpu(agent_pid)
    time.sleep(IDLE_S)
    after = cpu(agent_pid)
    return ", ".join(f"{part} {(after[part] - before[part]) * 1000 / IDLE_S:.1f}" for part in after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", type=int, default=600)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    settings = bench_settings("bencha", ROOT)
    with term_as_exit(), bench_state(settings):
        kafka("start", settings)
        try:
            ensure_topics(settings)
            signer = center_signer(settings)  # makes the center's key, which the agent reads
            # Every result from the beginning, read once: a round passes over the earlier ones.
            results = consumer(settings, f"bench-{uuid.uuid4().hex[:8]}")
            results.subscribe([settings.topic("results")])
            stack = Stack(settings, client(settings, timeout=60))
            try:
                workers = str(args.workers)
                agent = stack.spawn_agent(AGENT, accept=False, ELVES_AGENT_WORKERS=workers)
                # One task through first: the agent consumes, its fork server is warm.
                send_and_wait(settings, signer, results, 1, args.rate)
                print(f"idle, CPU ms a second: {idle(agent.popen.pid)}")
                pid = agent.popen.pid
                daemon = [
                    one_round(settings, signer, results, pid, args) for _ in range(args.rounds)
                ]
                rounds = ", ".join(f"{ms:.2f}" for ms in daemon)
                median = statistics.median(daemon)
                print(f"agent daemon, ms a task, by round: {rounds}; median {median:.2f}")
            finally:
                stack.close()
                results.close()
        finally:
            kafka("stop", settings, check=False)


if __name__ == "__main__":
    main()
