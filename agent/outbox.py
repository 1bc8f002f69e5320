"""The agent's durable outbox: what it must tell the center survives restarts and broker outages.

`put(topic, key, value)` returns once the row is committed to SQLite (synchronous=FULL, unless
`durable=False`: rows that only inform, which a power loss may cost but an agent crash may not). A
sender thread produces pending rows in the order they were put and deletes each one when its
delivery report says the broker has it. A delivery that fails (the broker away for longer than
`delivery_timeout_ms`) leaves its row in the table: the sender waits for everything in flight to
settle, then starts again from the oldest row, so order is kept and nothing is lost. A retry
may deliver a row twice; consumers drop repeats by `event_id`.

The same database keeps the `(task_id, attempt)` pairs the agent has taken on (`claim`), so a
dispatch that Kafka delivers again is not run again, and the ones that have not ended yet
(`running`): an attempt leaves it in the commit that puts its result (`Transaction.ended`), so
one still there at a start was running when the agent died, and the agent reports it lost
(`unended`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from elves.config import Settings
from elves.kafka import producer as make_producer

log = logging.getLogger(__name__)

BATCH = 500  # rows read and produced per round
RETRY_PAUSE_S = 1.0  # after a failed delivery, before producing from the oldest row again
RAN_KEEP_S = 8 * 24 * 3600  # longer than the dispatch topics' retention (7 days)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ran (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, attempt)
);
CREATE TABLE IF NOT EXISTS running (
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    claimed_at INTEGER NOT NULL,
    dispatch_id TEXT NOT NULL,  -- the dispatch's event id: a lost result's id derives from it
    app TEXT NOT NULL,
    func TEXT NOT NULL,
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
"""

Row = tuple[str, bytes | None, bytes]  # topic, key, value


@dataclass(frozen=True)
class Unended:
    """An attempt the agent took on and never reported the end of: it ran when the agent died."""

    task_id: str
    attempt: int
    event_id: str  # its dispatch's, as on `TaskDispatched`
    app: str
    func: str


def default_path(settings: Settings, agent_id: str = "") -> Path:
    """One outbox per agent: agents that share a state dir must not send each other's rows."""
    base = Path(settings.state_dir) / "agent"
    return (base / agent_id if agent_id else base) / "outbox.sqlite"


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    return conn


class Transaction:
    """An open commit on the outbox database: `put` outbox rows, `execute` anything else."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._now = int(time.time() * 1000)
        self.rows = 0

    def put(self, topic: str, key: bytes | None, value: bytes) -> int:
        cur = self._conn.execute(
            "INSERT INTO outbox (topic, key, value, created_at) VALUES (?,?,?,?)",
            (topic, key, value, self._now),
        )
        self.rows += 1
        return int(cur.lastrowid or 0)

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    def claim(
        self,
        task_id: str,
        attempt: int,
        *,
        dispatch_id: str = "",
        app: str = "",
        func: str = "",
        ended: bool = False,
    ) -> bool:
        """Record that the agent takes on (task_id, attempt), and that it runs, with what its
        lost result would need; `ended` when its end is in this commit too. False if it was
        taken on before."""
        claimed_at = self._now // 1000
        cur = self._conn.execute(
            "INSERT OR IGNORE INTO ran (task_id, attempt, claimed_at) VALUES (?,?,?)",
            (task_id, attempt, claimed_at),
        )
        if cur.rowcount <= 0:
            return False
        if not ended:
            self._conn.execute(
                "INSERT INTO running (task_id, attempt, claimed_at, dispatch_id, app, func)"
                " VALUES (?,?,?,?,?,?)",
                (task_id, attempt, claimed_at, dispatch_id, app, func),
            )
        return True

    def ended(self, task_id: str, attempt: int) -> None:
        """The attempt's end (its result) is in this commit."""
        self._conn.execute(
            "DELETE FROM running WHERE task_id = ? AND attempt = ?", (task_id, attempt)
        )


class Outbox:
    """Open it, `start()` the sender, `put` and `claim` from any thread, `close()` at the end."""

    def __init__(
        self,
        settings: Settings,
        path: Path | None = None,
        *,
        delivery_timeout_ms: int = 30_000,
        producer_factory: Callable[[], Producer] | None = None,
    ) -> None:
        self.path = path or default_path(settings)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # put() is durable against power loss; the sender's deletes need not be (a lost delete
        # only means one more delivery, which consumers drop by event_id).
        self._writer = _connect(self.path, "FULL")
        self._writer.executescript(_SCHEMA)
        self._writer.execute(
            "DELETE FROM ran WHERE claimed_at < ?", (int(time.time()) - RAN_KEEP_S,)
        )
        self._sender_db = _connect(self.path, "NORMAL")
        self._lock = threading.Lock()  # one statement at a time on the writer connection
        self._factory = producer_factory or (
            lambda: make_producer(
                settings, "agent-outbox", **{"message.timeout.ms": delivery_timeout_ms}
            )
        )
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._drained = threading.Condition()
        self._thread: threading.Thread | None = None
        self._inflight: set[int] = set()
        self._delivered: list[int] = []  # reported delivered, not yet deleted
        self._failed = False
        self._fatal = False

    # --- writing ------------------------------------------------------------------------------

    def put(self, topic: str, key: bytes | None, value: bytes, *, durable: bool = True) -> int:
        """Store one message; returns its sequence number. `durable=False` skips the fsync: a
        crash of the agent still keeps the row, a power loss may not (for what only informs,
        like `TaskStarted`; the next durable commit makes it durable too)."""
        with self.transaction(durable=durable) as txn:
            return txn.put(topic, key, value)

    def claim(self, task_id: str, attempt: int, *rows: Row) -> bool:
        """Record that this agent takes on (task_id, attempt), with `rows` in the same commit.

        False when it was claimed before: a redelivered dispatch, to be ignored.
        """
        with self.transaction() as txn:
            if not txn.claim(task_id, attempt):
                return False
            for row in rows:
                txn.put(*row)
        return True

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[Transaction]:
        """One commit of outbox rows and of other tables of this database (e.g. the cron's
        state), so that what the agent must tell and what it remembers never disagree.
        Each durable commit is an fsync; under load they cost the agent about 2 ms each."""
        with self._lock:
            if not durable:
                self._writer.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync at commit
            try:
                self._writer.execute("BEGIN IMMEDIATE")
                txn = Transaction(self._writer)
                try:
                    yield txn
                    self._writer.execute("COMMIT")
                except BaseException:
                    self._writer.execute("ROLLBACK")
                    raise
            finally:
                if not durable:
                    self._writer.execute("PRAGMA synchronous=FULL")
        if txn.rows:
            self._wake.set()

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Read this database (any table) on the writer's connection."""
        with self._lock:
            return list(self._writer.execute(sql, params).fetchall())

    def unended(self) -> list[Unended]:
        """The attempts taken on and not ended: at a start, those the agent was running when it
        died."""
        with self._lock:
            rows = self._writer.execute(
                "SELECT task_id, attempt, dispatch_id, app, func FROM running"
                " ORDER BY claimed_at, task_id, attempt"
            ).fetchall()
        return [Unended(*row) for row in rows]

    def has_run(self, task_id: str, attempt: int) -> bool:
        with self._lock:
            row = self._writer.execute(
                "SELECT 1 FROM ran WHERE task_id = ? AND attempt = ?", (task_id, attempt)
            ).fetchone()
        return row is not None

    def pending(self) -> int:
        with self._lock:
            (count,) = self._writer.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    # --- sending ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._send_loop, name="outbox", daemon=True)
            self._thread.start()

    def wait_empty(self, timeout: float) -> bool:
        """Wait until every row is delivered; False if some are still pending at the timeout."""
        end = time.monotonic() + timeout
        with self._drained:
            while self.pending():
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what can be within `timeout`, stop the sender; returns the rows left."""
        if self._thread is not None:
            self.wait_empty(timeout)
            self._closing.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        left = self.pending()
        self._writer.close()
        self._sender_db.close()
        if left:
            log.warning("outbox closed with %d undelivered rows; they go out on next start", left)
        return left

    def _send_loop(self) -> None:
        prod = self._factory()
        cursor = 0  # the highest seq handed to the producer
        try:
            while not self._closing.is_set():
                self._wake.clear()
                if self._failed and not self._inflight:
                    # Everything in flight has settled: start over from the oldest row left.
                    self._failed = False
                    cursor = 0
                    if self._fatal:
                        # An idempotent producer with a fatal error refuses all; build a new one.
                        self._fatal = False
                        prod.flush(0)
                        prod = self._factory()
                    self._closing.wait(RETRY_PAUSE_S)
                    continue
                produced = 0 if self._failed else self._produce_from(prod, cursor)
                if produced:
                    cursor = produced
                if self._inflight:
                    prod.poll(0.05)
                    self._delete_delivered()
                elif not produced:
                    self._wake.wait(1.0)
        finally:
            prod.flush(1.0)  # reports that arrive now still delete their rows
            self._delete_delivered()

    def _delete_delivered(self) -> None:
        """Delete the rows the broker has, in one commit per round rather than one per row."""
        if not self._delivered:
            return
        done, self._delivered = self._delivered, []
        self._sender_db.execute("BEGIN")
        self._sender_db.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq in done])
        self._sender_db.execute("COMMIT")
        if not self._inflight:
            with self._drained:
                self._drained.notify_all()

    def _produce_from(self, prod: Producer, cursor: int) -> int:
        rows = self._sender_db.execute(
            "SELECT seq, topic, key, value FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (cursor, BATCH),
        ).fetchall()
        last = 0
        for seq, topic, key, value in rows:
            try:
                prod.produce(topic, value=value, key=key, on_delivery=self._reporter(seq))
            except BufferError:
                break  # the local queue is full; poll and go on from here next round
            self._inflight.add(seq)
            last = seq
        return last

    def _reporter(self, seq: int) -> Callable[[KafkaError | None, Message], None]:
        def report(err: KafkaError | None, _msg: Message) -> None:
            self._inflight.discard(seq)
            if err is not None:
                if not self._failed:
                    log.warning("outbox delivery failed (kept for retry): %s", err)
                self._failed = True
                self._fatal = self._fatal or err.fatal()
                return
            self._delivered.append(seq)

        return report
