"""The outbox against the real broker: delivered in order, and delivered later after an outage."""

from __future__ import annotations

import uuid

from elves.agent.outbox import Outbox
from elves.config import Settings
from elves.kafka import consumer
from elves.topics import TopicSpec, ensure_topics


def _read(settings: Settings, topic: str, count: int) -> list[bytes]:
    cons = consumer(settings, f"test-{uuid.uuid4().hex}")
    cons.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(300):
            msg = cons.poll(0.1)
            if msg is not None and msg.error() is None:
                values.append(msg.value() or b"")
                if len(values) == count:
                    break
    finally:
        cons.close()
    return values


def test_rows_put_while_the_broker_is_away_are_delivered_later(settings: Settings) -> None:
    ensure_topics(settings, (TopicSpec("out", 1),))
    topic = settings.topic("out")
    # An outage: the first outbox talks to a port where no broker listens.
    away = Settings(bootstrap="127.0.0.1:1", state_dir=settings.state_dir)
    box = Outbox(away, delivery_timeout_ms=300)
    box.start()
    for i in range(3):
        box.put(topic, b"k", f"v{i}".encode())
    assert box.close(timeout=1.0) == 3  # not delivered, not lost

    back = Outbox(settings)
    back.start()
    try:
        assert back.wait_empty(timeout=30)
    finally:
        assert back.close(timeout=5) == 0
    assert _read(settings, topic, 3) == [b"v0", b"v1", b"v2"]
