"""The folds loop: pure folds over Kafka on a plain confluent-kafka consumer, without Faust.

Why: one Faust worker folds about 1,200 events a second here, where this loop folds about
60,000 (bench/faust_ceiling.py; DECISIONS.md "the hot folds on a plain loop"). The task
lifecycle and the crons, the folds every task and every fire go through, run here; the queues
and agent liveness stay Faust agents.

One consumer group reads the inputs (topics of equal partition counts, co-partitioned by key)
with the range assignor, so a worker owns whole partition numbers: partition p of every input
and row p of every table. The tables live in memory and are restored from their compacted
changelogs when partitions are assigned (Faust's format: JSON key, JSON value), so a table's
changelog is still what the gateway reads.

Exactly-once for the folds' state: what the folds send, the rows they changed and how far each
input was read (the `positions` table) commit in one Kafka transaction, every
`COMMIT_INTERVAL_S`. The loop reads committed
events only, and restores committed rows only, so a worker that dies mid-transaction leaves
nothing its successor could half-see: the successor restores the rows as of the last commit and
reads the inputs from there, deciding again what the dead one decided (with the same ids).
Readers outside the folds (agents, the gateway) read uncommitted, to act without the commit's
delay; an aborted event they saw is decided again with its id, and they take each id once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition

from elves.config import Settings
from elves.kafka import Headers, consumer, dlq_headers, producer

log = logging.getLogger("elves.streams.loop")

# How often a transaction commits: what the folds send each other (a fire's task, an outcome's
# copy to its cron) waits for it, since they read committed events only.
COMMIT_INTERVAL_S = 0.1
POLL_S = 0.01  # the longest a clock waits for an idle consumer
BATCH = 500
RESTORE_TIMEOUT_S = 120.0
TRANSACTION_TIMEOUT_MS = 10000
CATCH_UP_LIMIT_S = 60.0
ENDS_WAIT_S = 15.0  # how long an assignment asks for its input partitions' ends
UNKNOWN_END = 2**63 - 1  # an end never reached: `_caught_up` waits CATCH_UP_LIMIT_S for it
STATS_EVERY_S = 10.0

Row = dict[str, Any]
S = TypeVar("S")
R = TypeVar("R")  # what a retried call returns


class Table(Generic[S]):
    """A fold's states by key, for the partitions this worker owns, and its compacted changelog.

    States are kept as the fold's own objects and made rows (`to_row`, JSON) only when written:
    a change is held as dirty until the loop's next commit writes it, and a key that changes
    ten times in a commit interval is written once. A row's partition is its key's input
    partition."""

    def __init__(
        self, topic: str, to_row: Callable[[S], Row], from_row: Callable[[Row], S]
    ) -> None:
        self.topic = topic
        self._to_row = to_row
        self._from_row = from_row
        self._states: dict[str, S] = {}
        self._partition: dict[str, int] = {}
        self._dirty: dict[str, int] = {}  # key -> partition

    def get(self, key: str) -> S | None:
        return self._states.get(key)

    def put(self, key: str, partition: int, state: S | None) -> None:
        if state is None:
            self._states.pop(key, None)
            self._partition.pop(key, None)
        else:
            self._states[key] = state
            self._partition[key] = partition
        self._dirty[key] = partition

    def items(self) -> list[tuple[str, S]]:
        return list(self._states.items())

    def take_dirty(self) -> dict[str, tuple[int, Row | None]]:
        """The changed rows since the last call, by key: (partition, row or None if gone)."""
        dirty, self._dirty = self._dirty, {}
        out: dict[str, tuple[int, Row | None]] = {}
        for key, partition in dirty.items():
            state = self._states.get(key)
            out[key] = (partition, None if state is None else self._to_row(state))
        return out

    def load(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """A changelog record, at restore: the latest record of a key wins."""
        name = str(json.loads(key or b'""'))
        if value is None:
            self._states.pop(name, None)
            self._partition.pop(name, None)
        else:
            self._states[name] = self._from_row(json.loads(value))
            self._partition[name] = partition

    def drop(self, partitions: Iterable[int]) -> None:
        """Forget the states of partitions this worker no longer owns."""
        gone = set(partitions)
        for key in [k for k, p in self._partition.items() if p in gone]:
            del self._states[key]
            del self._partition[key]
            self._dirty.pop(key, None)


def same(row: Row) -> Row:
    return row


@dataclass
class Clock:
    every_s: float
    tick: Callable[[], None]
    next_at: float = 0.0


@dataclass
class Folds:
    """What the loop runs: a handler per input message, clocks, and hooks."""

    inputs: Sequence[str]
    tables: Sequence[Table[Any]]
    handle: Callable[[Message], None]
    clocks: list[Clock] = field(default_factory=list)
    # After the owned partitions changed and the tables were restored for them.
    on_assigned: Callable[[set[int]], None] = lambda _owned: None


@dataclass
class Stats:
    """Where the loop's time went, logged every `STATS_EVERY_S` when there was work."""

    since: float
    events: int = 0
    wait_s: float = 0.0  # for input to arrive
    handle_s: float = 0.0
    clocks_s: float = 0.0
    commits: int = 0
    commit_s: float = 0.0
    longest_commit_s: float = 0.0

    def committed(self, took: float) -> None:
        self.commits += 1
        self.commit_s += took
        self.longest_commit_s = max(self.longest_commit_s, took)

    def report(self, now: float) -> None:
        if self.events or self.clocks_s > 0.01:
            log.info(
                "%d events in %.0f s: waiting %.2f s, handling %.2f s, clocks %.2f s, "
                "%d commits %.2f s (longest %.0f ms)",
                self.events,
                now - self.since,
                self.wait_s,
                self.handle_s,
                self.clocks_s,
                self.commits,
                self.commit_s,
                self.longest_commit_s * 1000,
            )


class Loop:
    """Runs `Folds` until `stop()`; the folds send through `send` and never wait on Kafka."""

    def __init__(self, settings: Settings, name: str) -> None:
        """`name`: the consumer group's, and its positions table is `<name>-positions`."""
        self.settings = settings
        self.group = f"{settings.topic_prefix}{name}"
        self.producer = producer(
            settings,
            name,
            **{
                "linger.ms": 1,
                # One per process: two workers may run on one host. Nothing fences a zombie by
                # its id (as nothing did under Faust); a worker that loses its partitions stops
                # writing for them (`_on_lost`).
                "transactional.id": f"{self.group}-{uuid.uuid4().hex[:12]}",
                # A killed worker's open transaction holds back every committed reader of its
                # partitions until the broker aborts it: about as long as its successor waits
                # for the group anyway (session.timeout.ms).
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                # A transaction begun right after a commit names partitions whose markers the
                # broker is still writing; it answers CONCURRENT_TRANSACTIONS, and librdkafka
                # retries after retry.backoff.ms (default 100, doubling up to 1,000). A probe
                # (begin, produce one, commit, again at once) took a median 27 ms from produce
                # to consumer at the defaults, 4.3 ms at 5 and 4.6 at 20. bench/queues.py, where
                # the loop begins a transaction as soon as it committed one, 4 interleaved
                # pairs: 104, 136, 152, 106 tasks/s against 92, 113, 129, 103.
                "retry.backoff.ms": 10,
                "retry.backoff.max.ms": 100,
            },
        )
        # Where each input partition was read to, as a table of its own in the transaction (not
        # the group's offsets: librdkafka's send_offsets_to_transaction hung for good after a
        # broker restart, librdkafka #5456/#5511, found by the broker outage test).
        self.positions: Table[Row] = Table(settings.topic(f"{name}-positions"), same, same)
        self.owned: set[int] = set()
        self._stop = threading.Event()
        self._in_transaction = False
        self._folds: Folds | None = None
        self._behind: dict[tuple[str, int], int] = {}  # input partition -> end to read up to
        self._behind_since = 0.0
        self._looks_left = 0  # times the ends are to be taken again once reached (`_caught_up`)
        self._starts_at: dict[tuple[str, int], int] = {}  # where the assignment began reading

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        if not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True
        kwargs: dict[str, Any] = {}
        if partition is not None:
            kwargs["partition"] = partition
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, **kwargs)
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain it
            else:
                return

    def dead_letter(self, msg: Message, reason: str) -> None:
        log.warning(
            "dead letter from %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), reason
        )
        headers = dlq_headers(reason, "streams", msg.topic() or "", msg.partition(), msg.offset())
        self.send(self.settings.topic("dlq"), msg.key(), msg.value(), headers=headers)

    def stop(self) -> None:
        self._stop.set()

    def _tables(self) -> list[Table[Any]]:
        assert self._folds is not None
        return [*self._folds.tables, self.positions]

    def run(self, folds: Folds) -> None:
        self._folds = folds
        self.producer.init_transactions(60)
        c = consumer(
            self.settings,
            self.group,
            **{
                "partition.assignment.strategy": "range",  # partition p of every input together
                # A killed worker's partitions go to its successor once its session lapses.
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 1000,
                # Only what a fold's transaction committed: an aborted one never happened.
                "isolation.level": "read_committed",
            },
        )
        c.subscribe(
            list(folds.inputs),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        last_commit = time.monotonic()
        stats = Stats(since=last_commit)
        try:
            while not self._stop.is_set():
                waited = time.perf_counter()
                batch = self._next_batch(c)
                started = time.perf_counter()  # the wait for input is not handling
                stats.wait_s += started - waited
                for msg in batch:
                    error = msg.error()
                    if error is not None:
                        if error.fatal():
                            raise KafkaException(error)
                        log.warning("consumer: %s", error)
                        continue
                    folds.handle(msg)
                    partition = int(msg.partition() or 0)
                    read_to = {"next": int(msg.offset() or 0) + 1}
                    self.positions.put(f"{msg.topic()}:{partition}", partition, read_to)
                handled = time.perf_counter()
                stats.events += len(batch)
                stats.handle_s += handled - started if batch else 0.0
                now = time.monotonic()
                if self.owned and self._caught_up(c):
                    for clock in folds.clocks:
                        if now >= clock.next_at:
                            clock.next_at = now + clock.every_s
                            clock.tick()
                stats.clocks_s += time.perf_counter() - handled
                self.producer.poll(0)
                if now - last_commit >= COMMIT_INTERVAL_S:
                    committing = time.perf_counter()
                    if not self.commit():
                        self._rewind(c)
                    elif self._looks_left and not self._behind:
                        self._look_again(c)
                    stats.committed(time.perf_counter() - committing)
                    last_commit = now
                if now - stats.since >= STATS_EVERY_S:
                    stats.report(now)
                    stats = Stats(since=now)
            self.commit()
        finally:
            c.close()

    @staticmethod
    def _next_batch(c: Consumer) -> list[Message]:
        """What has arrived, up to `BATCH`, without waiting for a full batch (`consume` waits
        for `num_messages` or its timeout: 7 ms more per instant task, bench/instant.py); when
        nothing has, the first message to come, waiting at most `POLL_S` (the clocks' pace)."""
        batch = c.consume(BATCH, 0)
        if batch:
            return batch
        first = c.poll(POLL_S)
        if first is None:
            return []
        return [first, *c.consume(BATCH - 1, 0)]

    def commit(self) -> bool:
        """The sent events, the changed rows and the read positions, in one transaction.
        False if it was aborted (the caller rewinds)."""
        for table in self._tables():
            for key, (partition, row) in table.take_dirty().items():
                value = None if row is None else json.dumps(row).encode()
                self.send(table.topic, json.dumps(key).encode(), value, partition=partition)
        if not self._in_transaction:
            return True
        try:
            self._retrying(lambda: self.producer.commit_transaction(60))
        except KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise
            log.warning("transaction aborted: %s", exc)
            self._retrying(lambda: self.producer.abort_transaction(60))
            return False
        finally:
            self._in_transaction = False
        return True

    def _retrying(
        self,
        call: Callable[[], R],
        what: str = "transaction call",
        *,
        any_error: bool = False,
        give_up_s: float | None = None,
    ) -> R:
        """`call` again while its error is retriable (with `any_error`, whatever it is): the
        broker may be away for a while (the agent-cron outage test stops it), and nothing can
        commit until it is back. A stopping loop gives up at once, and any caller after
        `give_up_s` (None: never)."""
        started = time.monotonic()
        while True:
            try:
                return call()
            except KafkaException as exc:
                if self._stop.is_set() or not (any_error or exc.args[0].retriable()):
                    raise
                if give_up_s is not None and time.monotonic() - started > give_up_s:
                    raise
                log.warning(
                    "%s failed, retrying (%.0f s): %s", what, time.monotonic() - started, exc
                )
                time.sleep(0.5)

    def _watermarks(
        self, client: Consumer, tp: TopicPartition, give_up_s: float | None = None
    ) -> tuple[int, int]:
        """A partition's (low, high) offsets, asked again on any error: an assignment can come
        as the broker goes away (the agent-cron outage test once stopped it then, and the error
        ended the loop's thread for good)."""
        low, high = self._retrying(
            lambda: client.get_watermark_offsets(tp, timeout=10, cached=False),
            f"offsets of {tp.topic}[{tp.partition}]",
            any_error=True,
            give_up_s=give_up_s,
        )
        return int(low), int(high)

    def _starts(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Where to read each input partition from: where the rows in memory were read to."""
        starts = []
        for tp in partitions:
            row = self.positions.get(f"{tp.topic}:{tp.partition}")
            start = int(row["next"]) if row is not None else OFFSET_BEGINNING
            starts.append(TopicPartition(tp.topic, tp.partition, start))
        return starts

    def _rewind(self, c: Consumer) -> None:
        """After an aborted transaction: the owned rows and positions from the changelogs
        again, and the inputs from there, as a successor would."""
        assert self._folds is not None
        for table in self._tables():
            table.take_dirty()
            table.drop(self.owned)
        self._restore(self.owned)
        starts = self._starts(c.assignment())
        c.assign(starts)
        self._behind_from(c, starts)
        self._folds.on_assigned(set(self.owned))

    def _on_assign(self, c: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._folds is not None
        owned = {tp.partition for tp in partitions}
        for table in self._tables():
            table.drop(self.owned - owned)
        new = owned - self.owned
        started = time.monotonic()
        restored = self._restore(new)
        self.owned = owned
        log.info(
            "owning partitions %s (restored %s rows for %s in %.2f s)",
            sorted(owned),
            restored,
            sorted(new),
            time.monotonic() - started,
        )
        starts = self._starts(partitions)
        c.assign(starts)
        self._behind_from(c, starts)
        self._folds.on_assigned(set(owned))

    def _behind_from(self, c: Consumer, starts: list[TopicPartition]) -> None:
        """The clocks wait until the inputs are read to `ends`, then to their ends once more:
        reading what was behind may send to the loop's own inputs (a replayed result's outcome
        is copied to `crons`), which it reads only after its next commit. Without that second
        look a cron whose last run ended just before a crash still looked busy to the clocks,
        and its catch-up fire was skipped as an overlap (the misfire test, once)."""
        self._starts_at = {(tp.topic, tp.partition): tp.offset for tp in starts}
        self._behind = self._ends(c, starts)
        self._behind_since = time.monotonic()
        self._looks_left = 1 if self._behind else 0

    def _look_again(self, c: Consumer) -> None:
        """After a commit: the inputs' ends now, which hold what the catch-up sent itself, from
        where each partition has been read to (where it began, if nothing was read there)."""
        self._looks_left -= 1
        read_to = []
        for tp in c.position(c.assignment()):
            if tp.offset < 0:  # nothing consumed there yet
                tp.offset = self._starts_at.get((tp.topic, tp.partition), tp.offset)
            read_to.append(tp)
        self._behind = self._ends(c, read_to)
        self._behind_since = time.monotonic()

    def _ends(self, c: Consumer, starts: list[TopicPartition]) -> dict[tuple[str, int], int]:
        """The end of each input partition that has something to read from its start: what
        happened before the clocks may decide on time."""
        ends = {}
        deadline = time.monotonic() + ENDS_WAIT_S  # for them all: each is asked once after it
        for tp in starts:
            try:
                low, high = self._watermarks(c, tp, deadline - time.monotonic())
            except KafkaException as exc:
                # Asked inside the assignment, where the client cannot mend its own metadata:
                # an assignment made as the broker went away kept failing with "Unknown
                # partition" for 90 s after it came back (the agent-cron outage test), and no
                # input was read meanwhile. The end stays unknown: the clocks wait for it up to
                # CATCH_UP_LIMIT_S, and the loop reads on.
                log.warning("end of %s[%d] unknown: %s", tp.topic, tp.partition, exc)
                ends[(tp.topic, tp.partition)] = UNKNOWN_END
                continue
            start = tp.offset if tp.offset >= 0 else low
            if start < high:
                ends[(tp.topic, tp.partition)] = high
        return ends

    def _caught_up(self, c: Consumer) -> bool:
        """Whether the inputs were read up to their ends as of the assignment. Until then the
        clocks wait: a fire's outcome still unread would make its cron look busy, and its
        next fire would be skipped as an overlap (found by the misfire test)."""
        if self._behind:
            positions = c.position([TopicPartition(t, p) for t, p in self._behind])
            for tp in positions:
                if tp.offset >= self._behind[(tp.topic, tp.partition)]:
                    del self._behind[(tp.topic, tp.partition)]
        if self._behind and time.monotonic() - self._behind_since > CATCH_UP_LIMIT_S:
            log.warning("inputs not read to their ends in time: %s; the clocks go on", self._behind)
            self._behind, self._looks_left = {}, 0
        return not self._behind and not self._looks_left  # the second look: `_behind_from`

    def _on_revoke(self, _c: Consumer, _partitions: list[TopicPartition]) -> None:
        # Eager rebalancing revokes everything; the rows stay in memory, and only the partitions
        # the next assignment leaves out are dropped (nobody else owned them in between).
        if not self.commit():
            self._forget()  # the next assignment restores every partition it gives

    def _on_lost(self, _c: Consumer, _partitions: list[TopicPartition]) -> None:
        # Another worker may own them already: nothing of ours may be written for them.
        if self._in_transaction:
            self._retrying(lambda: self.producer.abort_transaction(60))
            self._in_transaction = False
        self._forget()

    def _forget(self) -> None:
        for table in self._tables():
            table.take_dirty()
            table.drop(self.owned)
        self.owned = set()

    def _restore(self, partitions: set[int]) -> int:
        """Read the tables' changelog partitions from their beginning to their end as it is now."""
        assert self._folds is not None
        if not partitions:
            return 0
        tables = {t.topic: t for t in self._tables()}
        reader = consumer(
            self.settings,
            f"{self.group}-restore-{uuid.uuid4().hex[:8]}",
            **{"isolation.level": "read_committed"},
        )
        try:
            ends: dict[tuple[str, int], int] = {}
            starts = []
            for topic in tables:
                for p in partitions:
                    tp = TopicPartition(topic, p)
                    low, high = self._watermarks(reader, tp)
                    if high > low:
                        ends[(topic, p)] = high
                        starts.append(TopicPartition(topic, p, low))
            if not starts:
                return 0
            reader.assign(starts)
            count = 0
            deadline = time.monotonic() + RESTORE_TIMEOUT_S
            while ends:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"changelogs not restored: {sorted(ends)}")
                for msg in reader.consume(BATCH, 0.5):
                    if msg.error() is not None:
                        continue
                    topic, p = str(msg.topic()), int(msg.partition() or 0)
                    tables[topic].load(p, msg.key(), msg.value())
                    count += 1
                    if int(msg.offset() or 0) >= ends.get((topic, p), 0) - 1:
                        ends.pop((topic, p), None)
                # A compacted log may end in a gap: its position tells what a record cannot.
                for tp in reader.position([TopicPartition(t, p) for t, p in ends]):
                    if tp.offset >= ends[(tp.topic, tp.partition)]:
                        ends.pop((tp.topic, tp.partition), None)
            return count
        finally:
            reader.close()
