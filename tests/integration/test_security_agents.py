"""Agent enrolment and signed dispatch on the real broker, through the session's stack.

An agent the operator has not accepted gets nothing; an agent acts only on what the center
signed for it, in time, once; everything else is refused and lands in the audit as a
`DispatchRefused`. The agents here are this module's own, started on the session's stack.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.kafka import consumer, producer
from elves.local import Process, Stack, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import TaskDispatched
from elves.signing import Signer, sign_dispatch

from .test_cli import elves


def dispatch(agent_id: str, app: str = "apptest", func: str = "helloword") -> TaskDispatched:
    now = int(time.time() * 1000)
    return TaskDispatched(
        event_id=str(uuid.uuid4()),
        occurred_at=now,
        task_id=f"sec-{uuid.uuid4().hex[:12]}",
        attempt=1,
        agent_id=agent_id,
        app=app,
        func=func,
        params=json.dumps({"my": "toryzen"}),
        timeout_s=20,
        deadline_at=now + 60_000,
    )


def send(stack: Stack, agent_id: str, *values: bytes) -> list[int]:
    """Straight to the agent's dispatch topic, past the streams, as an intruder with write
    access to the topic would; the offsets they got."""
    prod = producer(stack.settings)
    offsets: list[int] = []
    for value in values:
        prod.produce(
            stack.settings.dispatch_topic(agent_id),
            value=value,
            on_delivery=lambda err, msg: offsets.append(-1 if err else msg.offset()),
        )
    assert prod.flush(10) == 0
    return sorted(offsets)


def types_of(stack: Stack, task_id: str) -> list[str]:
    rows = stack.audit(f"SELECT type FROM events WHERE task_id = '{task_id}' ORDER BY type")
    return [str(t) for [t] in rows]


def refusal(stack: Stack, task_id: str) -> dict[str, Any]:
    """The agent's DispatchRefused for a task, from the audit (waits for it)."""

    def found() -> dict[str, Any] | None:
        rows = stack.audit(
            f"SELECT payload FROM events WHERE type = 'DispatchRefused' AND task_id = '{task_id}'"
        )
        return json.loads(rows[0][0]) if rows else None

    payload: dict[str, Any] = wait_for(f"the refusal of {task_id} in the audit", found, 30)
    return payload


def ran(stack: Stack, task_id: str) -> None:
    """Wait until the task's result is in the audit: the agent has read up to it."""
    wait_for(
        f"{task_id} run",
        lambda: "TaskResultReported" in types_of(stack, task_id),
        30,
    )


def start_agent(stack: Stack, accept: bool, **env: str) -> tuple[str, Process]:
    agent_id = f"it-sec-{uuid.uuid4().hex[:6]}"
    return agent_id, stack.spawn_agent(agent_id, accept=accept, **env)


def stop_agent(stack: Stack, process: Process) -> None:
    process.stop()
    stack.processes.remove(process)


@pytest.fixture(scope="module")
def guarded(stack: Stack) -> Iterator[str]:
    """An accepted agent of this module's own."""
    agent_id, process = start_agent(stack, accept=True)
    try:
        stack.wait_agent(agent_id)
        yield agent_id
    finally:
        stop_agent(stack, process)


def instant(stack: Stack, **body: Any) -> Any:
    full = {"app": "apptest", "func": "helloword", "params": {"my": "toryzen"}, **body}
    return stack.client.post("/api/v1/tasks/instant", json={"timeout": 20, **full}, timeout=60)


def test_a_forged_and_an_unsigned_dispatch_are_not_run_and_refused_in_the_audit(
    stack: Stack, guarded: str
) -> None:
    forged, unsigned, mark = (dispatch(guarded) for _ in range(3))
    intruder = Signer(Ed25519PrivateKey.generate(), control_ttl_s=60)
    offsets = send(
        stack,
        guarded,
        intruder.seal(forged, forged.occurred_at),
        CODEC.encode(unsigned),
        sign_dispatch(stack.settings, mark),  # the center's: the agent reads in order
    )
    ran(stack, mark.task_id)
    bad_signature, no_signature = refusal(stack, forged.task_id), refusal(stack, unsigned.task_id)
    assert (bad_signature["code"], bad_signature["agent_id"]) == ("416.2", guarded)
    assert bad_signature["key_id"] == intruder.key_id
    assert bad_signature["topic"] == stack.settings.dispatch_topic(guarded)
    assert no_signature["code"] == "416.1" and "SignedDispatch" in no_signature["reason"]
    # Not run: the refusal is all the audit has of either task, and the gateway says so too.
    assert types_of(stack, forged.task_id) == ["DispatchRefused"]
    assert types_of(stack, unsigned.task_id) == ["DispatchRefused"]
    lifecycle = stack.client.get(f"/api/v1/tasks/{forged.task_id}").json()
    assert [e["type"] for e in lifecycle["lifecycle"]] == ["DispatchRefused"]
    # The watcher did not take the intruder's messages for the center's dispatches either.
    topic = stack.settings.dispatch_topic(guarded)

    def stored() -> list[list[Any]]:
        rows = stack.audit(
            "SELECT type, count() FROM events"
            f" WHERE topic = '{topic}' AND offset IN ({', '.join(map(str, offsets))})"
            " GROUP BY type ORDER BY type"
        )
        return [list(r) for r in rows]

    expected = [["TaskDispatched", 1], ["UnverifiedDispatch", 2]]
    wait_for("the dispatch topic in the audit", lambda: stored() == expected, 30)


def test_an_expired_and_a_replayed_dispatch_are_refused(stack: Stack, guarded: str) -> None:
    expired, once = dispatch(guarded), dispatch(guarded, "noop", "noop")
    signed = sign_dispatch(stack.settings, once)
    send(
        stack,
        guarded,
        sign_dispatch(stack.settings, expired, expires_at=int(time.time() * 1000) - 1000),
        signed,
    )
    ran(stack, once.task_id)
    send(stack, guarded, signed)  # the very same signed bytes again
    replayed = refusal(stack, once.task_id)
    assert replayed["code"] == "416.5" and "read before" in replayed["reason"]
    assert refusal(stack, expired.task_id)["code"] == "416.4"
    # The center did sign it (so the audit has its TaskDispatched), but it never started.
    assert types_of(stack, expired.task_id) == ["DispatchRefused", "TaskDispatched"]
    assert types_of(stack, once.task_id).count("TaskResultReported") == 1  # it ran once


def test_an_agent_not_accepted_receives_nothing_until_an_operator_accepts_it(
    stack: Stack,
) -> None:
    role = f"pend-{uuid.uuid4().hex[:6]}"
    agent_id, process = start_agent(stack, accept=False, ELVES_AGENT_TAGS=f"role={role}")
    try:
        # Heard from and registered: listed, up and pending, so an operator sees it. Its
        # heartbeat and its registration travel apart: "up" may come first.
        stack.wait_agent(agent_id, "up")
        wait_for("its registration", lambda: stack.enrolment(agent_id) == "pending", 15)
        listed = elves(stack, "agent", "list")
        assert listed.returncode == 0 and re.search(rf"{agent_id}\s+up\s+pending", listed.stdout)

        refused = instant(stack, agent=agent_id)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "414.4"
        assert instant(stack, selector=f"role={role}").json()["error"]["code"] == "414.3"
        cron = stack.client.post(
            "/api/v1/crons",
            json={"agent": agent_id, "app": "apptest", "func": "helloword", "rule": "* * * * *",
                  "mode": "AANP"},
        )  # fmt: skip
        assert cron.json()["error"]["code"] == "414.4", cron.text
        watch = consumer(stack.settings, f"sec-{uuid.uuid4().hex[:6]}")
        try:
            tp = TopicPartition(stack.settings.dispatch_topic(agent_id), 0)
            assert watch.get_watermark_offsets(tp, timeout=10) == (0, 0)  # nothing, ever
        finally:
            watch.close()

        accepted = elves(stack, "agent", "accept", agent_id)
        assert accepted.returncode == 0 and f"{agent_id}: accepted" in accepted.stdout
        runs = instant(stack, agent=agent_id)  # at once: the streams settle before a refusal
        assert runs.status_code == 200, runs.text
        assert runs.json()["worker_message"] == "toryzen"
        by_tags = instant(stack, selector=f"role={role}").json()
        assert [r["agent_id"] for r in by_tags["results"]] == [agent_id]
    finally:
        stop_agent(stack, process)


def test_a_rejected_agent_gets_nothing_until_accepted_again(stack: Stack) -> None:
    agent_id, process = start_agent(stack, accept=False)
    try:
        stack.wait_agent(agent_id, "up")
        rejected = stack.client.post(
            f"/api/v1/agents/{agent_id}/reject", json={"reason": "not one of ours"}
        )
        assert rejected.status_code == 200 and rejected.json()["enrolment"] == "rejected"
        refused = instant(stack, agent=agent_id).json()
        assert refused["error"]["code"] == "414.4" and "rejected" in refused["error"]["message"]
        stack.accept(agent_id)
        assert instant(stack, agent=agent_id).status_code == 200
    finally:
        stop_agent(stack, process)


def test_admin_tags_make_a_selector_match(stack: Stack, guarded: str) -> None:
    rack = f"rack-{uuid.uuid4().hex[:6]}"
    assert instant(stack, selector=f"rack={rack}").status_code == 404  # not yet tagged
    tagged = stack.client.put(f"/api/v1/agents/{guarded}/tags", json={"tags": {"rack": rack}})
    assert tagged.status_code == 200, tagged.text
    shown = stack.client.get(f"/api/v1/agents/{guarded}").json()
    assert (shown["tags"], shown["admin_tags"], shown["config_tags"]) == (
        {"rack": rack},
        {"rack": rack},
        {},
    )
    reply = instant(stack, selector=f"rack={rack}")
    assert reply.status_code == 200, reply.text
    assert [r["agent_id"] for r in reply.json()["results"]] == [guarded]
    bad = stack.client.put(f"/api/v1/agents/{guarded}/tags", json={"tags": {"rack": "a b"}})
    assert bad.json()["error"]["code"] == "403.8"
    cleared = elves(stack, "agent", "tags", guarded, "")
    assert cleared.returncode == 0, cleared.stdout
    assert instant(stack, selector=f"rack={rack}").status_code == 404
