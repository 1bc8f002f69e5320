"""The `keys` topic folded in memory, kept current by a thread: the gateway's view of API keys.

`start()` returns only once every key written before it is folded, so the gateway never refuses
a valid key because it has not read it yet. Writers apply their own events at once (`apply`),
and the fold ignores the copy that comes back through Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from elves import apikeys
from elves.config import Settings
from elves.errors import DecodeError, Unavailable
from elves.kafka import QUIET_FETCH_WAIT_MS, consumer
from elves.schemas.codec import CODEC
from elves.schemas.events import ApiKeyCreated, ApiKeyRevoked

log = logging.getLogger(__name__)

KeyEvent = ApiKeyCreated | ApiKeyRevoked


class KeyRing:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._keys: apikeys.Keys = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="elves-keyring", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout) or self._failure is not None:
            raise Unavailable(f"the keys topic could not be read: {self._failure!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def apply(self, event: KeyEvent) -> None:
        with self._lock:
            self._keys = apikeys.apply(self._keys, event)

    def get(self, key_id: str) -> apikeys.KeyState | None:
        with self._lock:
            return self._keys.get(key_id)

    def snapshot(self) -> apikeys.Keys:
        with self._lock:
            return self._keys

    def all(self) -> list[apikeys.KeyState]:
        with self._lock:
            return sorted(self._keys.values(), key=lambda k: (k.created_at, k.key_id))

    def _run(self) -> None:
        topic = self.settings.topic("keys")
        try:
            group = f"{self.settings.topic_prefix}keyring-{uuid.uuid4().hex[:8]}"
            c = consumer(self.settings, group, **{"fetch.wait.max.ms": QUIET_FETCH_WAIT_MS})
        except Exception as exc:  # noqa: BLE001 - reported to start()
            self._failure = exc
            self._ready.set()
            return
        try:
            ends = self._assign(c, topic)
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is not None and not msg.error():
                    self._on_message(msg.value())
                    part = msg.partition() or 0
                    if part in ends and (msg.offset() or 0) + 1 >= ends[part]:
                        del ends[part]
                if not ends:
                    self._ready.set()
        except Exception as exc:  # noqa: BLE001 - reported to start(), or logged once running
            self._failure = exc
            log.exception("the key ring stopped reading %s", topic)
            self._ready.set()
        finally:
            c.close()

    def _assign(self, c: Consumer, topic: str) -> dict[int, int]:
        """Assign every partition from its beginning; return the ends to reach before ready."""
        deadline = time.monotonic() + 30
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        while (meta is None or meta.error is not None) and time.monotonic() < deadline:
            time.sleep(0.2)  # a topic made a moment ago may not be in the metadata yet
            meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            raise Unavailable(f"no topic {topic}")
        ends = {}
        starts = []
        for p in meta.partitions:
            low, high = _watermarks(c, TopicPartition(topic, p), deadline)
            if high > low:
                ends[p] = high
            starts.append(TopicPartition(topic, p, low))  # a number: OFFSET_BEGINNING waits 0.5 s
        c.assign(starts)
        return ends

    def _on_message(self, value: bytes | None) -> None:
        try:
            event = CODEC.decode(value)
        except DecodeError as exc:
            log.warning("undecodable message on the keys topic: %s", exc.message)
            return
        if isinstance(event, ApiKeyCreated | ApiKeyRevoked):
            self.apply(event)


def _watermarks(c: Consumer, tp: TopicPartition, deadline: float) -> tuple[int, int]:
    """A topic made a moment ago on a fresh broker has no leader yet: ask again until it has."""
    while True:
        try:
            low, high = c.get_watermark_offsets(tp, timeout=10)
            return int(low), int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def write(producer: Producer, settings: Settings, event: KeyEvent, timeout: float = 10.0) -> None:
    """Produce a key event and return once the broker has it: a key is handed out, or counts as
    revoked, only once it is durable."""
    errors: list[object] = []

    def delivered(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer.produce(
        settings.topic("keys"),
        key=event.key_id.encode(),
        value=CODEC.encode(event),
        on_delivery=delivered,
    )
    if producer.flush(timeout) > 0 or errors:
        raise Unavailable(f"the keys topic did not take the event: {errors or 'timed out'}")
