"""Running an ended queue again, on the real broker: only what did not succeed, or everything."""

from __future__ import annotations

import time
from pathlib import Path

from confluent_kafka import TopicPartition

from elves.kafka import consumer
from elves.local import Stack, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import QueueFinished

from .test_cli import elves
from .test_queues import add, by_task, commit, create, final


def code(reply: object) -> tuple[int, str]:
    return reply.status_code, reply.json()["error"]["code"]  # type: ignore[attr-defined]


def test_a_failed_queue_runs_again_from_where_it_failed(stack: Stack, tmp_path: Path) -> None:
    q = create(stack, "crasher")
    a, b, c = (f"{q[:8]}-{n}" for n in "abc")
    add(stack, q, a, "noisy")
    add(stack, q, b, "flaky", params={"marker": str(tmp_path / "m")}, depends_on=[a])
    add(stack, q, c, "noisy", depends_on=[a, b])
    commit(stack, q)
    first = final(stack, q)
    assert first["status"] == "failed"
    assert [t["status"] for t in first["tasks"]] == ["succeeded", "failed", "skipped"]

    reply = stack.client.post(f"/api/v1/queues/{q}/rerun", json={"only": "unsuccessful"})
    assert reply.status_code == 201, reply.text
    again = reply.json()
    q2, suffix = again["queue_id"], again["queue_id"][:8]
    assert again["rerun_of"] == q and again["committed"] and again["added"] == 2
    assert [(t["rerun_of"], t["task_id"]) for t in again["tasks"]] == [
        (b, f"{b}~{suffix}"),
        (c, f"{c}~{suffix}"),
    ]
    second = final(stack, q2)
    assert second["status"] == "succeeded" and second["name"] == f"rerun of {q}"
    tasks = by_task(second)
    assert tasks[f"{b}~{suffix}"]["worker_message"] == "second try works"
    # a succeeded the first time: met, so dropped; b runs again, so c waits for its new id.
    assert tasks[f"{b}~{suffix}"]["depends_on"] == []
    assert tasks[f"{c}~{suffix}"]["depends_on"] == [f"{b}~{suffix}"]
    assert final(stack, q)["status"] == "failed"  # the first run's log is what happened

    # Everything again, from the command line, followed to its end.
    everything = elves(stack, "queue", "rerun", q2, "--name", "third", "--wait")
    assert everything.returncode == 0, everything.stdout + everything.stderr
    q3 = everything.stdout.splitlines()[0]
    third = final(stack, q3)
    assert third["name"] == "third" and third["status"] == "succeeded"
    assert [t["task_id"] for t in third["tasks"]] == [f"{b}~{q3[:8]}", f"{c}~{q3[:8]}"]

    nothing = stack.client.post(f"/api/v1/queues/{q3}/rerun", json={"only": "unsuccessful"})
    assert code(nothing) == (409, "412.7")


def test_only_an_ended_queue_runs_again(stack: Stack) -> None:
    q = create(stack, "apptest")
    add(stack, q, f"{q[:8]}-a", "helloword")
    wait_for("the queue in the audit", lambda: stack.client.get(f"/api/v1/queues/{q}").is_success)
    assert code(stack.client.post(f"/api/v1/queues/{q}/rerun")) == (409, "412.2")
    assert code(stack.client.post("/api/v1/queues/no-such-queue/rerun")) == (404, "412.1")
    bad = stack.client.post(f"/api/v1/queues/{q}/rerun", json={"only": "some"})
    assert bad.status_code == 400 and "only" in bad.json()["error"]["message"]


def test_a_queue_runs_again_the_moment_its_end_is_on_kafka(stack: Stack) -> None:
    """A reader of `queues` learns that a queue ended before the audit does. A rerun asked at
    that moment waits for the audit to catch up, rather than say the queue still runs."""
    topic = stack.settings.topic("queues")
    reader = consumer(stack.settings, f"test-{time.monotonic_ns()}")
    try:
        partitions = reader.list_topics(topic, timeout=10).topics[topic].partitions
        ends = [
            TopicPartition(topic, p, reader.get_watermark_offsets(TopicPartition(topic, p))[1])
            for p in partitions
        ]
        reader.assign(ends)
        q = create(stack, "crasher")
        add(stack, q, f"{q[:8]}-a", "noisy")
        commit(stack, q)

        def ended() -> bool:
            msg = reader.poll(0.05)
            if msg is None or msg.error():
                return False
            event = CODEC.decode(msg.value())
            return isinstance(event, QueueFinished) and event.queue_id == q

        wait_for(f"queue {q}'s end on Kafka", ended, 60)
        reply = stack.client.post(f"/api/v1/queues/{q}/rerun")
    finally:
        reader.close()
    assert reply.status_code == 201, reply.text
    assert final(stack, reply.json()["queue_id"])["status"] == "succeeded"
