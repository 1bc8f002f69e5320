"""A queue's limits on the real broker: its parallel tasks (`max_parallel`) and the failed
tasks that stop the rest (`max_failures`)."""

from __future__ import annotations

import time

from elves.errors import MissingField, WrongType
from elves.local import Stack, wait_for

from .test_cli import elves
from .test_queue_rerun import code
from .test_queues import add, commit, final


def test_a_queue_with_a_limit_runs_at_most_that_many_tasks_at_once(stack: Stack) -> None:
    bad = [
        stack.client.post("/api/v1/queues", json={"app": "sleeper", "max_parallel": v})
        for v in (-1, "2", True)
    ]
    for reply in bad:
        assert code(reply) == (400, WrongType.code), reply.text
    reply = stack.client.post("/api/v1/queues", json={"app": "sleeper", "max_parallel": 2})
    assert reply.status_code == 201, reply.text
    q = reply.json()["queue_id"]
    ids = [f"{q[:8]}-{n}" for n in range(6)]
    for task_id in ids:
        add(stack, q, task_id, "sleep", params={"seconds": 1})
    commit(stack, q)
    ended = final(stack, q)
    assert ended["status"] == "succeeded" and ended["max_parallel"] == 2

    most, order = _slots(stack, q, len(ids))
    assert most == 2 and order == ids  # two at a time, in the order they were added

    # A rerun keeps the limit, and the CLI shows it.
    again = stack.client.post(f"/api/v1/queues/{q}/rerun")
    assert again.status_code == 201, again.text
    assert final(stack, again.json()["queue_id"])["max_parallel"] == 2
    shown = elves(stack, "queue", "show", q)
    assert f"queue {q} (sleeper): succeeded, at most 2 tasks at once" in shown.stdout


def test_the_cli_makes_a_rolling_queue(stack: Stack) -> None:
    made = elves(stack, "queue", "create", "sleeper", "--max-parallel", "1")
    assert made.returncode == 0, made.stdout + made.stderr
    q = made.stdout.strip()

    def shown() -> str | None:
        done = elves(stack, "queue", "show", q)
        return done.stdout if done.returncode == 0 else None  # once the audit has it

    assert f"queue {q} (sleeper): open, at most 1 task at once" in wait_for("it", shown, 15)
    refused = elves(stack, "queue", "create", "sleeper", "--max-parallel", "-1")
    assert refused.returncode == 2 and "--max-parallel" in refused.stderr  # argparse's refusal


def _slots(stack: Stack, q: str, tasks: int) -> tuple[int, list[str]]:
    """From the queue's own log, in its order (a slot is taken by a ready and freed by an
    outcome): the most slots held at once, and the tasks in the order they were readied."""
    sql = (
        f"SELECT type, task_id FROM events WHERE queue_id = '{q}' "
        f"AND topic = '{stack.settings.topic('queues')}' ORDER BY offset"
    )
    log = wait_for("the queue's log", lambda: _whole(stack.audit(sql), tasks), 15)
    held, most, order = 0, 0, []
    for kind, task_id in log:
        if kind == "QueueTaskReady":
            held, most = held + 1, max(most, held + 1)
            order.append(task_id)
        elif kind == "TaskSucceeded":
            held -= 1
    return most, order


def test_a_queue_runs_at_most_its_max_parallel_percent_of_its_tasks_at_once(stack: Stack) -> None:
    bad = stack.client.post("/api/v1/queues", json={"app": "sleeper", "max_parallel_percent": 101})
    assert code(bad) == (400, WrongType.code), bad.text
    made = elves(stack, "queue", "create", "sleeper", "--max-parallel", "50%")
    assert made.returncode == 0, made.stdout + made.stderr
    q = made.stdout.strip()
    ids = [f"{q[:8]}-{n}" for n in range(4)]
    for task_id in ids:
        add(stack, q, task_id, "sleep", params={"seconds": 0.5})
    commit(stack, q)
    assert final(stack, q)["status"] == "succeeded"
    assert _slots(stack, q, len(ids)) == (2, ids)  # 50% of 4
    shown = elves(stack, "queue", "show", q)
    assert "succeeded, at most 50% of its tasks at once (2 of 4)" in shown.stdout


def _whole(log: list[list[str]], tasks: int) -> list[list[str]] | None:
    """The log once it holds every task's outcome (the audit writes in batches)."""
    return log if sum(kind == "TaskSucceeded" for kind, _ in log) == tasks else None


def test_a_rolling_queue_stops_at_its_first_failure(stack: Stack) -> None:
    limits = {"max_parallel": 1, "max_failures": 1}
    reply = stack.client.post("/api/v1/queues", json={"app": "crasher", **limits})
    assert reply.status_code == 201, reply.text
    q = reply.json()["queue_id"]
    ids = [f"{q[:8]}-{n}" for n in range(4)]
    for task_id, func in zip(ids, ("noisy", "falsy", "noisy", "noisy"), strict=True):
        add(stack, q, task_id, func)
    commit(stack, q)
    ended = final(stack, q)
    assert ended["status"] == "failed" and ended["max_failures"] == 1
    tasks = {t["task_id"]: t for t in ended["tasks"]}
    assert [tasks[t]["status"] for t in ids] == ["succeeded", "failed", "cancelled", "cancelled"]
    assert tasks[ids[2]]["cause"] == "queue stopped: 1 failed, its max_failures"
    # What was cancelled never ran.
    sql = (
        f"SELECT count() FROM events WHERE task_id IN ('{ids[2]}', '{ids[3]}') "
        "AND type = 'TaskDispatched'"
    )
    assert stack.audit(sql) == [[0]]


def test_the_failure_limit_kills_what_still_runs(stack: Stack) -> None:
    reply = stack.client.post("/api/v1/queues", json={"app": "sleeper", "max_failures": 1})
    q = reply.json()["queue_id"]
    long, short = f"{q[:8]}-long", f"{q[:8]}-short"
    add(stack, q, long, "sleep", params={"seconds": 30}, timeout=60)
    add(stack, q, short, "sleep", params={"seconds": 30}, timeout=1)  # times out: a failure
    started = time.monotonic()
    commit(stack, q)
    ended = final(stack, q, timeout=25)
    tasks = {t["task_id"]: t for t in ended["tasks"]}
    assert ended["status"] == "failed"
    assert (tasks[short]["status"], tasks[long]["status"]) == ("timed_out", "cancelled")
    # The 30 s sleeper was killed on its agent: its attempt ended long before 30 s.
    assert time.monotonic() - started < 20
    sql = f"SELECT count() FROM events WHERE task_id = '{long}' AND type = 'TaskCancelRequested'"
    assert wait_for("the kill in the audit", lambda: stack.audit(sql) == [[1]] or None, 15)


def test_a_queue_stops_once_over_its_max_failure_percent(stack: Stack) -> None:
    for percent in (100, -1, "10%"):
        bad = stack.client.post(
            "/api/v1/queues", json={"app": "crasher", "max_failure_percent": percent}
        )
        assert code(bad) == (400, WrongType.code), bad.text
    refused = elves(stack, "queue", "create", "crasher", "--max-failures", "150%")
    assert refused.returncode == 2 and "a percent from 1 to 99" in refused.stderr

    rolling = ("--max-parallel", "1", "--max-failures", "40%")
    made = elves(stack, "queue", "create", "crasher", *rolling)
    assert made.returncode == 0, made.stdout + made.stderr
    q = made.stdout.strip()
    ids = [f"{q[:8]}-{n}" for n in range(5)]
    # 40% of 5: the second failure is 40%, not over it; the third is 60%, and stops the queue.
    for task_id, func in zip(ids, ("falsy", "falsy", "noisy", "falsy", "noisy"), strict=True):
        add(stack, q, task_id, func)
    commit(stack, q)
    ended = final(stack, q)
    tasks = {t["task_id"]: t for t in ended["tasks"]}
    statuses = [tasks[t]["status"] for t in ids]
    assert statuses == ["failed", "failed", "succeeded", "failed", "cancelled"]
    cause = "queue stopped: 3 failed, over its max_failure_percent (40% of 5)"
    assert (ended["status"], tasks[ids[4]]["cause"]) == ("failed", cause)
    shown = elves(stack, "queue", "show", q)
    assert f"queue {q} (crasher): failed, at most 1 task at once, stops once over 40%" in (
        shown.stdout
    )


def test_a_running_queue_s_limit_changes_from_now_on(stack: Stack) -> None:
    reply = stack.client.post("/api/v1/queues", json={"app": "sleeper", "max_parallel": 1})
    q = reply.json()["queue_id"]
    ids = [f"{q[:8]}-{n}" for n in range(4)]
    for task_id in ids:
        add(stack, q, task_id, "sleep", params={"seconds": 2})
    limits = f"/api/v1/queues/{q}/limits"
    assert code(stack.client.post(limits, json={})) == (400, MissingField.code)
    assert code(stack.client.post(limits, json={"max_parallel": -1})) == (400, WrongType.code)
    commit(stack, q)
    changed = stack.client.post(limits, json={"max_parallel": 4})  # while the first one runs
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "queue_id": q,
        "max_parallel": 4,
        "max_failures": 0,
        "max_failure_percent": 0,
        "max_parallel_percent": 0,
    }
    ended = final(stack, q)
    assert ended["status"] == "succeeded" and ended["max_parallel"] == 4
    assert _slots(stack, q, len(ids)) == (4, ids)  # the other three readied by the change

    late = stack.client.post(limits, json={"max_parallel": 1})
    assert code(late) == (409, "412.2")
    missing = stack.client.post("/api/v1/queues/no-such-queue/limits", json={"max_parallel": 1})
    assert code(missing)[1] == "412.1"


def test_the_cli_changes_a_queue_s_limits(stack: Stack) -> None:
    made = elves(stack, "queue", "create", "sleeper", "--max-parallel", "1")
    q = made.stdout.strip()
    changed = elves(stack, "queue", "limits", q, "--max-parallel", "25%", "--max-failures", "2")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert changed.stdout == (
        f"queue {q}: at most 25% of its tasks at once, stops after 2 failed tasks\n"
    )
    cleared = elves(stack, "queue", "limits", q, "--max-parallel", "0", "--max-failures", "0")
    assert cleared.stdout == f"queue {q}: no limits\n"
    nothing = elves(stack, "queue", "limits", q)
    assert nothing.returncode == 2 and "give --max-parallel" in nothing.stdout
