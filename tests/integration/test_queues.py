"""Queues on the real broker: joins, skips, run-anyway, retries, rejections, time travel."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from elves.local import Stack, wait_for

from .conftest import AGENT


def create(stack: Stack, app: str) -> str:
    reply = stack.client.post("/api/v1/queues", json={"app": app})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["queue_id"])


def add(stack: Stack, queue_id: str, task_id: str, func: str, **extra: Any) -> Any:
    body = {"task_id": task_id, "agent": AGENT, "func": func, "timeout": 30, **extra}
    return stack.client.post(f"/api/v1/queues/{queue_id}/tasks", json=body)


def quick(stack: Stack, agent: str, app: str, func: str, **extra: Any) -> dict[str, str]:
    """A quick queue (one task, committed): its `queue_id` and `task_id`."""
    body = {"app": app, "agent": agent, "func": func, **extra}
    reply = stack.client.post("/api/v1/queues/quick", json=body)
    assert reply.status_code == 201, reply.text
    made: dict[str, str] = reply.json()
    return made


def commit(stack: Stack, queue_id: str) -> None:
    reply = stack.client.post(f"/api/v1/queues/{queue_id}/commit")
    assert reply.status_code == 200, reply.text


def final(stack: Stack, queue_id: str, timeout: float = 60) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        reply = stack.client.get(f"/api/v1/queues/{queue_id}")
        data = reply.json() if reply.status_code == 200 else {}
        return data if data.get("status") in ("succeeded", "failed", "stopped") else None

    result: dict[str, Any] = wait_for(f"queue {queue_id} to end", done, timeout)
    return result


def by_task(queue: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in queue["tasks"]}


def _the_one(stack: Stack, sql: str, what: str) -> int:
    """The single value `sql` finds in the audit, once the watcher has stored its row: a
    topic's rows may reach the audit after another topic's later ones."""
    rows: list[list[Any]] = wait_for(what, lambda: stack.audit(sql) or None, 15)
    [[value]] = rows
    return int(value)


def times(stack: Stack, task_id: str, kind: str) -> int:
    sql = (
        "SELECT toUnixTimestamp64Milli(occurred_at) FROM events "
        f"WHERE task_id = '{task_id}' AND type = '{kind}'"
    )
    return _the_one(stack, sql, f"{kind} of {task_id} in the audit")


def started_at(stack: Stack, task_id: str) -> int:
    """When the task's process started: its result says so (whether or not it ran long enough
    to have a TaskStarted of its own)."""
    sql = (
        "SELECT JSONExtractInt(payload, 'started_at') FROM events "
        f"WHERE task_id = '{task_id}' AND type = 'TaskResultReported'"
    )
    at = _the_one(stack, sql, f"the result of {task_id} in the audit")
    assert at > 0
    return at


def test_a_diamond_runs_b_and_c_together_after_a_and_d_after_both(stack: Stack) -> None:
    q = create(stack, "sleeper")
    ids = {n: f"{q[:8]}-{n}" for n in "abcd"}
    one = {"params": {"seconds": 1}}
    assert add(stack, q, ids["a"], "sleep", **one).status_code == 201
    assert add(stack, q, ids["b"], "sleep", depends_on=[ids["a"]], **one).status_code == 201
    assert add(stack, q, ids["c"], "sleep", depends_on=[ids["a"]], **one).status_code == 201
    assert (
        add(stack, q, ids["d"], "sleep", depends_on=[ids["b"], ids["c"]], **one).status_code == 201
    )
    commit(stack, q)
    queue = final(stack, q)
    assert queue["status"] == "succeeded"
    assert {t["status"] for t in queue["tasks"]} == {"succeeded"}
    a_done = times(stack, ids["a"], "TaskSucceeded")
    b_start, c_start = started_at(stack, ids["b"]), started_at(stack, ids["c"])
    b_done, c_done = (
        times(stack, ids["b"], "TaskSucceeded"),
        times(stack, ids["c"], "TaskSucceeded"),
    )
    assert a_done <= b_start and a_done <= c_start
    assert c_start < b_done and b_start < c_done  # B and C overlapped: they ran in parallel
    assert started_at(stack, ids["d"]) >= max(b_done, c_done)
    assert times(stack, ids["d"], "TaskStarted") == started_at(stack, ids["d"])  # ran 1 s


def test_a_failed_root_skips_its_dependents_and_the_queue_fails(stack: Stack) -> None:
    q = create(stack, "crasher")
    a, b, c, d = (f"{q[:8]}-{n}" for n in "abcd")
    add(stack, q, a, "falsy")
    add(stack, q, b, "noisy", depends_on=[a])
    add(stack, q, c, "noisy", depends_on=[a])
    add(stack, q, d, "noisy", depends_on=[b, c])
    commit(stack, q)
    queue = final(stack, q)
    tasks = by_task(queue)
    assert queue["status"] == "failed"
    assert tasks[a]["status"] == "failed" and tasks[a]["worker_flag"] == 0
    assert [tasks[t]["status"] for t in (b, c, d)] == ["skipped"] * 3
    assert a in tasks[b]["cause"] and "failed" in tasks[b]["cause"]
    assert "skipped" in tasks[d]["cause"]


def test_a_task_refused_at_once_shows_failed_with_its_code(stack: Stack) -> None:
    """The task lifecycle refuses a task for an unknown agent within the millisecond that
    readied it; the view still folds the refusal after the attempt it ends."""
    q = create(stack, "crasher")
    a, b = f"{q[:8]}-a", f"{q[:8]}-b"
    assert add(stack, q, a, "noisy", agent="no-such-agent").status_code == 201
    assert add(stack, q, b, "noisy", depends_on=[a]).status_code == 201
    commit(stack, q)
    queue = final(stack, q)
    tasks = by_task(queue)
    assert queue["status"] == "failed"
    assert tasks[a]["status"] == "failed" and "[414.2]" in tasks[a]["cause"], tasks[a]
    assert tasks[b]["status"] == "skipped" and a in tasks[b]["cause"]


def test_the_queue_list_shows_each_queues_status_newest_first(stack: Stack) -> None:
    since = int(time.time() * 1000)
    ended = create(stack, "crasher")
    add(stack, ended, f"{ended[:8]}-a", "falsy")
    commit(stack, ended)
    final(stack, ended)
    still_open = create(stack, "sleeper")
    add(stack, still_open, f"{still_open[:8]}-a", "sleep", params={"seconds": 1})
    add(stack, still_open, f"{still_open[:8]}-b", "sleep", params={"seconds": 1})

    def listed(**params: Any) -> list[dict[str, Any]]:
        reply = stack.client.get("/api/v1/queues", params={"since": since, **params})
        assert reply.status_code == 200, reply.text
        return list(reply.json()["queues"])

    def both_in() -> list[dict[str, Any]] | None:
        found = listed()
        return found if len(found) == 2 and found[0]["tasks"] == 2 else None

    both = wait_for("both queues in the list", both_in, 15)
    assert [q["queue_id"] for q in both] == [still_open, ended]  # newest first
    newer, older = both
    assert (newer["app"], newer["status"], newer["finished_at"]) == ("sleeper", "open", None)
    assert (older["app"], older["status"], older["tasks"]) == ("crasher", "failed", 1)
    assert older["created_at"] >= since and older["finished_at"] >= older["created_at"]
    assert [q["queue_id"] for q in listed(status="failed")] == [ended]
    assert [q["queue_id"] for q in listed(app="sleeper")] == [still_open]
    assert [q["queue_id"] for q in listed(limit=1)] == [still_open]
    assert listed(since=older["created_at"] + 60_000) == []
    for bad in ({"limit": 0}, {"limit": 501}, {"status": "done"}, {"since": "yesterday"}):
        reply = stack.client.get("/api/v1/queues", params=bad)
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "403.2", bad


def test_run_if_all_done_runs_anyway(stack: Stack) -> None:
    q = create(stack, "crasher")
    a, d = f"{q[:8]}-a", f"{q[:8]}-d"
    add(stack, q, a, "falsy")
    add(stack, q, d, "noisy", depends_on=[a], run_if="all_done", params={"bytes": 3})
    commit(stack, q)
    tasks = by_task(final(stack, q))
    assert tasks[a]["status"] == "failed"
    assert tasks[d]["status"] == "succeeded" and tasks[d]["worker_message"] == "xxx"


def test_a_task_that_fails_once_succeeds_on_its_second_attempt(
    stack: Stack, tmp_path: Path
) -> None:
    q = create(stack, "crasher")
    t = f"{q[:8]}-flaky"
    add(stack, q, t, "flaky", params={"marker": str(tmp_path / "m")}, max_attempts=2)
    commit(stack, q)
    queue = final(stack, q)
    task = by_task(queue)[t]
    assert queue["status"] == "succeeded"
    assert task["attempt"] == 2 and task["worker_message"] == "second try works"
    sql = (
        f"SELECT type, count() FROM events WHERE task_id = '{t}' AND type IN "
        "('TaskDispatched', 'TaskFailed', 'TaskSucceeded') GROUP BY type ORDER BY type"
    )
    # The queue's end (on `queues`) may reach the audit before the task's own events (on
    # `tasks`): wait until the audit holds as many as expected, then compare them.
    rows = wait_for("the attempts in the audit", lambda: _at_least(stack.audit(sql), 4), 15)
    assert rows == [["TaskDispatched", 2], ["TaskFailed", 1], ["TaskSucceeded", 1]]


def _at_least(rows: list[list[Any]], events: int) -> list[list[Any]] | None:
    """`rows` of (type, count) once their counts add up to `events` or more."""
    return rows if sum(int(n) for _, n in rows) >= events else None


def test_bad_graphs_and_late_commands_are_rejected_with_stable_codes(stack: Stack) -> None:
    q = create(stack, "apptest")
    a = f"{q[:8]}-a"
    cycle = add(stack, q, a, "helloword", depends_on=[a])
    assert (cycle.status_code, cycle.json()["error"]["code"]) == (409, "412.5")
    unknown = add(stack, q, a, "helloword", depends_on=["nope"])
    assert unknown.json()["error"]["code"] == "412.4"
    empty = stack.client.post(f"/api/v1/queues/{q}/commit")
    assert empty.json()["error"]["code"] == "412.7"
    assert add(stack, q, a, "helloword", params={"my": "x"}).status_code == 201
    commit(stack, q)
    late = add(stack, q, f"{q[:8]}-b", "helloword")
    assert late.json()["error"]["code"] == "412.2"
    missing = stack.client.post("/api/v1/queues/no-such-queue/commit")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "412.1")


def test_many_tasks_in_one_call_are_judged_in_order_each_with_its_outcome(
    stack: Stack,
) -> None:
    q = create(stack, "apptest")
    a, b, c, d, e, f = (f"{q[:8]}-{n}" for n in "abcdef")
    task = {"agent": AGENT, "func": "helloword", "timeout": 30}
    batch = f"/api/v1/queues/{q}/tasks/batch"
    # A malformed task fails the whole call before anything is sent.
    bad = stack.client.post(batch, json={"tasks": [{"task_id": a, **task}, {"task_id": 7}]})
    assert bad.status_code == 400, bad.text
    assert (bad.json()["error"]["code"], bad.json()["error"]["index"]) == ("403.2", 1)
    reply = stack.client.post(
        batch,
        json={
            "tasks": [
                {"task_id": a, **task, "params": {"my": "a"}},
                {"task_id": b, **task, "depends_on": [a]},  # on one before it in the call
                {"task_id": c, **task, "depends_on": [a, b]},
                {"task_id": d, **task, "depends_on": ["nope"]},
                {"task_id": e, **task, "depends_on": [d]},  # d was refused: unknown to it
                {"task_id": f, **task, "depends_on": [f]},
            ]
        },
    )
    assert reply.status_code == 207, reply.text
    outcomes = {
        t["task_id"]: (t["status"], (t.get("error") or {}).get("code"))
        for t in reply.json()["tasks"]
    }
    assert outcomes == {
        a: ("added", None),  # so the malformed call above sent nothing: no 412.8 duplicate
        b: ("added", None),
        c: ("added", None),
        d: ("rejected", "412.4"),
        e: ("rejected", "412.4"),
        f: ("rejected", "412.5"),
    }
    assert (reply.json()["added"], reply.json()["rejected"]) == (3, 3)
    more = stack.client.post(batch, json={"tasks": [{"task_id": d, **task, "depends_on": [c]}]})
    assert more.status_code == 201, more.text
    commit(stack, q)
    queue = final(stack, q)
    assert queue["status"] == "succeeded"
    assert sorted(by_task(queue)) == sorted([a, b, c, d])
    assert times(stack, a, "TaskSucceeded") <= started_at(stack, b)
    assert times(stack, b, "TaskSucceeded") <= started_at(stack, c)
    assert times(stack, c, "TaskSucceeded") <= started_at(stack, d)


def test_the_as_of_view_is_the_state_at_that_moment(stack: Stack) -> None:
    q = create(stack, "sleeper")
    a, b = f"{q[:8]}-a", f"{q[:8]}-b"
    add(stack, q, a, "sleep", params={"seconds": 0.5})
    add(stack, q, b, "sleep", params={"seconds": 0.5}, depends_on=[a])
    commit(stack, q)
    final(stack, q)
    a_done = times(stack, a, "TaskSucceeded")
    before = stack.client.get(f"/api/v1/queues/{q}", params={"as_of": a_done - 1}).json()
    after = stack.client.get(f"/api/v1/queues/{q}", params={"as_of": a_done}).json()
    assert before["status"] in ("committed", "running")
    assert by_task(before)[a]["status"] in ("ready", "running")
    assert by_task(before)[b]["status"] == "pending"
    assert by_task(after)[a]["status"] == "succeeded"
    assert by_task(after)[b]["status"] == "ready"
    nothing = stack.client.get(f"/api/v1/queues/{q}", params={"as_of": 1})
    assert nothing.status_code == 404


def test_quick_queue(stack: Stack) -> None:
    made = quick(stack, AGENT, "apptest", "helloword", params={"my": "q"})
    queue = final(stack, made["queue_id"])
    assert queue["status"] == "succeeded"
    assert by_task(queue)[made["task_id"]]["worker_message"] == "q"


def test_stop_kills_the_running_task_on_its_agent_and_cancels_the_pending(
    stack: Stack, tmp_path: Path
) -> None:
    q = create(stack, "sleeper")
    a, b = f"{q[:8]}-a", f"{q[:8]}-b"
    pidfile = tmp_path / "child.pid"
    add(stack, q, a, "sleep", params={"seconds": 30, "pidfile": str(pidfile)}, timeout=60)
    add(stack, q, b, "sleep", params={"seconds": 1}, depends_on=[a])
    commit(stack, q)
    child = int(
        wait_for(
            "the task to start its child", lambda: pidfile.exists() and pidfile.read_text(), 30
        )
    )

    def a_running() -> dict[str, Any] | None:
        queue = stack.client.get(f"/api/v1/queues/{q}").json()
        return queue if by_task(queue)[a]["status"] == "running" else None

    running = wait_for("the queue to say its task runs", a_running, 15)
    assert running["status"] == "running" and by_task(running)[b]["status"] == "pending"
    stopped_at = time.monotonic()
    reply = stack.client.post(f"/api/v1/queues/{q}/stop")
    assert reply.status_code == 200, reply.text
    wait_for("the worker's process group to be killed", lambda: not _alive(child), 2)
    assert time.monotonic() - stopped_at <= 2.0
    queue = final(stack, q)
    tasks = by_task(queue)
    assert queue["status"] == "stopped"
    assert tasks[a]["status"] == "cancelled" and tasks[b]["status"] == "cancelled"
    [[message]] = wait_for(
        "the killed attempt's result",
        lambda: stack.audit(
            "SELECT JSONExtractString(payload, 'worker_message') FROM events "
            f"WHERE task_id = '{a}' AND type = 'TaskResultReported'"
        ),
        10,
    )
    assert message.startswith("cancelled")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is dead, only not yet reaped
    except FileNotFoundError:
        return False  # reaped between the two looks


def test_stop_kills_what_runs_on_an_agent_whose_every_worker_is_busy(
    stack: Stack, tmp_path: Path
) -> None:
    """The cancels come on the agent's dispatch topic, behind nothing it waits to run: a busy
    agent still reads them."""
    q = create(stack, "sleeper")
    pidfiles = [tmp_path / f"child-{i}.pid" for i in range(stack.settings.agent_workers)]
    for i, pidfile in enumerate(pidfiles):
        params = {"seconds": 60, "pidfile": str(pidfile)}
        add(stack, q, f"{q[:8]}-{i}", "sleep", params=params, timeout=90)
    commit(stack, q)
    children = [
        int(wait_for("a task to start its child", lambda p=p: p.exists() and p.read_text(), 30))
        for p in pidfiles
    ]
    stopped_at = time.monotonic()
    reply = stack.client.post(f"/api/v1/queues/{q}/stop")
    assert reply.status_code == 200, reply.text
    wait_for("every worker's process group killed", lambda: not any(map(_alive, children)), 5)
    assert time.monotonic() - stopped_at <= 5.0
    queue = final(stack, q)
    assert queue["status"] == "stopped"
    assert {t["status"] for t in queue["tasks"]} == {"cancelled"}
