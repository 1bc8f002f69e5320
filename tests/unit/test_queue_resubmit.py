"""A worker that takes queues over sends every ready task's submission again, as the same event."""

from __future__ import annotations

import uuid

from elves.schemas.events import QueueTaskReady, new_id
from elves.streams.queues.wiring import resubmit, submission

from .test_queues_model import NOW, Run, add, commit, create, ok


def test_ready_tasks_are_submitted_again_with_the_ids_they_had() -> None:
    run = Run()
    run.command(create())
    run.command(add("a"))
    run.command(add("b", "a"))
    run.command(add("c"))
    ready = run.command(commit())
    assert run.state is not None
    first = {
        e.task_id: submission(run.state, e.task_id, e.attempt, e.occurred_at)
        for e in ready
        if isinstance(e, QueueTaskReady)
    }
    again = {s.task_id: s for s in resubmit([run.state], NOW + 5000)}
    assert set(again) == {"a", "c"}  # b waits for a: not ready, not sent
    assert {t: s.event_id for t, s in again.items()} == {t: s.event_id for t, s in first.items()}
    run.outcome(ok("a", NOW + 10))
    assert {s.task_id for s in resubmit([run.state], NOW + 5000)} == {"b", "c"}


def test_an_ended_queue_sends_nothing() -> None:
    run = Run()
    run.command(create())
    run.command(add("a"))
    run.command(commit())
    run.outcome(ok("a", NOW + 10))
    assert run.state is not None and run.state.final
    assert resubmit([run.state], NOW) == []


def test_a_submission_sorts_beside_the_add_it_comes_from() -> None:
    # The gateway's adds carry time-ordered ids; the task's submission, and so every event of
    # its lifecycle, keeps the add's time (the audit's lookups stay cheap as it grows).
    run = Run()
    run.command(create())
    made = new_id(NOW)
    run.command(add("a", event_id=made))
    run.command(commit())
    assert run.state is not None
    first, second = (submission(run.state, "a", n, NOW + n) for n in (1, 2))
    for sent in (first, second):
        assert uuid.UUID(sent.event_id).int >> 80 == NOW
    assert first.event_id != second.event_id
