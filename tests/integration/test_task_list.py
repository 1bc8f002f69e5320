"""The task list (`GET /api/v1/tasks`, `elves tasks`) on the real stack: each task's status is
its fold's, newest first, with the filters a user narrows it by."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from elves.local import Stack, wait_for

from .conftest import AGENT
from .test_cli import elves


def test_the_task_list_shows_each_tasks_status_newest_first(stack: Stack, tmp_path: Path) -> None:
    since = int(time.time() * 1000)
    ok = stack.exec(AGENT, "apptest", "helloword", {"my": "listed"}).json()["task_id"]
    falsy = stack.exec(AGENT, "crasher", "falsy").json()["task_id"]
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    refused = stack.exec(ghost, "apptest", "helloword")
    assert refused.status_code == 404, refused.text
    refused_id = refused.json()["error"]["task_id"]
    # A queue task that fails once and then succeeds: it had a TaskFailed, and is not failed.
    queue_id = stack.client.post("/api/v1/queues", json={"app": "crasher"}).json()["queue_id"]
    flaky = f"{queue_id[:8]}-flaky"
    task = {"task_id": flaky, "agent": AGENT, "func": "flaky", "max_attempts": 2}
    task["params"] = {"marker": str(tmp_path / "marker")}
    assert stack.client.post(f"/api/v1/queues/{queue_id}/tasks", json=task).status_code == 201
    assert stack.client.post(f"/api/v1/queues/{queue_id}/commit").status_code == 200
    mine = [flaky, refused_id, falsy, ok]  # newest first

    def listed(**params: Any) -> list[dict[str, Any]]:
        reply = stack.client.get("/api/v1/tasks", params={"since": since, **params})
        assert reply.status_code == 200, reply.text
        return list(reply.json()["tasks"])

    def all_ended() -> dict[str, dict[str, Any]] | None:
        found = {t["task_id"]: t for t in listed() if t["task_id"] in mine}
        ended = len(found) == 4 and found[flaky]["status"] == "succeeded"
        return found if ended else None

    found = wait_for("the four tasks, ended, in the list", all_ended, 60)
    assert [t["task_id"] for t in listed() if t["task_id"] in mine] == mine
    assert found[ok]["status"] == "succeeded" and found[ok]["worker_flag"] == 1
    assert (found[ok]["app"], found[ok]["func"], found[ok]["agent_id"]) == (
        "apptest",
        "helloword",
        AGENT,
    )
    assert found[falsy]["status"] == "failed" and found[falsy]["worker_flag"] == 0
    assert found[refused_id]["status"] == "rejected" and "[414.2]" in found[refused_id]["reason"]
    assert found[flaky]["attempt"] == 2 and found[flaky]["queue_id"] == queue_id
    assert found[ok]["created_at"] >= since
    assert found[ok]["updated_at"] >= found[ok]["created_at"]

    failed = {t["task_id"] for t in listed(status="failed")}
    assert falsy in failed and flaky not in failed  # its fold says succeeded, not its events
    assert {ok, flaky} <= {t["task_id"] for t in listed(status="succeeded")}
    assert refused_id in {t["task_id"] for t in listed(status="rejected")}
    assert all(t["status"] == "failed" for t in listed(status="failed"))
    assert [t["task_id"] for t in listed(agent=ghost)] == [refused_id]
    crasher = listed(app="crasher")
    assert {falsy, flaky} <= {t["task_id"] for t in crasher}
    assert {t["app"] for t in crasher} == {"crasher"}
    assert len(listed(limit=1)) == 1
    assert listed(since=int(time.time() * 1000) + 60_000) == []
    for bad in ({"limit": 0}, {"limit": 501}, {"status": "done"}, {"since": "yesterday"}):
        reply = stack.client.get("/api/v1/tasks", params=bad)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "403.2", bad

    cli = elves(stack, "tasks", "--since", str(since), "--agent", ghost)
    assert cli.returncode == 0, cli.stderr
    assert refused_id in cli.stdout and "rejected" in cli.stdout and "[414.2]" in cli.stdout
