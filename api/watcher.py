"""The watcher: every message of every topic of the prefix, written once to the audit store.

A background thread consumes the topics by regex (a new agent's dispatch topic is picked up at
the next metadata refresh), turns each message into an `AuditRow`, inserts a batch when it is
full or old enough, and commits offsets only after the insert succeeded: delivery is
at-least-once and the store's dedupe by `event_id` makes the table exactly-once.

Nothing is dropped: a message that does not decode is stored as `Undecodable` with the reason
and its bytes, a dead letter as `DeadLetter` with its headers; both are keyed by their topic,
partition and offset, so their redelivery is idempotent too. A dispatch topic holds signed
envelopes: the inner event is stored once its signature verifies, anything else there as
`UnverifiedDispatch`.

One event is read three times and stored once, from the topic where its order means something: a
queue task's outcome is on `tasks` and `queue-inputs` (the task lifecycle's) and on `queues` (the
queue flow's), and the audit keeps the `queues` copy (`is_queue_copy`).
"""

from __future__ import annotations

import base64
import functools
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from elves.api.audit import AuditRow, AuditStore
from elves.config import Settings
from elves.errors import DispatchRefusal, ElvesError
from elves.kafka import consumer
from elves.schemas.codec import CODEC
from elves.signing import CenterKey
from elves.streams.queues.state import OUTCOME_NAMES
from elves.topics import CORE_TOPICS

log = logging.getLogger(__name__)

Position = tuple[str, int]  # (topic, partition)
_RETRY_S = 1.0  # pause after a failed insert; the batch is kept and retried
# While a reader waits on the audit for what just happened (`hurry`), the watcher inserts
# this often at most, not every ELVES_WATCHER_FLUSH; for HURRY_S after the last ask.
HURRIED_FLUSH_S = 0.05
HURRY_S = 1.0
FETCH_MIN_BYTES = 64 * 1024
FETCH_WAIT_MS = 100
METADATA_REFRESH_MS = 2000


def is_queue_copy(row: AuditRow, queues_topic: str) -> bool:
    """A queue task's outcome read anywhere but on `queues`: not stored. The queue flow puts it
    on `queues` as it takes it, so there it sits in its queue's own order (one partition per
    queue, one writer), after what readied its attempt and before what the queue derived from
    it, and the queue view folds in that order (`api/queues.py` `in_log_order` says why)."""
    return bool(row.queue_id) and row.type in OUTCOME_NAMES and row.topic != queues_topic


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _coords(msg: Message) -> str:
    return f"{msg.topic()}:{msg.partition()}:{msg.offset()}"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _timestamp(msg: Message) -> int:
    _kind, millis = msg.timestamp()
    return int(millis) if millis and millis > 0 else now_ms()


def _row(
    msg: Message, event_id: str, kind: str, occurred_at: int, payload: Any, **ids: str
) -> AuditRow:
    return AuditRow(
        event_id=event_id,
        type=kind,
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        occurred_at=occurred_at,
        agent_id=ids.get("agent_id", ""),
        task_id=ids.get("task_id", ""),
        app=ids.get("app", ""),
        queue_id=ids.get("queue_id", ""),
        cron_id=ids.get("cron_id", ""),
        payload=json.dumps(payload, separators=(",", ":"), default=str),
    )


def _ids(event: object) -> dict[str, str]:
    keys = ("agent_id", "task_id", "app", "queue_id", "cron_id")
    return {k: str(getattr(event, k, "") or "") for k in keys}


# Fields the audit never stores: an API key's sealed secret is of no use to a reader of the
# audit, and raw SQL over the audit cannot be scoped, so it is left out (who made which key, with
# what scopes, and its revocation are kept).
UNAUDITED = frozenset({"sealed_secret"})


def _audited(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in UNAUDITED}


def to_row(msg: Message, dlq_topic: str, center: CenterKey | None = None) -> AuditRow:
    """The audit row of one message; never raises on bad input. `center`: the message is on a
    dispatch topic, to verify with the center's key."""
    value = msg.value()
    if center is not None:
        return _dispatch_row(msg, center)
    if msg.topic() == dlq_topic:
        raw = msg.headers() or []
        headers = {k: _text(v) for k, v in (raw.items() if isinstance(raw, dict) else raw)}
        ids: dict[str, str] = {}
        try:  # a dead letter may be a valid event refused downstream: keep it findable by task
            ids = _ids(CODEC.decode(value))
        except Exception:  # noqa: BLE001 - undecodable dead letters are the usual case
            pass
        payload = {**headers, "key": _b64(msg.key()), "value": _b64(value)}
        return _row(msg, _coords(msg), "DeadLetter", _timestamp(msg), payload, **ids)
    try:
        event = CODEC.decode(value)
        return _row(
            msg,
            event.event_id,
            type(event).__name__,
            event.occurred_at,
            _audited(vars(event)),  # events are flat (test_codec.py): no deep copy
            **_ids(event),
        )
    except Exception as exc:  # noqa: BLE001 - any failure to read a message is stored, not raised
        reason = exc.message if isinstance(exc, ElvesError) else repr(exc)
        payload = {"reason": reason, "key": _b64(msg.key()), "value": _b64(value)}
        return _row(msg, _coords(msg), "Undecodable", _timestamp(msg), payload)


def _dispatch_row(msg: Message, center: CenterKey) -> AuditRow:
    """A dispatch topic holds the center's signed envelopes: the audit stores the inner event
    (a task's lifecycle reads its TaskDispatched), once it verifies with the center's key.
    Anything else there is an `UnverifiedDispatch` with why: never mistaken for the center's
    word (the agent refuses it too, and reports a DispatchRefused)."""
    try:
        event = center.open(msg.value()).event
    except DispatchRefusal as exc:
        payload = {
            "code": exc.code,
            "reason": exc.message,
            "key": _b64(msg.key()),
            "value": _b64(msg.value()),
        }
        agent_id = (msg.topic() or "").rpartition("dispatch.")[2]
        return _row(
            msg, _coords(msg), "UnverifiedDispatch", _timestamp(msg), payload, agent_id=agent_id
        )
    payload = _audited(vars(event))
    return _row(
        msg, event.event_id, type(event).__name__, event.occurred_at, payload, **_ids(event)
    )


class Watcher:
    """Background thread: Kafka -> AuditStore, batched, committed after each insert."""

    def __init__(self, settings: Settings, store: AuditStore, group: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.group = group or settings.topic("watcher")
        # The event topics only: the core ones, the agents' dispatch and the apps' processor
        # topics. Not the streams' tables (`<prefix>streams-...`): those hold rows.
        names = "|".join(re.escape(t.name) for t in CORE_TOPICS)
        self.pattern = f"^{re.escape(settings.topic_prefix)}({names}|dispatch\\..+|processor\\..+)$"
        self._dlq = settings.topic("dlq")
        self._queues = settings.topic("queues")
        self._dispatch = settings.topic("dispatch.")
        self._center = CenterKey(settings.center_key_path)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Condition()
        self._written: dict[Position, int] = {}  # next offset to read, once stored
        self.flushes = 0
        self.rows_inserted = 0
        self._on_insert: list[Callable[[], None]] = []
        self._hurried_until = 0.0  # monotonic: until then, `HURRIED_FLUSH_S` between inserts
        self.failure: BaseException | None = None

    # ---- lifecycle -----------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("watcher already started")
        self._thread = threading.Thread(target=self._run, name="elves-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Flush what is pending, commit, leave the group."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._changed:
            self._changed.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ---- waiting (tests and the gateway; no sleeps) --------------------

    def hurry(self) -> None:
        """Someone waits on the audit for what just happened (`elves exec --output`, a task
        just made): insert what is read within `HURRIED_FLUSH_S`, for the next `HURRY_S`.
        Inserts are batched for ClickHouse's sake, so this is for readers who wait, not for
        every read."""
        self._hurried_until = time.monotonic() + HURRY_S

    def on_insert(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every insert, from the watcher's thread: it must not block."""
        self._on_insert.append(callback)

    def positions(self) -> dict[Position, int]:
        """Next offset per partition whose earlier messages are all in the store."""
        with self._changed:
            return dict(self._written)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; it is re-checked after every insert."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self.flushes
            if predicate():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                return False
            with self._changed:
                self._changed.wait_for(functools.partial(self._moved, seen), remaining)

    def _moved(self, seen: int) -> bool:
        return self.flushes != seen or self._stop.is_set()

    def wait_for_offsets(self, offsets: Mapping[Position, int], timeout: float) -> bool:
        """Wait until the message at each (topic, partition) -> offset is in the store."""

        def reached() -> bool:
            written = self.positions()
            return all(written.get(pos, -1) > off for pos, off in offsets.items())

        return self.wait_for(reached, timeout)

    # ---- the loop ------------------------------------------------------

    def _run(self) -> None:
        try:
            # What happened: a dead streams worker's aborted transaction did not.
            cons = consumer(
                self.settings,
                self.group,
                **{
                    "isolation.level": "read_committed",
                    # Every event of the platform comes here: fetch in batches, not as each
                    # one lands (the broker's fetches from the watcher were a tenth of all its
                    # requests in bench/queues.py). An event waits at most this much more.
                    "fetch.min.bytes": FETCH_MIN_BYTES,
                    "fetch.wait.max.ms": FETCH_WAIT_MS,
                    # A new agent's dispatch topic matches the regex once the metadata says so.
                    "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
                },
            )
        except Exception as exc:  # noqa: BLE001 - reported through `failure` and `alive`
            self.failure = exc
            log.exception("watcher cannot create its consumer")
            return
        try:
            cons.subscribe([self.pattern])
            self._loop(cons)
        except Exception as exc:  # noqa: BLE001 - reported through `failure` and `alive`
            self.failure = exc
            log.exception("watcher stopped on an unexpected error")
        finally:
            cons.close()
            with self._changed:
                self._changed.notify_all()

    def _loop(self, cons: Consumer) -> None:
        batch = max(1, self.settings.watcher_batch)
        base_flush_s = self.settings.watcher_flush_s
        pending: list[AuditRow] = []
        ends: dict[Position, int] = {}
        first_at = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            hurried = now < self._hurried_until
            flush_s = min(base_flush_s, HURRIED_FLUSH_S) if hurried else base_flush_s
            if len(pending) < batch:
                wait = 0.1 if not ends else max(0.0, first_at + flush_s - now)
                for msg in cons.consume(num_messages=batch - len(pending), timeout=min(wait, 0.1)):
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            log.warning("watcher consume error: %s", err)
                        continue
                    if not ends:
                        first_at = time.monotonic()
                    on_dispatch = (msg.topic() or "").startswith(self._dispatch)
                    row = to_row(msg, self._dlq, self._center if on_dispatch else None)
                    if not is_queue_copy(row, self._queues):
                        pending.append(row)
                    # A copy not stored is read all the same: its offset is committed with the
                    # batch's, and `positions` count it written.
                    ends[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1
            if not ends or (len(pending) < batch and time.monotonic() - first_at < flush_s):
                continue
            if self._flush(cons, pending, ends):
                pending, ends = [], {}
            else:
                self._stop.wait(_RETRY_S)  # keep the batch, consume nothing more until it lands
        if ends:
            self._flush(cons, pending, ends)

    def _flush(self, cons: Consumer, rows: list[AuditRow], ends: dict[Position, int]) -> bool:
        try:
            inserted = self.store.insert(rows)
        except ElvesError as exc:
            log.warning("watcher insert failed, will retry %d rows: %s", len(rows), exc.message)
            return False
        try:
            cons.commit(
                offsets=[TopicPartition(t, p, off) for (t, p), off in ends.items()],
                asynchronous=False,
            )
        except Exception as exc:  # noqa: BLE001 - rows are stored; a redelivery is deduped
            log.warning("watcher commit failed (rows stored, redelivery is harmless): %s", exc)
        with self._changed:
            for pos, off in ends.items():
                self._written[pos] = max(off, self._written.get(pos, 0))
            self.flushes += 1
            self.rows_inserted += inserted
            self._changed.notify_all()
        for callback in self._on_insert:
            callback()
        return True
