"""`kill -9` of the streams worker in the middle of a queue: a new worker finishes it, and every
attempt ran exactly once on its agent, with no transition lost or doubled.

It kills the session's streams worker and leaves its successor running for the tests after it.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from elves.local import Stack, wait_for

from .conftest import AGENT
from .test_queues import add, by_task, commit, create, final

TASKS = 20


def trails(stack: Stack, queue: dict[str, Any]) -> dict[str, list[str]]:
    """The audit's events of each task that did not succeed, in order: what a failure shows."""
    return {
        t["task_id"]: [
            f"{kind} {at}"
            for kind, at in stack.audit(
                "SELECT type, occurred_at FROM events "
                f"WHERE task_id = '{t['task_id']}' ORDER BY occurred_at"
            )
        ]
        for t in by_task(queue).values()
        if t["status"] != "succeeded"
    }


def test_the_queue_completes_after_the_streams_worker_is_killed(
    stack: Stack, tmp_path: Path
) -> None:
    q = create(stack, "sleeper")
    ids = [f"{q[:8]}-{i:02d}" for i in range(TASKS)]
    logs = {t: tmp_path / f"{t}.runs" for t in ids}
    for i, t in enumerate(ids):  # a chain: each task after the one before
        deps = [ids[i - 1]] if i else []
        assert (
            add(
                stack, q, t, "sleep", depends_on=deps, params={"seconds": 0.2, "log": str(logs[t])}
            ).status_code
            == 201
        )
    commit(stack, q)

    def succeeded() -> int:
        [[n]] = stack.audit(
            f"SELECT count() FROM events WHERE queue_id = '{q}' AND type = 'TaskSucceeded'"
        )
        return int(n)

    wait_for("a few tasks to succeed", lambda: succeeded() >= 5, 60)
    [streams] = [p for p in stack.processes if p.name == "streams"]
    streams.stop(signal.SIGKILL)
    stack.processes.remove(streams)
    stack.spawn("streams", "streams")

    queue = final(stack, q, timeout=120)
    assert queue["status"] == "succeeded", trails(stack, queue)
    assert all(t["status"] == "succeeded" and t["attempt"] == 1 for t in by_task(queue).values())
    # Each attempt ran exactly once on its agent.
    assert {t: len(logs[t].read_text().splitlines()) for t in ids} == {t: 1 for t in ids}
    # No transition lost or doubled: one event of each kind per task, in the audit.
    kinds = (
        "TaskSubmitted",
        "TaskAccepted",
        "TaskDispatched",
        "TaskResultReported",
        "TaskSucceeded",
    )
    sql = (
        "SELECT task_id, type, count() FROM events WHERE task_id IN "
        f"({', '.join(repr(t) for t in ids)}) AND type IN {kinds!r} GROUP BY task_id, type"
    )

    # The queue's end (on `queues`) may reach the audit before the last task's own events (on
    # `tasks`): wait until every kind of every task is there, then count them.
    def every_kind() -> list[list[Any]] | None:
        found = stack.audit(sql)
        return found if len(found) == len(ids) * len(kinds) else None

    rows = wait_for("every task's events in the audit", every_kind, 15)
    counts = {(t, kind): int(n) for t, kind, n in rows}
    for t in ids:
        for kind in kinds:
            assert counts.get((t, kind)) == 1, (t, kind, counts.get((t, kind)))
    [[finished]] = stack.audit(
        f"SELECT count() FROM events WHERE queue_id = '{q}' AND type = 'QueueFinished'"
    )
    assert finished == 1
    # And the new worker serves instant tasks too.
    assert stack.exec(AGENT, "apptest", "helloword", {"my": "after"}).json()["worker_message"] == (
        "after"
    )
