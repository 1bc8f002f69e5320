"""Tag selectors on the real broker: instant tasks and crons on every live matching agent."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from elves.local import Process, Stack, wait_for

from .conftest import AGENT
from .test_cli import elves


@pytest.fixture(scope="module")
def tagged(stack: Stack) -> Iterator[tuple[str, list[str]]]:
    """Three agents tagged with a role of their own (so no other test's agent matches) in one
    dc: (the role, their ids)."""
    role = f"sel-{uuid.uuid4().hex[:6]}"
    agent_ids = [f"it-{role}-{i}" for i in (1, 2, 3)]
    processes: list[Process] = [
        stack.spawn_agent(a, ELVES_AGENT_TAGS=f"role={role},dc=bj") for a in agent_ids
    ]
    try:
        for agent_id in agent_ids:
            stack.wait_agent(agent_id)
        yield role, agent_ids
    finally:
        for process in processes:
            process.stop()
            stack.processes.remove(process)


def instant(stack: Stack, **body: Any) -> Any:
    full = {"app": "apptest", "func": "helloword", "params": {"my": "toryzen"}, **body}
    return stack.client.post("/api/v1/tasks/instant", json={"timeout": 20, **full}, timeout=60)


def test_a_tag_selector_over_3_agents_returns_3_results(
    stack: Stack, tagged: tuple[str, list[str]]
) -> None:
    role, agent_ids = tagged
    agents = {a["agent_id"]: a for a in stack.client.get("/api/v1/agents").json()["agents"]}
    assert agents[agent_ids[0]]["tags"] == {"role": role, "dc": "bj"}
    reply = instant(stack, selector=f"role={role},dc=bj")
    assert reply.status_code == 200, reply.text
    data = reply.json()
    assert data["selector"] == f"role={role},dc=bj"
    results = data["results"]
    assert [r["agent_id"] for r in results] == agent_ids  # sorted by agent id
    assert [(r["status"], r["worker_flag"], r["worker_message"]) for r in results] == [
        ("succeeded", 1, "toryzen")
    ] * 3
    assert len({r["task_id"] for r in results}) == 3
    # `!=` leaves these out; the untagged session agent has no dc: nothing matches.
    assert instant(stack, selector=f"role!={role},dc=bj").status_code == 404


def test_the_cli_runs_by_selector_and_shows_tags(
    stack: Stack, tagged: tuple[str, list[str]]
) -> None:
    role, agent_ids = tagged
    done = elves(stack, "exec", "--selector", f"role={role}", "apptest", "helloword", "-p", "my=x")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.findall(r"^agent (\S+)$", done.stdout, re.M) == agent_ids
    assert len(re.findall(r"worker_message\s+x", done.stdout)) == 3
    listing = elves(stack, "agents")
    assert re.search(rf"{agent_ids[0]}\s+up.*dc=bj,role={role}", listing.stdout), listing.stdout


def test_a_selector_matching_no_live_agent_is_414_3(stack: Stack) -> None:
    reply = instant(stack, selector=f"role=nobody-{uuid.uuid4().hex[:6]}")
    assert reply.status_code == 404, reply.text
    assert reply.json()["error"]["code"] == "414.3"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"selector": "role"}, "403.8"),
        ({"selector": "role=web,,dc=bj"}, "403.8"),
        ({"selector": "role=web", "agent": AGENT}, "403.2"),
        ({}, "403.1"),
    ],
)
def test_a_bad_target_is_refused_with_its_code(
    stack: Stack, body: dict[str, str], code: str
) -> None:
    reply = instant(stack, **body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == code


def test_a_malformed_cron_selector_is_403_8(stack: Stack) -> None:
    body = {"selector": "role=", "app": "apptest", "func": "helloword", "rule": "* * * * *"}
    reply = stack.client.post("/api/v1/crons", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == "403.8"


def test_a_selector_cron_fires_one_task_per_matching_agent(
    stack: Stack, tagged: tuple[str, list[str]]
) -> None:
    role, agent_ids = tagged
    body = {
        "selector": f"role={role}",
        "app": "apptest",
        "func": "helloword",
        "params": {"my": "tick"},
        "rule": "* * * * * *",  # every second
        "overlap": "parallel",
    }
    reply = stack.client.post("/api/v1/crons", json=body)
    assert reply.status_code == 201, reply.text
    cron_id = reply.json()["cron_id"]
    assert (reply.json()["selector"], reply.json()["agent_id"]) == (f"role={role}", "")
    try:
        wait_for(
            "2 fires' 6 tasks to succeed",
            lambda: stack.client.get(f"/api/v1/crons/{cron_id}").json()["counts"]["succeeded"] >= 6,
            30,
        )
    finally:
        assert stack.client.delete(f"/api/v1/crons/{cron_id}").status_code == 200
    listed = {c["cron_id"]: c for c in stack.client.get("/api/v1/crons").json()["crons"]}
    assert cron_id not in listed or listed[cron_id]["selector"] == f"role={role}"

    def audited() -> tuple[list[list[Any]], list[list[Any]]] | None:
        fires = stack.audit(
            "SELECT JSONExtractInt(payload, 'scheduled_at'), "
            "arrayStringConcat(JSONExtract(payload, 'agent_ids', 'Array(String)'), ','), "
            "arrayStringConcat(JSONExtract(payload, 'task_ids', 'Array(String)'), ',') "
            f"FROM events WHERE cron_id = '{cron_id}' AND type = 'CronFired' ORDER BY 1"
        )
        submitted = stack.audit(
            "SELECT JSONExtractString(payload, 'task_id'), "
            "JSONExtractString(payload, 'agent_id') "
            f"FROM events WHERE cron_id = '{cron_id}' AND type = 'TaskSubmitted'"
        )
        return (fires, submitted) if len(fires) >= 2 and len(submitted) >= 6 else None

    fires, submitted = wait_for("the fires and their tasks in the audit", audited, 15)
    assert len({f[0] for f in fires}) == len(fires), "a scheduled time fired twice"
    per_fire = []
    for _, fired_on, task_ids in fires:
        assert fired_on.split(",") == agent_ids  # every matching agent, and only those
        per_fire.append(set(zip(task_ids.split(","), agent_ids, strict=True)))
    # One TaskSubmitted per agent per fire, and nothing else (the audit keeps each once).
    got = {(task_id, agent_id) for task_id, agent_id in submitted}
    assert len(got) == len(submitted)
    assert got <= set().union(*per_fire)
    assert sum(fire <= got for fire in per_fire) >= 2


def test_a_selector_queue_task_runs_on_every_matching_agent_and_its_dependent_after_all(
    stack: Stack, tagged: tuple[str, list[str]]
) -> None:
    role, agent_ids = tagged
    queue = stack.client.post("/api/v1/queues", json={"app": "apptest"})
    assert queue.status_code == 201, queue.text
    queue_id = queue.json()["queue_id"]
    deploy, verify = f"deploy-{queue_id[:8]}", f"verify-{queue_id[:8]}"
    task = {"func": "helloword", "params": {"my": "fleet"}, "timeout": 20}
    group = stack.client.post(
        f"/api/v1/queues/{queue_id}/tasks",
        json={"selector": f"role={role}", "task_id": deploy, **task},
    )
    assert group.status_code == 201, group.text
    members = [f"{deploy}@{a}" for a in agent_ids]
    assert group.json()["tasks"] == [
        {"task_id": m, "agent_id": a} for m, a in zip(members, agent_ids, strict=True)
    ]
    after = stack.client.post(
        f"/api/v1/queues/{queue_id}/tasks",
        json={"agent": AGENT, "task_id": verify, "depends_on": [deploy], **task},
    )
    assert after.status_code == 201, after.text
    assert stack.client.post(f"/api/v1/queues/{queue_id}/commit").status_code == 200

    def ended() -> dict[str, Any] | None:
        data: dict[str, Any] = stack.client.get(f"/api/v1/queues/{queue_id}").json()
        return data if data.get("status") in ("succeeded", "failed", "stopped") else None

    data = wait_for("the queue to end", ended, 60)
    assert data["status"] == "succeeded", data
    assert data["groups"] == {deploy: members}
    tasks = {t["task_id"]: t for t in data["tasks"]}
    assert {m: (tasks[m]["agent_id"], tasks[m]["worker_message"]) for m in members} == {
        m: (a, "fleet") for m, a in zip(members, agent_ids, strict=True)
    }
    assert tasks[verify]["depends_on"] == members

    ids = ", ".join(repr(t) for t in [*members, verify])

    def times() -> list[list[Any]] | None:
        rows = stack.audit(
            "SELECT task_id, type, toUnixTimestamp64Milli(occurred_at) FROM events "
            f"WHERE task_id IN ({ids}) AND type IN ('TaskSucceeded', 'TaskAccepted')"
        )
        return rows if len(rows) == 8 else None

    rows = wait_for("the tasks' lifecycles in the audit", times, 15)
    ended = max(at for task_id, kind, at in rows if kind == "TaskSucceeded" and task_id != verify)
    [accepted] = [at for task_id, kind, at in rows if kind == "TaskAccepted" and task_id == verify]
    assert accepted >= ended  # the dependent was submitted once every part had ended
