"""Faust's producer with librdkafka doing the sending: what the queue flow and its table write.

Faust builds its producer as `aiokafka.AIOKafkaProducer` (looked up by that name each time), and
aiokafka does a send's work in Python on the worker's event loop: the batch, the request's
encoding, the sender task that waits on the reply and decodes it. `Sender` keeps aiokafka's
producer for everything else Faust asks of it (its client creates topics and reads metadata;
transactions, which this worker does not use, stay aiokafka's) and hands each plain send to a
confluent-kafka producer, configured as every other producer here (`elves.kafka.producer`:
idempotent, acks=all, murmur2, so a key lands where Faust's partitioner would put it).

What Faust relies on still holds:
- `send` returns a future of the record's `RecordMetadata`, settled once the broker has it;
- `flush` returns once every send so far is settled: Faust flushes before it commits the
  offsets of the events that made them, which is what makes its processing at-least-once.

Delivery reports come on a thread of our own that waits in `poll`; it settles the futures of
one poll on the event loop with one wake-up, not one per record.
"""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from typing import Any

import aiokafka
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.structs import RecordMetadata, TopicPartition
from confluent_kafka import KafkaError, KafkaException, Message

from elves.config import Settings
from elves.kafka import producer

POLL_S = 0.5  # the reports thread's longest wait; a report ends it at once
STOP_FLUSH_S = 30.0
CREATE_TIME = 0  # a record's timestamp type: set by its producer (librdkafka's default)

Report = tuple["asyncio.Future[RecordMetadata]", KafkaError | None, Message]


class Sender(aiokafka.AIOKafkaProducer):  # type: ignore[misc]
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transactional = kwargs.get("transactional_id") is not None
        servers = kwargs["bootstrap_servers"]
        self._rk = producer(
            Settings(bootstrap=servers if isinstance(servers, str) else ",".join(servers)),
            "streams-faust",
            **{"linger.ms": kwargs.get("linger_ms") or 0},
        )
        self._in_flight: set[asyncio.Future[RecordMetadata]] = set()
        # Filled within a poll, handed over after it; both on the reports thread, the only one
        # that polls (nothing here calls the producer's flush, which would serve reports too).
        self._reports: list[Report] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="faust-sender", daemon=True)
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        await super().start()
        self._event_loop = asyncio.get_running_loop()
        self._thread.start()

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        if self._transactional or self._event_loop is None:
            sent: asyncio.Future[RecordMetadata] = await super().send(
                topic, value, key, partition, timestamp_ms, headers
            )
            return sent
        future: asyncio.Future[RecordMetadata] = self._event_loop.create_future()
        report = partial(self._reported, future)
        extra: dict[str, Any] = {}
        if partition is not None:
            extra["partition"] = partition
        if timestamp_ms:
            extra["timestamp"] = timestamp_ms
        if headers:
            extra["headers"] = headers
        while True:
            try:
                self._rk.produce(topic, value, key, on_delivery=report, **extra)
                break
            except BufferError:
                # librdkafka's queue is full: let the broker catch up, as aiokafka's send waits.
                await asyncio.sleep(0.01)
            except KafkaException as exc:  # refused at once (no such partition, too large)
                # As aiokafka's own: Faust's driver turns it into its ProducerSendError.
                raise AIOKafkaError(f"send refused: {exc}") from exc
        self._in_flight.add(future)
        return future

    async def flush(self) -> None:
        await super().flush()
        if self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def stop(self) -> None:
        try:
            if self._in_flight:  # a broker that is gone fails them only after a long timeout
                await asyncio.wait(set(self._in_flight), timeout=STOP_FLUSH_S)
        finally:
            self._stopping.set()
            if self._thread.is_alive():
                await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            await super().stop()

    # --- delivery reports -------------------------------------------------------------------

    def _reported(
        self, future: asyncio.Future[RecordMetadata], err: KafkaError | None, msg: Message
    ) -> None:
        """librdkafka's callback, within the reports thread's `poll`."""
        self._reports.append((future, err, msg))

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._rk.poll(POLL_S)
            self._hand_over()

    def _hand_over(self) -> None:
        reports, self._reports = self._reports, []
        if reports and self._event_loop is not None:
            try:
                self._event_loop.call_soon_threadsafe(self._settle, reports)
            except RuntimeError:
                pass  # the loop is closed: nobody waits for these any more

    def _settle(self, reports: list[Report]) -> None:
        for future, err, msg in reports:
            self._in_flight.discard(future)
            if future.done():
                continue
            if err is not None:
                future.set_exception(AIOKafkaError(f"delivery failed: {err}"))
                continue
            topic, partition = msg.topic() or "", msg.partition() or 0
            _kind, timestamp = msg.timestamp()
            metadata = RecordMetadata(
                topic,
                partition,
                TopicPartition(topic, partition),
                msg.offset() or 0,
                timestamp,
                CREATE_TIME,
                None,
            )
            future.set_result(metadata)
