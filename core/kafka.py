"""Thin helpers around confluent-kafka: one way to build producers and consumers, and the DLQ."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Message, Producer

from elves.config import Settings

# The fetch wait of a consumer whose topics are written rarely (an agent's dispatches, app
# versions, API keys, permission rules): the broker answers a fetch as soon as a record lands,
# so the wait adds no latency; it is how often such a consumer asks when nothing comes. Every
# agent has two (dispatches, rollout), so a fleet multiplies it.
QUIET_FETCH_WAIT_MS = 5000


def producer(settings: Settings, client_id: str = "producer", **extra: Any) -> Producer:
    """`client_id`: what the part is (the broker's request log and quotas name clients by it)."""
    # Idempotence and acks=all per DESIGN.md; linger 0 because the instant path is latency-bound.
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "client.id": f"elves-{client_id}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 0,
        # murmur2 as Java and aiokafka (Faust) use: a key lands on the same partition whoever
        # produces it, so commands, results and the tables stay co-partitioned.
        "partitioner": "murmur2_random",
    }
    conf.update(extra)
    return Producer(conf)


def consumer(settings: Settings, group: str, **extra: Any) -> Consumer:
    """A consumer of this stack's. One assigned a partition from its beginning should ask where
    that is (its low watermark) and assign the number: librdkafka fetches nothing for the first
    0.5 s while it looks OFFSET_BEGINNING up itself."""
    conf: dict[str, Any] = {
        "bootstrap.servers": settings.bootstrap,
        "group.id": group,
        "client.id": group,  # what the broker's request log names it by
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        # The broker answers a fetch as soon as one byte is there, and librdkafka fetches every
        # partition of the consumer in one request, so a long wait costs no latency; it bounds
        # how often an idle consumer asks. At 100 ms, the idle fetches of a stack with 8 agents
        # (some 30 consumers) took 2.75 CPU-s of the broker's every 10 s; at 500, 2.06. The folds
        # loop's at 10 ms alone were a tenth of the broker's CPU.
        "fetch.wait.max.ms": 500,
        # Every consumer here reads topics that exist before it starts (the regex-subscribed
        # watcher, which must find new agents' topics, sets its own 2 s). At 2 s for all, an
        # idle stack of 8 agents asked the broker for metadata 11 times a second: a tenth of
        # its requests. A broker error still refreshes at once.
        "topic.metadata.refresh.interval.ms": 30_000,
        # The folds loop writes in transactions (streams.loop). Agents and the gateway act on
        # what it decided at once, not a commit interval later; what a dead worker's aborted
        # transaction held is decided again, with the same ids, by its successor. The loop
        # itself and the audit read committed only.
        "isolation.level": "read_uncommitted",
    }
    conf.update(extra)
    return Consumer(conf)


Headers = dict[str, str | bytes | None]  # what confluent-kafka takes


def dlq_headers(
    reason: str, origin: str, topic: str, partition: int | None, offset: int | None
) -> Headers:
    """Why a message went to the DLQ and where it came from: the headers every DLQ record has."""
    return {
        "reason": reason.encode(),
        "origin": origin.encode(),
        "topic": topic.encode(),
        "partition": str(partition).encode(),
        "offset": str(offset).encode(),
    }


def dead_letter(prod: Producer, settings: Settings, msg: Message, reason: str, origin: str) -> None:
    """Send an undecodable or invalid message to the DLQ with why and where it came from."""
    prod.produce(
        settings.topic("dlq"),
        key=msg.key(),
        value=msg.value(),
        headers=dlq_headers(reason, origin, msg.topic() or "", msg.partition(), msg.offset()),
    )
