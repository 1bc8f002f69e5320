"""App permissions on the real broker: a rule set over REST holds at the gateway (413.5), in the
streams for a command from any producer, for queue and cron adds and a selector's fan-out, and
on the agent for a signed dispatch (416.6); lifting it lets the app run everywhere again.

The module's own app (published here, so no other test's app gets a rule) on two agents of its
own: agent 1 tagged dc=bj, agent 2 dc=sh, both with a role no other test uses.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from elves.kafka import producer
from elves.local import Process, Stack, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import TaskSubmitted, new_id
from elves.signing import sign_dispatch

from .test_app_packages import package, publish
from .test_cli import elves
from .test_security_agents import dispatch, refusal, send, types_of


@pytest.fixture(scope="module")
def fleet(stack: Stack) -> Iterator[dict[str, str]]:
    """{"app", "role", "a1", "a2"}: the app installed on both agents, no rule set yet."""
    tag = uuid.uuid4().hex[:6]
    role, app = f"perm-{tag}", f"perm{tag}"
    a1, a2 = f"it-perm-{tag}-1", f"it-perm-{tag}-2"
    processes: list[Process] = [
        stack.spawn_agent(a1, ELVES_AGENT_TAGS=f"role={role},dc=bj"),
        stack.spawn_agent(a2, ELVES_AGENT_TAGS=f"role={role},dc=sh"),
    ]
    try:
        for agent_id in (a1, a2):
            stack.wait_agent(agent_id)
        done = publish(stack, app, "1", package(app, "1"))
        assert done.status_code == 201, done.text
        for agent_id in (a1, a2):
            wait_for(
                f"{app} installed on {agent_id}",
                lambda a=agent_id: stack.client.get(f"/api/v1/agents/{a}").json()["apps"].get(app),
            )
        yield {"app": app, "role": role, "a1": a1, "a2": a2}
    finally:
        for process in processes:
            process.stop()
            stack.processes.remove(process)


def submit_straight(stack: Stack, app: str, agent_id: str) -> str:
    """A TaskSubmitted produced to `commands` as any producer could, past the gateway."""
    task_id = new_id()
    command = TaskSubmitted(
        event_id=new_id(),
        occurred_at=int(time.time() * 1000),
        task_id=task_id,
        agent_id=agent_id,
        app=app,
        func="which",
        params="{}",
        timeout_s=20,
        requested_by="test: straight to commands",
    )
    prod = producer(stack.settings)
    prod.produce(
        stack.settings.topic("commands"), key=task_id.encode(), value=CODEC.encode(command)
    )
    assert prod.flush(10) == 0
    return task_id


def task_state(stack: Stack, task_id: str) -> dict[str, Any] | None:
    """The task's state folded from the audit, once it has an outcome."""
    reply = stack.client.get(f"/api/v1/tasks/{task_id}")
    if reply.status_code != 200:
        return None
    state: dict[str, Any] | None = reply.json()["state"]
    return state if state is not None and state["status"] != "accepted" else None


def set_rule(stack: Stack, app: str, body: dict[str, Any]) -> dict[str, Any]:
    """PUT the rule, then wait until the streams judge by it too (they read `apps` on their
    own, a moment after the gateway). The probe is an agent no one runs: the streams refuse it
    413.5 while the rule holds anywhere but there, and 414.2 (unknown agent) otherwise."""
    before = stack.client.get(f"/api/v1/apps/{app}/permissions").json()
    reply = stack.client.put(f"/api/v1/apps/{app}/permissions", json=body)
    assert reply.status_code == 200, reply.text
    probe_allowed = bool(body.get("anywhere"))
    assert before["anywhere"] != probe_allowed, "the probe cannot tell this rule from the last"
    expected = "[414.2]" if probe_allowed else "[413.5]"

    def streams_agree() -> bool:
        task_id = submit_straight(stack, app, f"nobody-{uuid.uuid4().hex[:6]}")
        state = wait_for("the probe's verdict", lambda: task_state(stack, task_id), 15)
        return str(state["reason"]).startswith(expected)

    wait_for("the streams to hold the rule", streams_agree, 30)
    data: dict[str, Any] = reply.json()
    return data


def run(stack: Stack, app: str, **target: str) -> httpx.Response:
    body = {"app": app, "func": "which", "timeout": 20, **target}
    return stack.client.post("/api/v1/tasks/instant", json=body, timeout=60)


def test_a_rule_holds_at_the_gateway_and_in_the_streams_and_lifting_it_frees_the_app(
    stack: Stack, fleet: dict[str, str]
) -> None:
    app, a1, a2 = fleet["app"], fleet["a1"], fleet["a2"]
    free = stack.client.get(f"/api/v1/apps/{app}/permissions").json()
    assert (free["default"], free["anywhere"]) == (True, True)  # no rule: the default, allow
    assert {a1, a2} <= set(free["allowed_agents"])

    rule = set_rule(stack, app, {"agents": [a1]})
    assert (rule["default"], rule["anywhere"], rule["agents"]) == (False, False, [a1])
    assert a1 in rule["allowed_agents"] and a2 not in rule["allowed_agents"]
    assert stack.client.get(f"/api/v1/apps/{app}").json()["permission"]["agents"] == [a1]

    ok = run(stack, app, agent=a1)
    assert ok.status_code == 200, ok.text
    assert ok.json()["worker_message"] == "v1"
    refused = run(stack, app, agent=a2)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["agent_id"]) == ("413.5", a2)
    assert "task_id" not in error  # refused at the gateway: nothing was sent

    # Past the gateway, straight to `commands`: the streams refuse it with the same code.
    task_id = submit_straight(stack, app, a2)
    state = wait_for("the refusal", lambda: task_state(stack, task_id), 15)
    assert state["status"] == "rejected"
    assert state["reason"] == f"[413.5] app {app} may not run on agent {a2}"
    codes = stack.audit(
        f"SELECT topic, JSONExtractString(payload, 'code') FROM events "
        f"WHERE task_id = '{task_id}' AND type = 'TaskRejected'"
    )
    assert codes == [[stack.settings.topic("tasks"), "413.5"]]
    ran = stack.audit(
        f"SELECT count() FROM events WHERE task_id = '{task_id}' AND type = 'TaskDispatched'"
    )
    assert ran == [[0]]  # never dispatched to the agent

    # Lifted: it runs on agent 2 again.
    lifted = set_rule(stack, app, {"anywhere": True})
    assert (lifted["anywhere"], lifted["default"]) == (True, False)
    again = run(stack, app, agent=a2)
    assert (again.status_code, again.json()["worker_message"]) == (200, "v1"), again.text


def test_a_selector_runs_only_on_the_agents_the_app_may_run_on(
    stack: Stack, fleet: dict[str, str]
) -> None:
    app, role, a1, a2 = fleet["app"], fleet["role"], fleet["a1"], fleet["a2"]
    set_rule(stack, app, {"selectors": ["dc=sh"]})
    try:
        reply = run(stack, app, selector=f"role={role}")
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert [(r["agent_id"], r["worker_message"]) for r in data["results"]] == [(a2, "v1")]
        assert data["not_allowed"] == [a1]
        # Both agents match dc=bj's selector... none the app may run on: refused whole.
        none = run(stack, app, selector=f"role={role},dc=bj")
        assert none.status_code == 403, none.text
        assert none.json()["error"]["code"] == "413.5"
        assert none.json()["error"]["not_allowed"] == [a1]
    finally:
        set_rule(stack, app, {"anywhere": True})


def test_queue_and_cron_adds_for_a_forbidden_agent_are_refused(
    stack: Stack, fleet: dict[str, str]
) -> None:
    app, role, a1, a2 = fleet["app"], fleet["role"], fleet["a1"], fleet["a2"]
    set_rule(stack, app, {"agents": [a1]})
    try:
        queue = stack.client.post("/api/v1/queues", json={"app": app})
        assert queue.status_code == 201, queue.text
        queue_id = queue.json()["queue_id"]
        tasks = f"/api/v1/queues/{queue_id}/tasks"
        refused = stack.client.post(tasks, json={"agent": a2, "func": "which"})
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "413.5")
        added = stack.client.post(tasks, json={"agent": a1, "func": "which"})
        assert added.status_code == 201, added.text
        both = [{"agent": a1, "func": "which"}, {"agent": a2, "func": "which"}]
        batch = stack.client.post(f"{tasks}/batch", json={"tasks": both})
        assert batch.status_code == 207, batch.text
        outcomes = [
            (t["status"], (t.get("error") or {}).get("code")) for t in batch.json()["tasks"]
        ]
        assert outcomes == [("added", None), ("rejected", "413.5")]
        quick = {"app": app, "agent": a2, "func": "which"}
        refused_quick = stack.client.post("/api/v1/queues/quick", json=quick)
        assert refused_quick.json()["error"]["code"] == "413.5", refused_quick.text

        cron = {"app": app, "func": "which", "rule": "* * * * * *", "overlap": "parallel"}
        refused_cron = stack.client.post("/api/v1/crons", json={**cron, "agent": a2})
        assert (refused_cron.status_code, refused_cron.json()["error"]["code"]) == (403, "413.5")
        # A selector cron fires only on the matching agents the app may run on.
        by_tags = stack.client.post("/api/v1/crons", json={**cron, "selector": f"role={role}"})
        assert by_tags.status_code == 201, by_tags.text
        cron_id = by_tags.json()["cron_id"]

        def fired_on() -> list[list[str]] | None:
            rows = stack.audit(
                "SELECT arrayStringConcat(JSONExtract(payload, 'agent_ids', 'Array(String)'), ',')"
                f" FROM events WHERE cron_id = '{cron_id}' AND type = 'CronFired'"
            )
            return rows if len(rows) >= 2 else None

        try:
            fires = wait_for("2 fires in the audit", fired_on, 30)
        finally:
            assert stack.client.delete(f"/api/v1/crons/{cron_id}").status_code == 200
        assert {fired_on for [fired_on] in fires} == {a1}
    finally:
        set_rule(stack, app, {"anywhere": True})


def test_the_cli_sets_and_shows_a_rule(stack: Stack, fleet: dict[str, str]) -> None:
    app, a1, a2 = fleet["app"], fleet["a1"], fleet["a2"]
    allowed = elves(stack, "app", "allow", app, "--agent", a1, "--selector", "dc=nowhere")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert f"{app} may run on: agent {a1}, selector dc=nowhere" in allowed.stdout
    shown = elves(stack, "app", "permissions", app)
    assert f"known agents it may run on now: {a1}" in shown.stdout, shown.stdout
    refused = elves(stack, "exec", a2, app, "which")
    assert refused.returncode != 0 and "413.5" in refused.stdout, refused.stdout
    bad = elves(stack, "app", "allow", app, "--selector", "dc")
    assert bad.returncode == 1 and "403.8" in bad.stdout, bad.stdout
    lifted = elves(stack, "app", "allow", app, "--anywhere")
    assert f"{app} may run on: anywhere" in lifted.stdout, lifted.stdout


def test_the_agent_refuses_a_signed_dispatch_of_an_app_not_allowed_on_it(
    stack: Stack, fleet: dict[str, str]
) -> None:
    """Past the gateway and the streams: a dispatch the center signed (as a stale or a buggy
    center could) straight to agent 2's topic. The agent reads `apps` on its own; until it has
    read the rule it runs such a dispatch, so each try is a new one until it refuses."""
    app, a1, a2 = fleet["app"], fleet["a1"], fleet["a2"]
    set_rule(stack, app, {"agents": [a1]})
    try:

        def refused_by_agent() -> dict[str, Any] | None:
            order = dispatch(a2, app=app, func="which")
            send(stack, a2, sign_dispatch(stack.settings, order))
            answer = wait_for(
                "the agent's answer",
                lambda: {"DispatchRefused", "TaskResultReported"}
                & set(types_of(stack, order.task_id)),
                30,
            )
            if "DispatchRefused" in answer:
                return refusal(stack, order.task_id)
            # The refusal and the failed attempt are written together: a result alone is a
            # run, unless it is that failure and its refusal is a moment behind it.
            [[message]] = stack.audit(
                "SELECT JSONExtractString(payload, 'worker_message') FROM events"
                f" WHERE task_id = '{order.task_id}' AND type = 'TaskResultReported'"
            )
            return refusal(stack, order.task_id) if message.startswith("[416.6]") else None

        refused = wait_for("the agent to hold the rule", refused_by_agent, 60)
        assert refused["code"] == "416.6" and refused["agent_id"] == a2, refused
        assert app in refused["reason"]
    finally:
        set_rule(stack, app, {"anywhere": True})


def test_a_task_dispatched_to_an_agent_that_may_not_run_its_app_fails_at_once_with_416_6(
    stack: Stack, fleet: dict[str, str]
) -> None:
    """The center lets the app run anywhere; the agent's own list (ELVES_AGENT_APPS) does not
    name it. The agent refuses the signed dispatch and reports its attempt failed with the
    code: the task ends `failed`, not `timed_out` at its deadline, and the refusal is audited."""
    app = fleet["app"]
    agent_id = f"it-perm-own-list-{uuid.uuid4().hex[:6]}"
    process = stack.spawn_agent(agent_id, ELVES_AGENT_APPS="some-other-app")
    try:
        stack.wait_agent(agent_id)
        reply = run(stack, app, agent=agent_id)
        assert reply.status_code == 200, reply.text
        data = reply.json()
        assert (data["status"], data["worker_flag"]) == ("failed", -1), data
        assert data["worker_message"].startswith("[416.6]") and app in data["worker_message"]
        refused = refusal(stack, data["task_id"])
        assert (refused["code"], refused["agent_id"]) == ("416.6", agent_id), refused
    finally:
        process.stop()
        stack.processes.remove(process)
