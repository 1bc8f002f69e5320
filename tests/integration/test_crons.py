"""Center crons on the real broker: on-time fires, pause, resume, delete, overlaps, codes."""

from __future__ import annotations

import time
from typing import Any

import pytest

from elves.local import Stack, wait_for

from .conftest import AGENT
from .test_cli import elves

EVERY_SECOND = "* * * * * *"  # seconds first


def add_cron(stack: Stack, **changes: Any) -> str:
    body = {
        "agent": AGENT,
        "app": "apptest",
        "func": "helloword",
        "params": {"my": "toryzen"},
        "rule": EVERY_SECOND,
        **changes,
    }
    reply = stack.client.post("/api/v1/crons", json=body)
    assert reply.status_code == 201, reply.text
    return str(reply.json()["cron_id"])


def detail(stack: Stack, cron_id: str) -> dict[str, Any]:
    reply = stack.client.get(f"/api/v1/crons/{cron_id}")
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()
    return data


def fires(stack: Stack, cron_id: str, kind: str = "CronFired") -> list[dict[str, Any]]:
    """Every `kind` event of a cron in the audit, oldest scheduled time first."""
    rows = stack.audit(
        "SELECT event_id, JSONExtractInt(payload, 'scheduled_at'), "
        "toUnixTimestamp64Milli(occurred_at), JSONExtractString(payload, 'task_id'), "
        "JSONExtractBool(payload, 'catch_up'), JSONExtractInt(payload, 'count') "
        f"FROM events WHERE cron_id = '{cron_id}' AND type = '{kind}' ORDER BY 2"
    )
    keys = ("event_id", "scheduled_at", "occurred_at", "task_id", "catch_up", "count")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def count(stack: Stack, cron_id: str, kind: str) -> int:
    [[n]] = stack.audit(
        f"SELECT count() FROM events WHERE cron_id = '{cron_id}' AND type = '{kind}'"
    )
    return int(n)


def test_a_cron_fires_each_second_on_time_with_a_task_per_fire(stack: Stack) -> None:
    cron_id = add_cron(stack, name="every-second")
    data = wait_for(
        "3 fires to succeed",
        lambda: (d := detail(stack, cron_id))["counts"]["succeeded"] >= 3 and d,
        30,
    )
    assert data["status"] == "active"
    assert data["last_fire"]["scheduled_at"] % 1000 == 0
    assert (data["last_result"]["status"], data["last_result"]["message"]) == (
        "succeeded",
        "toryzen",
    )
    assert len(data["next_fires"]) == 5
    assert data["next_fires"] == sorted(data["next_fires"])
    fired = wait_for("fires in the audit", lambda: len(f := fires(stack, cron_id)) >= 3 and f)
    scheduled = [f["scheduled_at"] for f in fired]
    assert len(set(scheduled)) == len(scheduled), "a scheduled time fired twice"
    assert all(t % 1000 == 0 for t in scheduled)
    assert len({f["task_id"] for f in fired}) == len(fired)
    # On time: each fire decided within a second of its scheduled time.
    assert all(0 <= f["occurred_at"] - f["scheduled_at"] < 1000 for f in fired), fired
    # Each fire's task went through the task lifecycle and came back to the cron.
    path = f"/api/v1/tasks/{fired[0]['task_id']}"
    task = wait_for("the task", lambda: (r := stack.client.get(path)).status_code == 200 and r)
    assert task.json()["state"]["status"] == "succeeded"
    assert task.json()["state"]["cron_id"] == cron_id
    listed = stack.client.get("/api/v1/crons").json()["crons"]
    assert cron_id in {c["cron_id"] for c in listed}

    reply = stack.client.delete(f"/api/v1/crons/{cron_id}")
    assert reply.status_code == 200
    assert reply.json()["status"] == "deleted"
    before = count(stack, cron_id, "CronFired")
    time.sleep(2.5)  # proving an absence: nothing to wait for
    assert count(stack, cron_id, "CronFired") == before
    assert cron_id not in {c["cron_id"] for c in stack.client.get("/api/v1/crons").json()["crons"]}


def test_pause_stops_fires_and_resume_starts_them_again(stack: Stack) -> None:
    cron_id = add_cron(stack)
    wait_for("a fire", lambda: detail(stack, cron_id)["counts"]["fires"] >= 1)
    reply = stack.client.post(f"/api/v1/crons/{cron_id}/pause")
    assert reply.status_code == 200
    assert reply.json()["status"] == "paused"
    paused_at = int(time.time() * 1000)
    time.sleep(2.5)  # proving an absence: nothing to wait for
    resumed = stack.client.post(f"/api/v1/crons/{cron_id}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "active"
    resumed_at = int(time.time() * 1000)
    wait_for(
        "a fire after resume",
        lambda: any(f["scheduled_at"] > resumed_at for f in fires(stack, cron_id)),
        15,
    )
    during = [
        f for f in fires(stack, cron_id) if paused_at + 1000 < f["scheduled_at"] <= resumed_at
    ]
    assert during == []
    assert count(stack, cron_id, "CronFiresMissed") == 0  # a pause is not a misfire
    stack.client.delete(f"/api/v1/crons/{cron_id}")


def test_overlap_skip_and_queue_are_recorded(stack: Stack) -> None:
    slow = {"app": "sleeper", "func": "sleep", "params": {"seconds": 2.5}}
    skip = add_cron(stack, overlap="skip", **slow)
    queue = add_cron(stack, overlap="queue", **slow)
    wait_for("a skipped fire", lambda: count(stack, skip, "CronFireSkipped") >= 1, 20)
    wait_for("a queued fire that ran", lambda: len(fires(stack, queue)) >= 2, 20)
    assert count(stack, queue, "CronFireQueued") >= 1
    for cron_id in (skip, queue):
        stack.client.delete(f"/api/v1/crons/{cron_id}")
    # Never two runs of one cron at once with skip or queue: each fire's run started after
    # the previous one ended.
    rows = stack.audit(
        "SELECT task_id, type, toUnixTimestamp64Milli(occurred_at) FROM events "
        f"WHERE cron_id = '{queue}' AND type IN ('TaskSubmitted', 'TaskSucceeded') "
        # A held fire is released by the end of the run before it, in the same millisecond:
        # at a tie the end comes first.
        "ORDER BY 3, type = 'TaskSubmitted'"
    )
    open_runs = 0
    for _, kind, _ in rows:
        open_runs += 1 if kind == "TaskSubmitted" else -1
        assert open_runs <= 1


def test_bad_crons_get_stable_codes(stack: Stack) -> None:
    cases = [
        ({"rule": "every tuesday"}, 400, "403.6"),
        ({"rule": "0 0 30 2 *"}, 400, "403.6"),  # never fires
        ({"timezone": "Mars/Olympus"}, 400, "403.7"),
        ({"misfire": "sometimes"}, 400, "403.2"),
        ({"mode": "XX"}, 400, "403.2"),
        ({"rule": None}, 400, "403.1"),
    ]
    for change, status, code in cases:
        body = {"agent": AGENT, "app": "apptest", "func": "helloword", "rule": EVERY_SECOND}
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        reply = stack.client.post("/api/v1/crons", json=body)
        assert (reply.status_code, reply.json()["error"]["code"]) == (status, code), change
    for method, path in (
        ("POST", "/api/v1/crons/nope/pause"),
        ("POST", "/api/v1/crons/nope/resume"),
        ("DELETE", "/api/v1/crons/nope"),
        ("GET", "/api/v1/crons/nope"),
    ):
        reply = stack.client.request(method, path)
        assert (reply.status_code, reply.json()["error"]["code"]) == (404, "411.1"), path


def test_a_quartz_rule_in_a_time_zone_fires(stack: Stack) -> None:
    cron_id = add_cron(stack, rule="0/2 * * * * ?", timezone="Asia/Shanghai")
    fired = wait_for("two fires", lambda: len(f := fires(stack, cron_id)) >= 2 and f, 20)
    assert all(f["scheduled_at"] % 2000 == 0 for f in fired)
    stack.client.delete(f"/api/v1/crons/{cron_id}")


def results(stack: Stack, cron_id: str) -> list[tuple[int, str]]:
    """(when the agent reported it, its message) of each of a cron's runs that succeeded."""
    rows = stack.audit(
        "SELECT toUnixTimestamp64Milli(occurred_at), JSONExtractString(payload, 'worker_message')"
        f" FROM events WHERE cron_id = '{cron_id}' AND type = 'TaskSucceeded' ORDER BY 1"
    )
    return [(int(at), str(message)) for at, message in rows]


@pytest.mark.parametrize("mode", ["CANP", "AANP"])
def test_a_cron_changed_in_place_runs_its_new_rule_and_params_from_then(
    stack: Stack, mode: str
) -> None:
    cron_id = add_cron(stack, mode=mode, params={"my": "before"})
    wait_for("a run as added", lambda: any(m == "before" for _, m in results(stack, cron_id)), 30)
    path = f"/api/v1/crons/{cron_id}"
    for body, code in (({"agent": "x"}, "403.2"), ({}, "403.1"), ({"rule": "nope"}, "403.6")):
        refused = stack.client.patch(path, json=body)
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, code), body
    every_2s = "*/2 * * * * *"
    reply = stack.client.patch(path, json={"rule": every_2s, "params": {"my": "after"}})
    changed_at = int(time.time() * 1000)
    assert reply.status_code == 200, reply.text
    assert (reply.json()["cron_id"], reply.json()["rule"]) == (cron_id, every_2s)
    assert reply.json()["params"] == '{"my":"after"}'

    def changed_runs() -> list[int] | None:
        at = [at for at, m in results(stack, cron_id) if m == "after" and at > changed_at]
        return at if len(at) >= 3 else None

    # Once the first run as changed has ended, the definition in force is the new one (at the
    # center, or pushed to the agent): what ends a second after it is the new one's only.
    settled = wait_for("three runs as changed", changed_runs, 30)[0] + 1000
    stack.client.delete(path)
    assert {m for at, m in results(stack, cron_id) if at > settled} == {"after"}
    kind = "CronFired" if mode == "CANP" else "AgentCronRan"  # who decided each time
    since = [f["scheduled_at"] for f in fires(stack, cron_id, kind) if f["scheduled_at"] > settled]
    assert since and all(t % 2000 == 0 for t in since), since  # the new rule's times only
    assert detail(stack, cron_id)["counts"]["fires"] >= len(since) + 1  # one history, one id
    missing = stack.client.patch("/api/v1/crons/nope", json={"rule": every_2s})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "411.1")


def test_the_cli_changes_a_cron_in_place(stack: Stack) -> None:
    cron_id = add_cron(stack, rule="0 0 1 1 *")  # once a year
    done = elves(stack, "cron", "update", cron_id, "--rule", "0 0 * * *", "-p", "my=cli", "-t", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f"{cron_id}: active, 0 0 * * * (UTC); next ")
    data = detail(stack, cron_id)
    assert (data["params"], data["timeout_s"], data["rule"]) == ('{"my":"cli"}', 5, "0 0 * * *")
    nothing = elves(stack, "cron", "update", cron_id)
    assert nothing.returncode == 2 and "give what to change" in nothing.stdout
    stack.client.delete(f"/api/v1/crons/{cron_id}")
