"""A queue's limit on its parallel tasks (`max_parallel`), on the real broker."""

from __future__ import annotations

from elves.errors import WrongType
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

    # The queue's own log, in its order: a slot is taken by a ready and freed by an outcome.
    sql = (
        f"SELECT type, task_id FROM events WHERE queue_id = '{q}' "
        f"AND topic = '{stack.settings.topic('queues')}' ORDER BY offset"
    )
    log = wait_for("the queue's log", lambda: _whole(stack.audit(sql), len(ids)), 15)
    held, most, order = 0, 0, []
    for kind, task_id in log:
        if kind == "QueueTaskReady":
            held, most = held + 1, max(most, held + 1)
            order.append(task_id)
        elif kind == "TaskSucceeded":
            held -= 1
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
    assert refused.returncode == 1 and "max_parallel" in refused.stdout


def _whole(log: list[list[str]], tasks: int) -> list[list[str]] | None:
    """The log once it holds every task's outcome (the audit writes in batches)."""
    return log if sum(kind == "TaskSucceeded" for kind, _ in log) == tasks else None
