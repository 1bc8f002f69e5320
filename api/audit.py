"""The audit store: every event of every topic in ClickHouse, once, queryable with read-only SQL.

Opened from a DSN through clickhouse-connect, the same code for both backends:
- `chdb:///abs/path`: chDB, ClickHouse embedded in this process (`clickhouse_connect.get_client(
  dsn="chdb:///abs/path")` returns its experimental `ChdbClient`). chDB hosts one engine path per
  process and locks it on disk, so exactly one process opens it: in the embedded setup that is
  the gateway, which runs the watcher thread (the only writer) and answers audit queries.
- `http(s)://user:password@host:8123/db`: a ClickHouse server; the database defaults to `elves`.

Two clients share the engine: a writer, and a reader whose session is `readonly=1`, so that no
SQL a user sends can write, change settings or reach files and URLs through table functions.
The reader is never given per-query `readonly`: clickhouse-connect 1.12's chDB backend applies
such settings with `SET` and cannot restore them, which would leave the handle read-only.

Rows are keyed by `event_id` (ReplacingMergeTree ORDER BY event_id) and the single writer checks
which ids of a batch are stored before it inserts, so a replay adds no row; the replacing engine
is the safety net should two writers ever race. That check stays cheap as history grows because
event ids sort by time (UUIDv7, `schemas/events.py`): a batch's ids are in the newest granules of
each part, where random ids were in all of them. An embedded store, its table's only writer,
skips it for the ids it can answer from memory: those newer than the table's newest when it
opened, which are stored exactly when it wrote them (`api/recent_ids.py`).

Queries by task go through a bloom filter index on `task_id`: a task has a handful of events, so
they touch a handful of granules.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from elves.api.recent_ids import RecentIds, horizon_sql, opening_horizon
from elves.errors import BadSql, Unavailable
from elves.streams.queues.state import OUTCOME_NAMES

COLUMNS = (
    "event_id",
    "type",
    "topic",
    "partition",
    "offset",
    "occurred_at",
    "recorded_at",
    "agent_id",
    "task_id",
    "app",
    "payload",
    "queue_id",
    "cron_id",
)

_DDL = """
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id String,
    type LowCardinality(String),
    topic String,
    partition UInt32,
    offset UInt64,
    occurred_at DateTime64(3, 'UTC'),
    recorded_at DateTime64(3, 'UTC'),
    agent_id String,
    task_id String,
    app String,
    payload String,
    queue_id String,
    cron_id String,
    INDEX task_idx task_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX queue_idx queue_id TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX cron_idx cron_id TYPE bloom_filter(0.01) GRANULARITY 1
) ENGINE = ReplacingMergeTree
ORDER BY event_id
"""
# Tables made before queues (or crons) had no queue_id (cron_id): add them (idempotent).
_MIGRATIONS = (
    "ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS queue_id String",
    "ALTER TABLE {db}.events ADD INDEX IF NOT EXISTS queue_idx queue_id "
    "TYPE bloom_filter(0.01) GRANULARITY 1",
    "ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS cron_id String",
    "ALTER TABLE {db}.events ADD INDEX IF NOT EXISTS cron_idx cron_id "
    "TYPE bloom_filter(0.01) GRANULARITY 1",
)

TASK_ID = COLUMNS.index("task_id")
NOT_OUTPUT = "type != 'TaskOutput'"  # a task's state is folded from its other events


@dataclass(frozen=True)
class OutputRow:
    """One part of a task's output, as the audit has it (`TaskOutput`)."""

    offset: int  # on the output topic: the reader's cursor
    at: str  # ISO time the agent read it
    attempt: int
    seq: int
    agent_id: str
    stream: str
    data: str
    dropped_bytes: int


# Lifecycle order, for events of one task in the same millisecond.
TYPE_ORDER = {
    name: rank
    for rank, name in enumerate(
        (
            "TaskSubmitted",
            "TaskAccepted",
            "TaskRejected",
            "TaskDispatched",
            "DispatchRefused",  # the agent refused the dispatch: nothing starts
            "TaskStarted",
            "TaskResultReported",
            "AgentCronRan",  # an agent cron's run, reported whole: before its outcome
            "TaskSucceeded",
            "TaskFailed",
            "TaskTimedOut",
        )
    )
}

# What moves a committed queue to `running` in its fold: a task's start or its first outcome.
STARTED_OR_ENDED = (
    "(" + ", ".join(f"'{n}'" for n in sorted({"QueueTaskRunning", *OUTCOME_NAMES})) + ")"
)

# The reader's session: read-only first of all; bounds so that one query cannot stall the gateway.
READER_SETTINGS = {"max_execution_time": 30, "max_result_rows": 100_000, "readonly": 1}
READ_STATEMENTS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN")
_DEFAULT_DB = "elves"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CHECK_CHUNK = 1000  # ids per existence query, to keep the IN list modest
# How long the ids this process wrote are kept in memory, so as not to look them up: about 15 MB
# at 2,000 events a second. An id derived from an older one (a long task's outcome) is looked up.
RECENT_KEEP_MS = 60_000


@dataclass(frozen=True)
class AuditRow:
    """One message of one topic, as the audit stores it (`recorded_at` is set on insert)."""

    event_id: str
    type: str
    topic: str
    partition: int
    offset: int
    occurred_at: int  # Unix milliseconds, as events carry it
    agent_id: str
    task_id: str
    app: str
    payload: str  # JSON
    queue_id: str = ""
    cron_id: str = ""


def _utc(millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(millis / 1000, dt.UTC)


def _iso(value: dt.datetime) -> str:
    if value.tzinfo is None:  # chDB may hand back the zone-less form of a UTC column
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat(timespec="milliseconds")


class AuditStore:
    """The ClickHouse side of the audit: batched idempotent inserts and read-only queries."""

    def __init__(self, dsn: str, *, sole_writer: bool | None = None) -> None:
        """`sole_writer`: this process alone writes the table, so the ids it wrote need no
        lookup (`api/recent_ids.py`). By default, for an embedded store only: several gateways
        may write to a server's."""
        target = urlparse(dsn)
        self.dsn = dsn
        self.embedded = target.scheme == "chdb"
        if self.embedded:
            self.database = _DEFAULT_DB
            base = dsn
        else:
            self.database = target.path.strip("/") or _DEFAULT_DB
            base = target._replace(path="").geturl()
        if not _IDENT.match(self.database):
            raise ValueError(f"database name {self.database!r} is not a plain identifier")
        # Serialises check-then-insert, which makes the dedupe exact for this process.
        self._write_lock = threading.Lock()
        try:
            self._writer = self._client(base, None, {})
            self._writer.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            self._writer.command(_DDL.format(db=self.database))
            for migration in _MIGRATIONS:
                self._writer.command(migration.format(db=self.database))
            self._reader = self._client(base, self.database, READER_SETTINGS)
        except ClickHouseError as exc:
            owner = " (only one process may open a chDB path)" if self.embedded else ""
            raise Unavailable(f"audit store {dsn} cannot be opened{owner}: {exc}") from exc
        self.table = f"{self.database}.events"
        alone = self.embedded if sole_writer is None else sole_writer
        self._recent = self._open_recent() if alone else None

    def _client(self, base: str, database: str | None, settings: dict[str, Any]) -> Any:
        extra: dict[str, Any] = {}
        if not self.embedded:
            # Without a session id, HTTP requests of several threads never hit "session locked".
            extra["autogenerate_session_id"] = False
        return clickhouse_connect.get_client(
            dsn=base, database=database, settings=settings, **extra
        )

    def close(self) -> None:
        self._reader.close()
        self._writer.close()

    def insert(self, rows: Sequence[AuditRow]) -> int:
        """Insert the rows whose event_id is not stored yet; return how many were inserted."""
        batch: dict[str, AuditRow] = {}
        for row in rows:
            batch.setdefault(row.event_id, row)  # first wins: a redelivery carries the same data
        if not batch:
            return 0
        with self._write_lock:
            if self._recent is None:
                stored = self._stored_ids(list(batch))
            else:
                self._recent.forget_before(time.time_ns() // 1_000_000)
                stored, unknown = self._recent.split(batch)
                stored |= self._stored_ids(unknown) if unknown else set()
            fresh = [row for event_id, row in batch.items() if event_id not in stored]
            self._write(fresh)
            return len(fresh)

    def insert_new(self, fresh: Sequence[AuditRow]) -> None:
        """Insert rows known not to be stored, without looking: a bulk load of new rows (the
        benchmark fills its tables so). `insert` is for anything that may be a replay."""
        with self._write_lock:
            self._write(fresh)

    def _write(self, fresh: Sequence[AuditRow]) -> None:
        """Insert the rows, and remember their ids once they are in (`_recent`)."""
        if not fresh:
            return
        now = dt.datetime.now(dt.UTC)
        data = [
            [
                r.event_id,
                r.type,
                r.topic,
                r.partition,
                r.offset,
                _utc(r.occurred_at),
                now,
                r.agent_id,
                r.task_id,
                r.app,
                r.payload,
                r.queue_id,
                r.cron_id,
            ]
            for r in fresh
        ]
        try:
            self._writer.insert(self.table, data, column_names=COLUMNS)
        except ClickHouseError as exc:
            raise Unavailable(f"audit insert failed: {exc}") from exc
        if self._recent is not None:
            self._recent.add(row.event_id for row in fresh)

    def _open_recent(self) -> RecentIds:
        try:
            found = self._writer.query(horizon_sql(self.table)).result_rows
        except ClickHouseError as exc:
            raise Unavailable(f"audit store {self.dsn}: its newest id unread: {exc}") from exc
        return RecentIds(opening_horizon(found[0][0] if found else None), RECENT_KEEP_MS)

    def _stored_ids(self, ids: list[str]) -> set[str]:
        stored: set[str] = set()
        for start in range(0, len(ids), _CHECK_CHUNK):
            chunk = ids[start : start + _CHECK_CHUNK]
            try:
                result = self._writer.query(
                    f"SELECT DISTINCT event_id FROM {self.table}"
                    " WHERE event_id IN {ids:Array(String)}",
                    parameters={"ids": chunk},
                )
            except ClickHouseError as exc:
                raise Unavailable(f"audit lookup failed: {exc}") from exc
            stored.update(row[0] for row in result.result_rows)
        return stored

    def query(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read-only statement; any refusal or ClickHouse error is a `BadSql` (403.5)."""
        statement = read_only_statement(sql)
        try:
            result = self._reader.query(statement)
        except ClickHouseError as exc:
            code = getattr(exc, "code", None)
            raise BadSql(str(exc), clickhouse_code=code) from exc
        return list(result.column_names), [tuple(row) for row in result.result_rows]

    def task_events(self, task_id: str) -> list[dict[str, Any]]:
        """Every event of a task in the order it happened, JSON-ready (payload parsed); not its
        output (`task_output`), which may be many and tells nothing of its state."""
        rows = self._select(f"task_id = {{v:String}} AND {NOT_OUTPUT}", task_id)
        return _in_order(rows, TYPE_ORDER)

    def task_output(self, task_id: str, after: int = -1, limit: int = 1000) -> list[OutputRow]:
        """A task's output parts (`TaskOutput`) after the offset `after`, in order. All of a
        task's parts are on one partition of the output topic (its key is the task id), so
        their offsets order them, retries included, and one is a reader's cursor."""
        try:
            result = self._reader.query(
                f"SELECT event_id, offset, occurred_at, payload FROM {self.table} "
                "WHERE task_id = {v:String} AND type = 'TaskOutput' AND offset > {after:Int64} "
                "ORDER BY offset LIMIT {limit:UInt32}",
                parameters={"v": task_id, "after": after, "limit": limit},
            )
        except ClickHouseError as exc:
            raise Unavailable(f"audit lookup failed: {exc}") from exc
        parts: dict[str, OutputRow] = {}  # by event id: a copy two writers left counts once
        for event_id, offset, occurred_at, payload in result.result_rows:
            fields = json.loads(payload)
            parts[event_id] = OutputRow(
                offset=int(offset),
                at=_iso(occurred_at),
                attempt=int(fields["attempt"]),
                seq=int(fields["seq"]),
                agent_id=str(fields["agent_id"]),
                stream=str(fields["stream"]),
                data=str(fields["data"]),
                dropped_bytes=int(fields.get("dropped_bytes") or 0),
            )
        return sorted(parts.values(), key=lambda part: part.offset)

    def output_counts(self, task_id: str) -> dict[int, int]:
        """How many of a task's output parts the audit holds, by attempt (a part two writers
        left counts once: by event id)."""
        try:
            result = self._reader.query(
                f"SELECT JSONExtractInt(payload, 'attempt') AS attempt, uniqExact(event_id) "
                f"FROM {self.table} WHERE task_id = {{v:String}} AND type = 'TaskOutput' "
                "GROUP BY attempt",
                parameters={"v": task_id},
            )
        except ClickHouseError as exc:
            raise Unavailable(f"audit lookup failed: {exc}") from exc
        return {int(attempt): int(n) for attempt, n in result.result_rows}

    def queue_events(self, queue_id: str) -> list[dict[str, Any]]:
        """Every event naming a queue (its own, its tasks' outcomes, its commands), by time. The
        queue view folds them in the queue's log order instead (`api/queues.py`): times do not
        order cause and effect across the agents' clocks."""
        return _in_order(self._select("queue_id = {v:String}", queue_id), {})

    def queues(
        self,
        since_ms: int,
        limit: int,
        apps: Sequence[str] | None = None,
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """The queues created since `since_ms`, newest first: each one's app, name, status, task
        count and times, summed up from its events. `apps`: only queues of these apps (None:
        any). A queue's status is its `QueueFinished`'s, else `running` once a task of it
        started or ended, else `committed` or `open`: what its fold says, without folding it.

        The queues are found by their `QueueCreated` in the time range (the events table is
        ordered by time-ordered ids), then their other events through the `queue_id` index."""
        where = ["type = 'QueueCreated'", "occurred_at >= fromUnixTimestamp64Milli({since:Int64})"]
        params: dict[str, Any] = {"since": since_ms, "limit": limit}
        if apps is not None:
            where.append("app IN {apps:Array(String)}")
            params["apps"] = list(apps)
        having = ""
        if status is not None:
            having = "HAVING status = {status:String}"
            params["status"] = status
        sql = f"""
            SELECT queue_id,
                   anyIf(app, type = 'QueueCreated') AS app,
                   anyIf(JSONExtractString(payload, 'name'), type = 'QueueCreated') AS name,
                   toUnixTimestamp64Milli(minIf(occurred_at, type = 'QueueCreated')) AS created,
                   argMaxIf(JSONExtractString(payload, 'status'), occurred_at,
                            type = 'QueueFinished') AS ended,
                   toUnixTimestamp64Milli(maxIf(occurred_at, type = 'QueueFinished')) AS finished,
                   countIf(type = 'QueueTaskAdded') AS tasks,
                   multiIf(ended != '', ended,
                           countIf(type IN {STARTED_OR_ENDED}) > 0, 'running',
                           countIf(type = 'QueueCommitted') > 0, 'committed',
                           'open') AS status
            FROM {self.table}
            WHERE queue_id IN (SELECT queue_id FROM {self.table} WHERE {" AND ".join(where)})
            GROUP BY queue_id
            {having}
            ORDER BY created DESC, queue_id
            LIMIT {{limit:UInt32}}"""
        try:
            result = self._reader.query(sql, parameters=params)
        except ClickHouseError as exc:
            raise Unavailable(f"audit lookup failed: {exc}") from exc
        return [
            {
                "queue_id": queue_id,
                "app": app,
                "name": name,
                "status": state,
                "tasks": int(tasks),
                "created_at": int(created),
                "finished_at": int(finished) if ended else None,
            }
            for queue_id, app, name, created, ended, finished, tasks, state in result.result_rows
        ]

    def task_ids(
        self,
        since_ms: int,
        limit: int,
        offset: int = 0,
        apps: Sequence[str] | None = None,
        agents: Sequence[str] | None = None,
        had: Sequence[str] = (),
        lacked: Sequence[str] = (),
    ) -> list[str]:
        """The tasks made since `since_ms` (submitted, or run by an agent's own cron), newest
        first, `limit` of them after the first `offset`. `apps` and `agents`: only tasks of these
        (None: any). `had`: only tasks with an event of one of these types, from `since_ms` on,
        and `lacked`: only tasks with none of these (a status's necessary signs: the caller
        folds the tasks to know their status)."""
        where = [
            "type IN ('TaskSubmitted', 'AgentCronRan')",
            "occurred_at >= fromUnixTimestamp64Milli({since:Int64})",
        ]
        params: dict[str, Any] = {"since": since_ms, "limit": limit, "offset": offset}
        if apps is not None:
            where.append("app IN {apps:Array(String)}")
            params["apps"] = list(apps)
        if agents is not None:
            where.append("agent_id IN {agents:Array(String)}")
            params["agents"] = list(agents)
        for name, types, test in (("had", had, "IN"), ("lacked", lacked, "NOT IN")):
            if types:
                # An agent's clock may stamp an outcome before the center's submission: a margin.
                where.append(
                    f"task_id {test} (SELECT task_id FROM {self.table} "
                    f"WHERE type IN {{{name}:Array(String)}} "
                    "AND occurred_at >= fromUnixTimestamp64Milli({since:Int64}) - INTERVAL 1 HOUR)"
                )
                params[name] = list(types)
        sql = f"""
            SELECT task_id, min(occurred_at) AS made
            FROM {self.table}
            WHERE {" AND ".join(where)}
            GROUP BY task_id
            ORDER BY made DESC, task_id
            LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}"""
        try:
            result = self._reader.query(sql, parameters=params)
        except ClickHouseError as exc:
            raise Unavailable(f"audit lookup failed: {exc}") from exc
        return [str(row[0]) for row in result.result_rows]

    def tasks_events(self, task_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
        """`task_events` of each of these tasks, in one query."""
        if not task_ids:
            return {}
        rows = self._select(f"task_id IN {{v:Array(String)}} AND {NOT_OUTPUT}", list(task_ids))
        by_task: dict[str, list[tuple[Any, ...]]] = {t: [] for t in task_ids}
        for row in rows:
            by_task.setdefault(row[TASK_ID], []).append(row)
        return {t: _in_order(found, TYPE_ORDER) for t, found in by_task.items()}

    def _select(self, condition: str, value: object) -> list[tuple[Any, ...]]:
        try:
            result = self._reader.query(
                f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE {condition}",
                parameters={"v": value},
            )
        except ClickHouseError as exc:
            raise Unavailable(f"audit lookup failed: {exc}") from exc
        return [tuple(row) for row in result.result_rows]

    def count(self) -> int:
        """Stored events; exact because the single writer never inserts a stored id."""
        try:
            result = self._reader.query(f"SELECT count() FROM {self.table}")
        except ClickHouseError as exc:
            raise Unavailable(f"audit count failed: {exc}") from exc
        return int(result.result_rows[0][0])


def _in_order(rows: Sequence[tuple[Any, ...]], order: Mapping[str, int]) -> list[dict[str, Any]]:
    """Audit rows as JSON-ready events (payload parsed), by time, then `order` of their types.

    No FINAL in the queries: it widens the bloom filter's few granules back to whole parts (4x
    slower at 300k rows); the rare copy two racing writers could leave is dropped here instead."""
    unique = {row[0]: row for row in rows}
    events = [dict(zip(COLUMNS, row, strict=True)) for row in unique.values()]
    events.sort(
        key=lambda e: (
            e["occurred_at"].replace(tzinfo=None),
            order.get(e["type"], len(order)),
            e["topic"],
            e["partition"],
            e["offset"],
        )
    )
    for e in events:
        e["occurred_at"] = _iso(e["occurred_at"])
        e["recorded_at"] = _iso(e["recorded_at"])
        e["payload"] = json.loads(e["payload"])
    return events


def read_only_statement(sql: str) -> str:
    """The one statement of `sql` without its trailing `;`, if it only reads; else `BadSql`.

    The reader's read-only session is the real guard; this check gives a clear refusal before
    the engine is asked and keeps a second statement from ever being sent.
    """
    body = _strip_trailing(sql)
    inner = _semicolon_outside_literals(body)
    if inner is not None:
        raise BadSql("only one statement is allowed", position=inner)
    first = _first_word(body)
    if first.upper() not in READ_STATEMENTS:
        allowed = ", ".join(READ_STATEMENTS)
        raise BadSql(f"only read statements are allowed ({allowed}); got {first[:20]!r}")
    return body


def _strip_trailing(sql: str) -> str:
    body = sql.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    return body


def _semicolon_outside_literals(sql: str) -> int | None:
    """Position of a `;` outside strings, quoted identifiers and comments, if any."""
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in "'\"`":
            i += 1
            while i < n and sql[i] != ch:
                i += 2 if sql[i] == "\\" else 1
        elif sql.startswith("--", i) or ch == "#":
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            end = sql.find("*/", i + 2)
            i = n if end < 0 else end + 1
        elif ch == ";":
            return i
        i += 1
    return None


def _first_word(sql: str) -> str:
    body = sql
    while True:
        body = body.lstrip().lstrip("(").lstrip()
        if body.startswith("--") or body.startswith("#"):
            body = body.partition("\n")[2]
        elif body.startswith("/*"):
            body = body.partition("*/")[2]
        else:
            break
    match = re.match(r"[A-Za-z]+", body)
    return match.group(0) if match else body[:1]
