"""AuditStore against the real embedded chDB engine."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.api.audit import AuditRow, AuditStore, read_only_statement
from elves.errors import BadSql
from elves.schemas.events import new_id

T0 = 1_700_000_000_000


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditStore]:
    # chDB hosts one engine path per process: every test module of the session opens this one
    # path (test_watcher too); each test uses its own ids and task ids.
    path: Path = tmp_path_factory.getbasetemp() / "audit"
    s = AuditStore(f"chdb://{path}")
    yield s
    s.close()


def row(event_id: str, kind: str, task: str, at: int, topic: str = "p.tasks", offset: int = 0):
    return AuditRow(
        event_id=event_id,
        type=kind,
        topic=topic,
        partition=0,
        offset=offset,
        occurred_at=at,
        agent_id="agent-1",
        task_id=task,
        app="demo",
        payload=f'{{"event_id": "{event_id}"}}',
    )


def ids_of(store: AuditStore, prefix: str) -> list[tuple[str, int]]:
    _, rows = store.query(
        f"SELECT event_id, count() FROM events WHERE startsWith(event_id, '{prefix}')"
        " GROUP BY event_id ORDER BY event_id"
    )
    return [(r[0], r[1]) for r in rows]


def test_creates_the_table_with_its_columns(store: AuditStore) -> None:
    columns, rows = store.query("DESCRIBE events")
    assert columns[:2] == ["name", "type"]
    assert {r[0]: r[1] for r in rows} == {
        "event_id": "String",
        "type": "LowCardinality(String)",
        "topic": "String",
        "partition": "UInt32",
        "offset": "UInt64",
        "occurred_at": "DateTime64(3, 'UTC')",
        "recorded_at": "DateTime64(3, 'UTC')",
        "agent_id": "String",
        "task_id": "String",
        "app": "String",
        "payload": "String",
        "queue_id": "String",
        "cron_id": "String",
    }


def test_reopening_an_existing_store_keeps_its_rows(store: AuditStore) -> None:
    store.insert([row("reopen-1", "TaskSubmitted", "t-reopen", T0)])
    again = AuditStore(store.dsn)  # same path, same process: a second handle on the engine
    try:
        assert again.task_events("t-reopen")[0]["event_id"] == "reopen-1"
    finally:
        again.close()


def test_reinserting_stored_ids_adds_no_row(store: AuditStore) -> None:
    batch = [row(f"dup-{i}", "TaskStarted", "t-dup", T0 + i) for i in range(5)]
    assert store.insert(batch) == 5
    assert store.insert(batch) == 0
    # a batch with repeats inside it and one new id
    assert store.insert(batch[:2] + batch[:2] + [row("dup-9", "TaskStarted", "t-dup", T0)]) == 1
    assert ids_of(store, "dup-") == [(f"dup-{i}", 1) for i in (0, 1, 2, 3, 4, 9)]


def test_time_ordered_ids_are_stored_once_across_a_reopen(store: AuditStore) -> None:
    # The store answers for the ids it wrote from memory; a handle opened later does not know
    # them, and looks them up in the table.
    batch = [row(new_id(), "TaskStarted", "t-v7dup", T0 + i) for i in range(5)]
    assert store.insert(batch) == 5
    assert store.insert(batch) == 0
    again = AuditStore(store.dsn)
    try:
        later = row(new_id(), "TaskStarted", "t-v7dup", T0 + 9)
        assert again.insert([*batch, later]) == 1
        assert again.insert([*batch, later]) == 0
    finally:
        again.close()
    ids = sorted(r.event_id for r in [*batch, later])
    _, rows = store.query(
        "SELECT event_id, count() FROM events WHERE task_id = 't-v7dup' GROUP BY event_id"
        " ORDER BY event_id"
    )
    assert rows == [(i, 1) for i in ids]


def test_count_counts_every_stored_event(store: AuditStore) -> None:
    before = store.count()
    store.insert([row(f"count-{i}", "TaskStarted", "t-count", T0) for i in range(3)])
    store.insert([row(f"count-{i}", "TaskStarted", "t-count", T0) for i in range(3)])
    assert store.count() == before + 3


def test_task_events_in_order_of_time_then_lifecycle(store: AuditStore) -> None:
    store.insert(
        [
            row("ord-d", "TaskSucceeded", "t-ord", T0 + 50),
            row("ord-c", "TaskStarted", "t-ord", T0 + 10),
            row("ord-b", "TaskDispatched", "t-ord", T0),  # same millisecond as accepted
            row("ord-a", "TaskAccepted", "t-ord", T0),
            row("ord-z", "TaskSubmitted", "t-ord", T0 - 5),
            row("other", "TaskSubmitted", "t-other", T0),
        ]
    )
    events = store.task_events("t-ord")
    assert [e["type"] for e in events] == [
        "TaskSubmitted",
        "TaskAccepted",
        "TaskDispatched",
        "TaskStarted",
        "TaskSucceeded",
    ]
    first = events[0]
    assert first["occurred_at"] == "2023-11-14T22:13:19.995+00:00"
    assert first["payload"] == {"event_id": "ord-z"}
    assert (first["agent_id"], first["app"], first["topic"]) == ("agent-1", "demo", "p.tasks")
    assert store.task_events("t-none") == []


def test_task_ids_narrow_to_tasks_with_some_events_and_without_others(store: AuditStore) -> None:
    store.insert(
        [
            row("nar-1s", "TaskSubmitted", "t-nar-accepted", T0),
            row("nar-1a", "TaskAccepted", "t-nar-accepted", T0 + 1),
            row("nar-2s", "TaskSubmitted", "t-nar-dispatched", T0 + 2),
            row("nar-2a", "TaskAccepted", "t-nar-dispatched", T0 + 3),
            row("nar-2d", "TaskDispatched", "t-nar-dispatched", T0 + 3),
            row("nar-3s", "TaskSubmitted", "t-nar-rejected", T0 + 4),
            row("nar-3r", "TaskRejected", "t-nar-rejected", T0 + 5),
        ]
    )

    def ids(**signs: tuple[str, ...]) -> list[str]:
        found = store.task_ids(T0 - 1, 100, **signs)
        return [t for t in found if t.startswith("t-nar-")]

    assert ids() == ["t-nar-rejected", "t-nar-dispatched", "t-nar-accepted"]  # newest first
    assert ids(had=("TaskAccepted",)) == ["t-nar-dispatched", "t-nar-accepted"]
    assert ids(had=("TaskAccepted",), lacked=("TaskDispatched",)) == ["t-nar-accepted"]
    assert ids(lacked=("TaskAccepted",)) == ["t-nar-rejected"]


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO events (event_id) VALUES ('x')",
        "DROP TABLE events",
        "SELECT 1; DROP TABLE events",
        "ALTER TABLE events DELETE WHERE 1",
        "SET readonly = 0",
        "/* SELECT */ TRUNCATE TABLE events",
    ],
)
def test_query_refuses_anything_but_one_read(store: AuditStore, sql: str) -> None:
    with pytest.raises(BadSql) as caught:
        store.query(sql)
    assert caught.value.code == "403.5"
    assert store.query(
        "SELECT count() FROM system.tables WHERE database = 'elves' AND name = 'events'"
    )[1] == [(1,)]


@pytest.mark.parametrize(
    ("sql", "clickhouse_code"),
    [
        # table functions reach files and the network: the read-only session refuses them
        ("SELECT * FROM file('/etc/hostname', 'LineAsString')", 164),
        ("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", 164),
        ("SELECT 1 SETTINGS readonly = 0", 164),
        ("SELECT nope FROM events", 47),
    ],
)
def test_query_errors_carry_clickhouse_message(
    store: AuditStore, sql: str, clickhouse_code: int
) -> None:
    with pytest.raises(BadSql) as caught:
        store.query(sql)
    assert caught.value.code == "403.5"
    assert caught.value.details["clickhouse_code"] == clickhouse_code
    assert f"Code: {clickhouse_code}." in caught.value.message


def test_a_refused_query_leaves_the_writer_writable(store: AuditStore) -> None:
    with pytest.raises(BadSql):
        store.query("SELECT * FROM file('/etc/hostname', 'LineAsString')")
    assert store.insert([row("after-refusal", "TaskStarted", "t-after", T0)]) == 1


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT ';' AS semicolon;",
        "  with 1 AS x SELECT x",
        "-- the tasks\nSELECT 1",
        "(SELECT 1) UNION ALL (SELECT 2)",
        "SHOW TABLES",
        "DESCRIBE events",
        "EXPLAIN SELECT 1",
    ],
)
def test_query_accepts_reads(store: AuditStore, sql: str) -> None:
    columns, _ = store.query(sql)
    assert columns
    assert not read_only_statement(sql).endswith(";")


def test_queries_while_the_writer_inserts(store: AuditStore) -> None:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(20):
                store.insert([row(f"conc-{n}-{i}", "TaskStarted", "t-conc", T0) for i in range(50)])
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    while writer.is_alive():
        store.query("SELECT count() FROM events WHERE task_id = 't-conc'")
    writer.join()
    assert errors == []
    assert store.query("SELECT count() FROM events WHERE task_id = 't-conc'")[1] == [(1000,)]
