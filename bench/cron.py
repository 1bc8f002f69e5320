"""Many crons firing every second through the real stack: fires/s and the lag of each fire.

N crons with the rule `* * * * * *` for an agent that does not exist: each fire is a real
`CronFired` and a real `TaskSubmitted`, which the task lifecycle rejects (414.2) at once, so
no app runs and the numbers are the scheduler's. Starts its own broker and stack, reads the
`crons` topic for a while, prints the numbers, stops it all.

Lag, per fire: `decided` = the fire event's occurred_at - its scheduled time (the scheduler's
own lateness); `seen` = when this bench read the fire from Kafka - the scheduled time.

    .venv/bin/python bench/cron.py [--crons 1000] [--seconds 30] [--warmup 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections import Counter
from pathlib import Path

from confluent_kafka import OFFSET_END, TopicPartition

from elves.kafka import consumer, producer
from elves.local import bench_settings, every_second_cron, own_stack, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import CronFired, CronFireSkipped, CronFiresMissed

ROOT = Path(__file__).resolve().parent.parent


def percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crons", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=30, help="measured time")
    parser.add_argument("--warmup", type=int, default=10, help="seconds not measured")
    args = parser.parse_args()

    settings = bench_settings("benchc", ROOT)
    with own_stack(settings, []) as stack:
        # Added as another system would: AddCron commands straight to Kafka (thousands through
        # the REST gateway, each waiting for its answer, would take minutes).
        prod = producer(settings)
        added = time.perf_counter()
        for _ in range(args.crons):
            command = every_second_cron(int(time.time() * 1000))
            cron_id = command.cron_id
            prod.produce(
                settings.topic("commands"), key=cron_id.encode(), value=CODEC.encode(command)
            )
        prod.flush()
        wait_for(
            "every cron to be added",
            lambda: len(stack.client.get("/api/v1/crons").json()["crons"]) == args.crons,
            300,
        )
        print(f"{args.crons} crons added in {time.perf_counter() - added:.1f} s")

        c = consumer(settings, f"bench-cron-{uuid.uuid4().hex[:6]}")
        topic = settings.topic("crons")
        partitions = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
        start = time.time() + args.warmup
        end = start + args.seconds
        decided: list[int] = []
        seen: list[int] = []
        missed = skipped = 0
        kinds: Counter[str] = Counter()
        while time.time() < end + 3:  # fires scheduled before `end` may arrive a bit later
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            now_ms = int(time.time() * 1000)
            event = CODEC.decode(msg.value())
            kinds[type(event).__name__] += 1
            at = getattr(event, "scheduled_at", getattr(event, "first_at", 0))
            if not start * 1000 <= at < end * 1000:
                continue
            if isinstance(event, CronFired):
                decided.append(event.occurred_at - event.scheduled_at)
                seen.append(now_ms - event.scheduled_at)
            elif isinstance(event, CronFiresMissed):
                missed += event.count
            elif isinstance(event, CronFireSkipped):
                skipped += 1
        c.close()
        print(kinds)

    expected = args.crons * args.seconds
    print(
        f"fires: {len(decided)} of {expected} expected in {args.seconds} s "
        f"= {len(decided) / args.seconds:.0f} fires/s; missed {missed}, skipped {skipped}"
    )
    for name, lags in (("decided", decided), ("seen", seen)):
        if lags:
            print(
                f"lag {name}: p50 {statistics.median(lags):.0f} ms, "
                f"p99 {percentile(lags, 0.99)} ms, max {max(lags)} ms"
            )


if __name__ == "__main__":
    main()
