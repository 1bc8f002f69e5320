"""The watcher against the real broker and the real embedded chDB engine."""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.api.audit import AuditStore
from elves.api.watcher import Position, Watcher
from elves.config import Settings
from elves.kafka import producer
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    Event,
    Heartbeat,
    TaskAccepted,
    TaskDispatched,
    TaskResultReported,
    TaskSubmitted,
    new_id,
)
from elves.signing import Signer, center_signer, sign_dispatch
from elves.topics import CORE_TOPICS, TABLE_TOPICS, ensure_dispatch_topic, ensure_topics

T0 = 1_700_000_000_000
WAIT_S = 30.0


@pytest.fixture(scope="session")
def audit_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditStore]:
    # chDB hosts one engine path per process: every test module of the session opens this one
    # path (tests keep apart by their topic prefix).
    store = AuditStore(f"chdb://{tmp_path_factory.getbasetemp() / 'audit'}")
    yield store
    store.close()


@pytest.fixture
def watcher(settings: Settings, audit_store: AuditStore) -> Iterator[Watcher]:
    ensure_topics(settings)
    w = Watcher(settings, audit_store)
    w.start()
    yield w
    w.stop()
    assert w.failure is None


def produce(
    settings: Settings, messages: list[tuple[str, bytes, dict[str, bytes] | None]]
) -> dict[Position, int]:
    """Produce (topic name without prefix, value, headers); return the last offset per partition."""
    prod = producer(settings)
    offsets: dict[Position, int] = {}
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
            return
        pos = (msg.topic(), msg.partition())
        offsets[pos] = max(offsets.get(pos, -1), msg.offset())

    for name, value, headers in messages:
        # A key on every message: the compacted topics (heartbeats, agents) refuse keyless ones.
        prod.produce(
            settings.topic(name), key=b"k", value=value, headers=headers, on_delivery=delivered
        )
    assert prod.flush(WAIT_S) == 0
    assert errors == []
    return offsets


def stored(store: AuditStore, settings: Settings) -> list[tuple[str, str, str, int]]:
    """(event_id, type, topic, copies) of every row of this test's topics, without FINAL."""
    _, rows = store.query(
        "SELECT event_id, any(type), any(topic), count() FROM events"
        f" WHERE startsWith(topic, '{settings.topic_prefix}') GROUP BY event_id ORDER BY event_id"
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def task_events(task_id: str, agent: str) -> list[tuple[str, Event]]:
    return [
        ("commands", TaskSubmitted(new_id(), T0, task_id, agent, "demo", "run", "{}", 90)),
        ("tasks", TaskAccepted(new_id(), T0 + 1, task_id, agent, "demo", "run", T0 + 95_000)),
        (
            f"dispatch.{agent}",
            TaskDispatched(new_id(), T0 + 2, task_id, 1, agent, "demo", "run", "{}", 90, T0 + 1),
        ),
        (
            "results",
            TaskResultReported(new_id(), T0 + 3, task_id, 1, agent, "demo", "run", 0, "ok", 7),
        ),
        ("heartbeats", Heartbeat(new_id(), T0 + 4, agent, "host-1", 1.0, T0, {"demo": "1.0"})),
    ]


def encoded(settings: Settings, topic: str, event: Event) -> bytes:
    """An event's bytes as its topic holds them: signed by the center on a dispatch topic."""
    if topic.startswith("dispatch.") and isinstance(event, TaskDispatched):
        return sign_dispatch(settings, event)
    return CODEC.encode(event)


def test_every_event_of_every_topic_lands_once(
    settings: Settings, audit_store: AuditStore, watcher: Watcher
) -> None:
    # The dispatch topic of a new agent appears after the watcher subscribed.
    ensure_dispatch_topic(settings, "agent-1")
    events = task_events("task-1", "agent-1")
    offsets = produce(settings, [(t, encoded(settings, t, e), None) for t, e in events])
    assert watcher.wait_for_offsets(offsets, WAIT_S)

    assert stored(audit_store, settings) == sorted(
        (e.event_id, type(e).__name__, settings.topic(topic), 1) for topic, e in events
    )
    history = audit_store.task_events("task-1")
    assert [h["type"] for h in history] == [
        "TaskSubmitted",
        "TaskAccepted",
        "TaskDispatched",
        "TaskResultReported",
    ]
    assert history[2]["topic"] == settings.dispatch_topic("agent-1")
    assert history[2]["payload"]["deadline_at"] == T0 + 1
    assert {(h["agent_id"], h["app"]) for h in history} == {("agent-1", "demo")}
    # The watcher created no topic: only the ones this test made exist under its prefix.
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    mine = {t for t in admin.list_topics(timeout=10).topics if t.startswith(settings.topic_prefix)}
    made = {settings.topic(spec.name) for spec in CORE_TOPICS + TABLE_TOPICS}
    assert mine == made | {settings.dispatch_topic("agent-1")}


def test_garbage_lands_as_undecodable_and_dead_letters_as_such(
    settings: Settings, audit_store: AuditStore, watcher: Watcher
) -> None:
    bad_fingerprint = b"\xc3\x01" + b"\x00" * 8 + b"body"
    good = TaskAccepted(new_id(), T0, "task-dl", "agent-1", "demo", "run", T0 + 95_000)
    headers = {
        "reason": b"agent-1 is not accepted",
        "origin": b"streams.tasks",
        "topic": settings.topic("commands").encode(),
        "partition": b"2",
        "offset": b"41",
    }
    offsets = produce(
        settings,
        [
            ("tasks", b"not avro at all", None),
            ("results", bad_fingerprint, None),
            ("dlq", b"\x00garbage", headers),
            ("dlq", CODEC.encode(good), headers),
        ],
    )
    assert watcher.wait_for_offsets(offsets, WAIT_S)

    _, rows = audit_store.query(
        "SELECT event_id, type, topic, partition, offset, task_id, payload FROM events"
        f" WHERE startsWith(topic, '{settings.topic_prefix}') ORDER BY topic, offset"
    )
    by_topic = {r[2].removeprefix(settings.topic_prefix) + f":{r[4]}": r for r in rows}
    assert set(by_topic) == {"tasks:0", "results:0", "dlq:0", "dlq:1"}

    tasks = by_topic["tasks:0"]
    assert tasks[:2] == (f"{settings.topic('tasks')}:0:0", "Undecodable")
    payload = json.loads(tasks[6])
    assert "no C3 01 header" in payload["reason"]
    assert base64.b64decode(payload["value"]) == b"not avro at all"
    assert "unknown schema fingerprint" in json.loads(by_topic["results:0"][6])["reason"]

    dead = by_topic["dlq:0"]
    assert dead[1] == "DeadLetter"
    assert json.loads(dead[6]) == {
        "reason": "agent-1 is not accepted",
        "origin": "streams.tasks",
        "topic": settings.topic("commands"),
        "partition": "2",
        "offset": "41",
        "key": base64.b64encode(b"k").decode(),
        "value": base64.b64encode(b"\x00garbage").decode(),
    }
    # A dead letter that is a valid event is stored under its dlq coordinates, findable by task.
    assert by_topic["dlq:1"][1] == "DeadLetter"
    assert by_topic["dlq:1"][5] == "task-dl"
    assert [e["type"] for e in audit_store.task_events("task-dl")] == ["DeadLetter"]


def test_a_dispatch_not_signed_by_the_center_is_stored_as_unverified(
    settings: Settings, audit_store: AuditStore, watcher: Watcher
) -> None:
    ensure_dispatch_topic(settings, "agent-3")
    center_signer(settings)  # the center's key exists (the streams make it at their start)
    forged = TaskDispatched(new_id(), T0, "task-f", 1, "agent-3", "demo", "run", "{}", 90, T0 + 1)
    bare = TaskDispatched(new_id(), T0, "task-u", 1, "agent-3", "demo", "run", "{}", 90, T0 + 1)
    another_key = Signer(Ed25519PrivateKey.generate(), control_ttl_s=60)
    offsets = produce(
        settings,
        [
            ("dispatch.agent-3", another_key.seal(forged, T0), None),
            ("dispatch.agent-3", CODEC.encode(bare), None),
        ],
    )
    assert watcher.wait_for_offsets(offsets, WAIT_S)
    _, rows = audit_store.query(
        "SELECT type, agent_id, task_id, payload FROM events"
        f" WHERE topic = '{settings.dispatch_topic('agent-3')}' ORDER BY offset"
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [("UnverifiedDispatch", "agent-3", "")] * 2
    assert [json.loads(r[3])["code"] for r in rows] == ["416.2", "416.1"]
    # Never in a task's lifecycle: nothing there is the center's word.
    assert audit_store.task_events("task-f") == [] and audit_store.task_events("task-u") == []


def test_restart_and_redelivery_add_no_row(settings: Settings, audit_store: AuditStore) -> None:
    ensure_topics(settings)
    ensure_dispatch_topic(settings, "agent-2")
    first = task_events("task-r1", "agent-2")
    garbage = [("tasks", b"junk", None), ("dlq", b"junk", {"reason": b"x"})]
    msgs = [(t, encoded(settings, t, e), None) for t, e in first] + garbage

    one = Watcher(settings, audit_store)
    one.start()
    offsets = produce(settings, msgs)
    assert one.wait_for_offsets(offsets, WAIT_S)
    one.stop()
    assert one.failure is None
    after_one = stored(audit_store, settings)
    assert len(after_one) == len(msgs)

    # The same event bytes produced again (a producer retry upstream), plus new events.
    second = task_events("task-r2", "agent-2")
    more = msgs[:3] + [(t, encoded(settings, t, e), None) for t, e in second]
    offsets = produce(settings, more)

    two = Watcher(settings, audit_store)  # same group: resumes after the committed offsets
    two.start()
    assert two.wait_for_offsets(offsets, WAIT_S)
    two.stop()
    assert two.failure is None
    after_two = stored(audit_store, settings)
    assert len(after_two) == len(msgs) + len(second)
    assert {copies for *_, copies in after_two} == {1}

    # A fresh group re-reads every message from the start: a full redelivery.
    three = Watcher(settings, audit_store, group=settings.topic("watcher-replay"))
    three.start()
    assert three.wait_for_offsets(offsets, WAIT_S)
    three.stop()
    assert three.failure is None
    assert three.rows_inserted == 0
    assert stored(audit_store, settings) == after_two


def test_a_hurried_watcher_inserts_before_its_flush_time(
    settings: Settings, audit_store: AuditStore
) -> None:
    """Inserts wait up to ELVES_WATCHER_FLUSH for more rows; someone waiting on the audit for
    what just happened (`hurry`) gets them within a tenth of that here."""
    slow = dataclasses.replace(settings, watcher_flush_s=10.0)
    ensure_topics(slow)

    def submitted(task_id: str) -> list[tuple[str, bytes, dict[str, bytes] | None]]:
        topic, event = task_events(task_id, "agent-h")[0]
        return [(topic, encoded(slow, topic, event), None)]

    w = Watcher(slow, audit_store)
    w.start()
    try:
        assert w.wait_for_offsets(produce(slow, submitted("t-h1")), 15.0)  # after its 10 s
        second = produce(slow, submitted("t-h2"))
        w.hurry()
        assert w.wait_for_offsets(second, 1.0)  # not another 10 s
    finally:
        w.stop()
    assert w.failure is None
