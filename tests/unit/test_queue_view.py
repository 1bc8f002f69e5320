"""The queue view's order: the audit's rows of a queue folded as the queue's flow took them.

The audit hands a queue's rows back by time. Times do not order cause and effect here: an outcome
carries its agent's clock, and an instant refusal the very millisecond of the attempt it refuses.
So the view folds the queue's own log (`queues`) by offset, and the watcher stores the outcome's
copy from there. Each case below gives the rows in time order (outcomes first within a
millisecond, as the audit's type order once did) and expects what the flow itself decided.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from elves.api.audit import AuditRow
from elves.api.gateway import to_event
from elves.api.queues import in_log_order
from elves.api.watcher import is_queue_copy
from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    SetQueueLimits,
    StopQueue,
    TaskRejected,
)
from elves.streams.queues import model

from .test_queues_model import NOW, Run, add, diamond, ok, queue, stop

QUEUES, COMMANDS, TASKS = "p.queues", "p.commands", "p.tasks"
COMMANDS_OF_A_QUEUE = (CreateQueue, AddQueueTask, CommitQueue, StopQueue, SetQueueLimits)
OUTCOMES = ("TaskSucceeded", "TaskFailed", "TaskTimedOut", "TaskRejected")


def audit_rows(run: Run) -> list[dict[str, Any]]:
    """The rows the audit holds of `run`'s log, as `queue_events` returns them: by time, and
    within a millisecond outcomes before the rest."""
    rows = []
    for offset, event in enumerate(run.log):
        on_queues = not isinstance(event, COMMANDS_OF_A_QUEUE)
        rows.append(
            {
                "type": type(event).__name__,
                "topic": QUEUES if on_queues else COMMANDS,
                "partition": 0,
                "offset": offset,
                "occurred_at": event.occurred_at,
                "payload": dataclasses.asdict(event),  # type: ignore[call-overload]
            }
        )
    return sorted(rows, key=lambda r: (r["occurred_at"], r["type"] not in OUTCOMES))


def view(rows: list[dict[str, Any]]) -> model.QueueState | None:
    events: list[Event] = [e for e in (to_event(r) for r in rows) if e is not None]
    return model.fold(events)


def refused(task_id: str, at: int) -> TaskRejected:
    return TaskRejected(f"rej-{task_id}", at, task_id, "a1", "414.2", "unknown agent: a1", "q1")


def test_an_instant_refusal_in_the_millisecond_of_its_attempt_fails_the_task() -> None:
    run = queue(add("a"), add("b", "a"))  # the commit readies a at NOW
    run.outcome(refused("a", NOW))  # the task lifecycle refuses it within that millisecond
    rows = audit_rows(run)
    assert run.statuses() == {"a": "failed", "b": "skipped"}

    state = view(in_log_order(rows, QUEUES))

    assert state == run.state
    assert state is not None and state.status == "failed"
    assert "414.2" in state.tasks["a"].cause
    assert view(rows) != run.state  # by time the refusal comes first and changes nothing


def test_an_agent_clock_behind_the_center_does_not_lose_an_outcome() -> None:
    run = diamond()
    run.outcome(ok("a", NOW - 50))  # its agent's clock is 50 ms behind the commit's
    for task_id in "bc":
        run.outcome(ok(task_id, NOW + 10))
    run.outcome(ok("d", NOW + 20))
    rows = audit_rows(run)
    assert run.state is not None and run.state.status == "succeeded"

    assert view(in_log_order(rows, QUEUES)) == run.state
    assert view(rows) != run.state


def test_a_stop_before_the_outcome_reached_the_queue_wins_whatever_the_clocks() -> None:
    run = queue(add("a"))
    run.command(stop(), now=NOW + 100)  # a runs; the stop cancels it at NOW + 100
    run.outcome(ok("a", NOW + 40))  # its result, stamped earlier by its agent, came after
    rows = audit_rows(run)
    assert run.statuses() == {"a": "cancelled"}

    assert view(in_log_order(rows, QUEUES)) == run.state
    assert view(rows) != run.state


def test_the_rows_off_the_queues_log_come_after_it_by_time() -> None:
    rows = [
        {"type": "RetryDue", "topic": "p.queue-inputs", "offset": 9, "occurred_at": 1},
        {"type": "QueueTaskReady", "topic": QUEUES, "offset": 7, "occurred_at": 3},
        {"type": "QueueCreated", "topic": QUEUES, "offset": 2, "occurred_at": 2},
        {"type": "TaskSubmitted", "topic": COMMANDS, "offset": 1, "occurred_at": 3},
    ]
    ordered = in_log_order(rows, QUEUES)
    assert [r["type"] for r in ordered] == [
        "QueueCreated",
        "QueueTaskReady",
        "RetryDue",
        "TaskSubmitted",
    ]


def row(kind: str, topic: str, queue_id: str = "q1") -> AuditRow:
    return AuditRow("e1", kind, topic, 0, 0, NOW, "a1", "t1", "app", "{}", queue_id=queue_id)


def test_the_audit_keeps_a_queue_outcome_from_the_queues_log_only() -> None:
    assert not is_queue_copy(row("TaskSucceeded", QUEUES), QUEUES)
    assert is_queue_copy(row("TaskSucceeded", TASKS), QUEUES)
    assert is_queue_copy(row("TaskRejected", "p.queue-inputs"), QUEUES)
    # An instant task's outcome has one copy; a queue's own events are only on `queues`.
    assert not is_queue_copy(row("TaskSucceeded", TASKS, queue_id=""), QUEUES)
    assert not is_queue_copy(row("TaskSubmitted", COMMANDS), QUEUES)
    assert not is_queue_copy(row("QueueTaskReady", QUEUES), QUEUES)
