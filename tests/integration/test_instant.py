"""Instant tasks end to end on the real broker: REST -> Kafka -> Faust -> agent -> app -> reply."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from elves.kafka import consumer, producer
from elves.local import Stack, wait_for
from elves.topics import CORE_TOPICS

from .conftest import AGENT


def test_apptest_helloword_returns_toryzen(stack: Stack) -> None:
    reply = stack.exec(AGENT, "apptest", "helloword", {"my": "toryzen"})
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["status"] == "succeeded"
    assert data["worker_flag"] == 1
    assert data["worker_message"] == "toryzen"
    assert data["worker_costtime"] >= 0


def test_an_app_returning_false_has_flag_0(stack: Stack) -> None:
    data = stack.exec(AGENT, "crasher", "falsy").json()
    assert (data["status"], data["worker_flag"], data["worker_message"]) == ("failed", 0, "nope")


def test_a_crashing_app_has_flag_minus_1(stack: Stack) -> None:
    data = stack.exec(AGENT, "crasher", "crash", {"code": 3}).json()
    assert data["status"] == "failed"
    assert data["worker_flag"] == -1
    assert "3" in data["worker_message"]


def test_an_app_that_raises_reports_false_with_its_traceback(stack: Stack) -> None:
    data = stack.exec(AGENT, "crasher", "boom").json()
    assert data["worker_flag"] == 0
    assert "RuntimeError: boom" in data["worker_message"]


def test_a_timeout_kills_the_process_group_and_ends_timed_out(stack: Stack, tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    reply = stack.exec(
        AGENT, "sleeper", "sleep", {"seconds": 60, "pidfile": str(pidfile)}, timeout=2
    )
    data = reply.json()
    assert data["status"] == "timed_out", data
    assert data["worker_flag"] == -1
    child = int(pidfile.read_text())
    # the worker's own child (the `sleep` it started) went with the process group
    wait_for("the worker's child to be gone", lambda: not _alive(child), 5)
    state = wait_for("the audit", lambda: _task_state(stack, data["task_id"]), 10)
    assert state == "timed_out"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is already dead; only its parent has not reaped it yet
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


def _task_state(stack: Stack, task_id: str) -> str | None:
    response = stack.client.get(f"/api/v1/tasks/{task_id}")
    if response.status_code != 200:
        return None
    state = response.json()["state"]
    return state["status"] if state and state["status"] in ("timed_out", "succeeded") else None


def test_a_task_for_an_unknown_agent_is_rejected_within_a_second(stack: Stack) -> None:
    started = time.monotonic()
    reply = stack.exec("no-such-agent", "apptest", "helloword", {"my": "x"})
    elapsed = time.monotonic() - started
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "414.2"
    assert reply.json()["task_id"]
    assert elapsed < 1.0


def test_an_agent_that_stops_heartbeating_is_down_then_up_again(stack: Stack) -> None:
    agent_id = f"it-live-{uuid.uuid4().hex[:6]}"
    process = stack.spawn_agent(agent_id)
    stack.wait_agent(agent_id, "up")
    process.stop()
    threshold = stack.settings.heartbeat_s * stack.settings.missed_beats
    stack.wait_agent(agent_id, "down", timeout=threshold + 5)
    [[last_seen, down_at]] = wait_for(
        "the AgentDown in the audit",
        lambda: stack.audit(
            "SELECT JSONExtractInt(payload, 'last_seen_at'), "
            "JSONExtractInt(payload, 'occurred_at') "
            f"FROM events WHERE type = 'AgentDown' AND agent_id = '{agent_id}'"
        ),
    )
    # down once `missed_beats` intervals passed, noticed within one clock tick (0.2 s) and a beat
    assert threshold * 1000 <= down_at - last_seen <= (threshold + 1.5) * 1000
    reply = stack.exec(agent_id, "apptest", "helloword", {"my": "x"})
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "414.1"
    stack.spawn_agent(agent_id)
    stack.wait_agent(agent_id, "up")
    assert (
        stack.exec(agent_id, "apptest", "helloword", {"my": "back"}).json()["worker_message"]
        == "back"
    )


@pytest.mark.parametrize("topic", ["commands", "results", "crons", "queue-inputs"])
def test_garbage_on_a_streams_input_goes_to_the_dlq_and_the_next_task_runs(
    stack: Stack, topic: str
) -> None:
    """The folds loop reads `commands`, `results` and `crons`; the Faust queue flow,
    `queue-inputs`."""
    settings = stack.settings
    marker = f"garbage-{uuid.uuid4().hex}".encode()
    prod = producer(settings)
    prod.produce(settings.topic(topic), key=b"junk", value=marker)
    prod.flush(10)
    assert (
        stack.exec(AGENT, "apptest", "helloword", {"my": "after"}).json()["worker_message"]
        == "after"
    )
    dlq = consumer(settings, f"dlq-check-{uuid.uuid4().hex[:6]}")
    dlq.assign([TopicPartition(settings.topic("dlq"), 0, 0)])
    try:

        def found() -> dict[str, bytes] | None:
            msg = dlq.poll(0.5)
            if msg is not None and not msg.error() and msg.value() == marker:
                return dict(msg.headers() or [])
            return None

        headers = wait_for("the garbage in the DLQ", found, 20)
    finally:
        dlq.close()
    assert headers["origin"] == b"streams"
    assert headers["topic"] == settings.topic(topic).encode()
    assert b"422.1" in headers["reason"]


def test_every_event_of_a_task_is_in_the_audit_exactly_once(stack: Stack) -> None:
    task_id = stack.exec(AGENT, "apptest", "helloword", {"my": "audit"}).json()["task_id"]
    expected = {
        "TaskSubmitted",
        "TaskAccepted",
        "TaskDispatched",
        "TaskResultReported",
        "TaskSucceeded",
    }

    def counts() -> dict[str, int] | None:
        rows = stack.audit(
            f"SELECT type, count() FROM events WHERE task_id = '{task_id}' GROUP BY type"
        )
        found = {str(t): int(n) for t, n in rows}
        return found if set(found) >= expected else None

    found = wait_for("every event of the task in the audit", counts, 15)
    assert set(found) == expected
    assert all(n == 1 for n in found.values()), found
    lifecycle = stack.client.get(f"/api/v1/tasks/{task_id}").json()
    assert lifecycle["state"]["status"] == "succeeded"
    assert [e["type"] for e in lifecycle["lifecycle"]][0] == "TaskSubmitted"


def test_the_audit_holds_events_not_the_streams_internal_topics(stack: Stack) -> None:
    stack.exec(AGENT, "apptest", "helloword", {"my": "x"})  # the task table's changelog moves
    topics = {str(t) for [t] in stack.audit("SELECT DISTINCT topic FROM events")}
    prefix = stack.settings.topic_prefix
    assert topics, "the watcher stored nothing"
    events = {spec.name for spec in CORE_TOPICS} | {"dispatch", "processor"}
    assert all(t.removeprefix(prefix).split(".")[0] in events for t in topics), topics
    assert not any("changelog" in t for t in topics), topics
