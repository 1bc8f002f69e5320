"""The streams worker's Faust producer (`streams.sender.Sender`) on the real broker: sends land
where Faust's own partitioner would put them, and `flush` settles every send before Faust
commits the offsets of the events that made them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from elves.config import Settings
from elves.kafka import consumer
from elves.streams.sender import Sender

PARTITIONS = 4


def _topic(settings: Settings) -> str:
    name = f"{settings.topic_prefix}sender-{uuid.uuid4().hex[:6]}"
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    for future in admin.create_topics([NewTopic(name, PARTITIONS, 1)]).values():
        future.result(30)
    return name


def _sender(settings: Settings) -> Sender:
    # What Faust's aiokafka driver passes (the worker's producer_linger is 5 ms).
    return Sender(bootstrap_servers=settings.bootstrap, client_id="t-sender", acks=-1, linger_ms=5)


def test_sends_land_on_faust_partitions_and_flush_settles_them(settings: Settings) -> None:
    topic = _topic(settings)
    keys = [f"queue-{i}".encode() for i in range(40)]

    async def scenario() -> list[tuple[bytes, int, int]]:
        sender = _sender(settings)
        await sender.start()
        try:
            futures = [await sender.send(topic, b"v:" + key, key=key) for key in keys]
            # Sent into a 5 ms linger: not all settled yet, and flush must wait for them.
            await sender.flush()
            assert all(f.done() for f in futures)
            return [
                (key, f.result().partition, f.result().offset)
                for key, f in zip(keys, futures, strict=True)
            ]
        finally:
            await sender.stop()

    placed = asyncio.run(scenario())
    faust_partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    for key, partition, _offset in placed:
        assert partition == faust_partitioner(key, every, every), key

    # The metadata names the record each send wrote.
    reader = consumer(settings, f"t-sender-{uuid.uuid4().hex[:6]}")
    reader.assign([TopicPartition(topic, p, 0) for p in every])
    found: dict[tuple[int | None, int | None], bytes | None] = {}
    for _ in range(100):
        for msg in reader.consume(100, 0.2):
            if msg.error() is None:
                found[(msg.partition(), msg.offset())] = msg.key()
        if len(found) == len(keys):
            break
    reader.close()
    assert found == {(partition, offset): key for key, partition, offset in placed}


def test_a_send_the_broker_cannot_take_fails_as_aiokafka_would(settings: Settings) -> None:
    topic = _topic(settings)

    async def scenario() -> None:
        sender = _sender(settings)
        await sender.start()
        try:
            await (await sender.send(topic, b"known", key=b"k"))  # metadata known from here on
            with pytest.raises(AIOKafkaError):
                await (await sender.send(topic, b"nowhere", key=b"k", partition=PARTITIONS + 3))
        finally:
            await sender.stop()

    asyncio.run(scenario())
