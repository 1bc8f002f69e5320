"""The queue fold: pure rules of a queue of tasks that depend on each other.

A queue: open -> committed -> running -> succeeded | failed | stopped
A task:  pending -> ready -> running -> succeeded | failed | timed_out
         (retrying between two attempts; skipped or cancelled without running)

What arrives, and what decides on it:
- the four commands (`CreateQueue`, `AddQueueTask`, `CommitQueue`, `StopQueue`): `decide`;
- a task's outcome from the task side (`TaskSucceeded`, `TaskFailed`, `TaskTimedOut`,
  `TaskRejected`), matched by task id and attempt: `decide_outcome`;
- the clock's `RetryDue` facts (listed by `due_retries`): `retry_due`.
Each returns the derived events. The wiring then applies the input and those events, in that
order; the state is the fold of that stream (`fold`, and `fold_until` for the state as of a time).
`apply` ignores what does not fit the state, so a duplicate or late event changes nothing.

No Kafka, no clock, no I/O: `now` and every id arrive as arguments, and a derived event's id comes
from its input's id, so a replayed input derives the very same events.

Rules:
- Dependencies are checked when a task is added: each must name a task already added to the same
  queue. Every edge points back in time, so the graph cannot hold a cycle; the one cycle an add
  can express, a task naming itself, is rejected as a cycle (412.5). The client learns of a bad
  edge on the add that brings it, and an open queue is always a valid graph, so commit only has
  to check that the queue is not empty.
- `run_if=all_succeeded` readies a task once every dependency succeeded and skips it as soon as
  one ended otherwise (skips propagate); `all_done` readies it once every dependency ended.
- A failed, timed-out or refused attempt with attempts left is retried after
  `backoff_s * 2**(attempt - 1)` seconds; the retry is an event with its due time.
- Every queue ends: `succeeded` when all its tasks did, `failed` when all ended and one did not,
  `stopped` on stop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, assert_never

from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    QueueCommandRejected,
    QueueCommitted,
    QueueCreated,
    QueueFinished,
    QueueTaskAdded,
    QueueTaskCancelled,
    QueueTaskReady,
    QueueTaskRetryScheduled,
    QueueTaskSkipped,
    RetryDue,
    StopQueue,
    TaskFailed,
    TaskRejected,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
    derived_id,
)
from elves.streams.tasks.model import Limits, validation_error

QueueStatus = Literal["open", "committed", "running", "succeeded", "failed", "stopped"]
TaskStatus = Literal[
    "pending",
    "ready",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "timed_out",
    "skipped",
    "cancelled",
]
QUEUE_FINAL: frozenset[str] = frozenset({"succeeded", "failed", "stopped"})
TASK_FINAL: frozenset[str] = frozenset({"succeeded", "failed", "timed_out", "skipped", "cancelled"})
_QUEUE_ENDS: dict[str, QueueStatus] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "stopped": "stopped",
}
LIVE: frozenset[str] = frozenset({"ready", "running"})  # dispatched, or about to be
MODES = ("NP", "P")
RUN_IF = ("all_succeeded", "all_done")
NO_TASKS: Mapping[str, str] = MappingProxyType({})

Command = CreateQueue | AddQueueTask | CommitQueue | StopQueue
Outcome = TaskSucceeded | TaskFailed | TaskTimedOut | TaskRejected

# How a skip names what its dependency became.
_ENDED = {
    "failed": "failed",
    "timed_out": "timed out",
    "skipped": "was skipped",
    "cancelled": "was cancelled",
}


@dataclass(frozen=True)
class QueueTask:
    task_id: str
    agent_id: str
    func: str
    params: str
    timeout_s: int
    mode: str
    depends_on: tuple[str, ...]
    run_if: str
    max_attempts: int
    backoff_s: int
    proxy: str | None
    added_id: str  # the QueueTaskAdded's id: a redelivered add derives it again
    status: TaskStatus = "pending"
    attempt: int = 0  # the latest attempt made ready; 0 before the first
    retry_due_at: int = 0  # while retrying: when attempt + 1 may run
    worker_flag: int | None = None
    worker_message: str = ""
    worker_costtime: int = 0
    cause: str = ""  # why it was skipped, cancelled, or why its last attempt did not succeed

    @property
    def final(self) -> bool:
        return self.status in TASK_FINAL


@dataclass(frozen=True)
class QueueState:
    queue_id: str
    app: str
    name: str
    # The ids of the events that created, committed and ended the queue: a redelivered
    # command derives the same id again, so it is known and decides nothing new.
    created_id: str
    status: QueueStatus = "open"
    # In the order they were added. Never mutated: `apply` builds a new mapping (a plain dict,
    # so that `dataclasses.asdict` and a JSON table value take it as it is).
    tasks: Mapping[str, QueueTask] = field(default_factory=dict)
    committed_id: str = ""
    finished_id: str = ""

    @property
    def final(self) -> bool:
        return self.status in QUEUE_FINAL

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> QueueState:
        """The state back from `dataclasses.asdict` (through JSON, whose lists were tuples)."""
        tasks = {
            task_id: QueueTask(**{**task, "depends_on": tuple(task["depends_on"])})
            for task_id, task in raw["tasks"].items()
        }
        return cls(**{**raw, "tasks": tasks})


# --- Commands ---


def decide(
    state: QueueState | None,
    command: Command,
    now: int,
    *,
    limits: Limits,
    task_queues: Mapping[str, str] = NO_TASKS,
) -> list[Event]:
    """The events a command leads to; a rule it breaks is one `QueueCommandRejected`.

    `limits` are the instant tasks' own (a queue task is dispatched as a task). `task_queues`
    maps the task ids of every queue to their queue id: this queue's fold cannot see the others.
    """
    match command:
        case CreateQueue():
            return decide_create(state, command, now)
        case AddQueueTask():
            return decide_add(state, command, now, limits, task_queues)
        case CommitQueue():
            return decide_commit(state, command, now)
        case StopQueue():
            return decide_stop(state, command, now)
        case _:
            assert_never(command)


def _reject(cmd: Command, code: str, reason: str, now: int) -> list[Event]:
    return [
        QueueCommandRejected(
            event_id=derived_id(cmd.event_id, "rejected"),
            occurred_at=now,
            queue_id=cmd.queue_id,
            command=type(cmd).__name__,
            command_id=cmd.event_id,
            code=code,
            reason=reason,
        )
    ]


def _not_found(cmd: Command, now: int) -> list[Event]:
    return _reject(cmd, "412.1", f"queue not found: {cmd.queue_id}", now)


def decide_create(state: QueueState | None, cmd: CreateQueue, now: int) -> list[Event]:
    created = derived_id(cmd.event_id, "created")
    if state is not None:
        if state.created_id == created:
            return []
        return _reject(cmd, "412.2", f"queue {cmd.queue_id} already exists", now)
    for name in ("queue_id", "app"):
        if not getattr(cmd, name):
            return _reject(cmd, "403.1", f"missing field: {name}", now)
    return [QueueCreated(created, now, cmd.queue_id, cmd.app, cmd.name)]


def field_error(state: QueueState, cmd: AddQueueTask, limits: Limits) -> tuple[str, str] | None:
    """(code, reason) of the first field rule an add breaks, or None.

    The task's own fields follow the instant tasks' rules (same codes as the gateway).
    """
    as_task = TaskSubmitted(
        event_id=cmd.event_id,
        occurred_at=cmd.occurred_at,
        task_id=cmd.task_id,
        agent_id=cmd.agent_id,
        app=state.app,
        func=cmd.func,
        params=cmd.params,
        timeout_s=cmd.timeout_s,
        proxy=cmd.proxy,
        mode=f"CA{cmd.mode}",
    )
    error = validation_error(as_task, limits)
    if error is not None:
        return error
    if cmd.mode not in MODES:
        return "403.2", f"mode must be NP or P, not {cmd.mode!r}"
    if cmd.run_if not in RUN_IF:
        return "403.2", f"run_if must be all_succeeded or all_done, not {cmd.run_if!r}"
    if cmd.max_attempts < 1:
        return "403.2", f"max_attempts must be 1 or more, not {cmd.max_attempts}"
    if cmd.backoff_s < 0:
        return "403.2", f"backoff_s must not be negative, not {cmd.backoff_s}"
    if len(set(cmd.depends_on)) != len(cmd.depends_on):
        return "403.2", "depends_on names a task more than once"
    return None


def decide_add(
    state: QueueState | None,
    cmd: AddQueueTask,
    now: int,
    limits: Limits,
    task_queues: Mapping[str, str] = NO_TASKS,
) -> list[Event]:
    if state is None:
        return _not_found(cmd, now)
    added = derived_id(cmd.event_id, "added")
    existing = state.tasks.get(cmd.task_id)
    if existing is not None and existing.added_id == added:
        return []
    if state.status != "open":
        return _reject(
            cmd, "412.2", f"queue {state.queue_id} is {state.status}: it takes no more tasks", now
        )
    error = field_error(state, cmd, limits)
    if error is not None:
        return _reject(cmd, *error, now)
    if existing is not None:
        return _reject(cmd, "412.8", f"duplicate task id: {cmd.task_id}", now)
    owner = task_queues.get(cmd.task_id, state.queue_id)
    if owner != state.queue_id:
        return _reject(cmd, "412.6", f"task {cmd.task_id} belongs to queue {owner}", now)
    for dep in cmd.depends_on:
        if dep == cmd.task_id:
            return _reject(cmd, "412.5", f"dependency cycle: {dep} depends on itself", now)
        if dep in state.tasks:
            continue
        owner = task_queues.get(dep, state.queue_id)
        if owner != state.queue_id:
            return _reject(cmd, "412.6", f"dependency {dep} is a task of queue {owner}", now)
        return _reject(
            cmd, "412.4", f"unknown dependency: {dep} (add it to {state.queue_id} first)", now
        )
    return [
        QueueTaskAdded(
            event_id=added,
            occurred_at=now,
            queue_id=cmd.queue_id,
            task_id=cmd.task_id,
            agent_id=cmd.agent_id,
            func=cmd.func,
            params=cmd.params,
            timeout_s=cmd.timeout_s,
            mode=cmd.mode,
            depends_on=cmd.depends_on,
            run_if=cmd.run_if,
            max_attempts=cmd.max_attempts,
            backoff_s=cmd.backoff_s,
            proxy=cmd.proxy,
        )
    ]


def decide_commit(state: QueueState | None, cmd: CommitQueue, now: int) -> list[Event]:
    """Commit closes the queue and readies every root at once: they run in parallel."""
    if state is None:
        return _not_found(cmd, now)
    committed = derived_id(cmd.event_id, "committed")
    if state.committed_id == committed:
        return []
    if state.status != "open":
        return _reject(
            cmd, "412.2", f"queue {state.queue_id} is {state.status}: it cannot commit", now
        )
    if not state.tasks:
        return _reject(cmd, "412.7", f"queue {state.queue_id} has no tasks", now)
    roots = [t for t in state.tasks.values() if not t.depends_on]
    return [
        QueueCommitted(committed, now, state.queue_id),
        *(
            QueueTaskReady(
                derived_id(cmd.event_id, f"ready:{t.task_id}:1"), now, state.queue_id, t.task_id, 1
            )
            for t in roots
        ),
    ]


def decide_stop(state: QueueState | None, cmd: StopQueue, now: int) -> list[Event]:
    """Cancel every task that has not ended; a live one (`was_running`) gets a kill."""
    if state is None:
        return _not_found(cmd, now)
    finished = derived_id(cmd.event_id, "finished")
    if state.finished_id == finished:
        return []
    if state.final:
        return _reject(cmd, "412.2", f"queue {state.queue_id} already ended {state.status}", now)
    cancelled: list[Event] = [
        QueueTaskCancelled(
            event_id=derived_id(cmd.event_id, f"cancelled:{t.task_id}"),
            occurred_at=now,
            queue_id=state.queue_id,
            task_id=t.task_id,
            attempt=t.attempt,
            was_running=t.status in LIVE,
        )
        for t in state.tasks.values()
        if not t.final
    ]
    return [*cancelled, QueueFinished(finished, now, state.queue_id, "stopped")]


# --- Outcomes and retries ---


def _open_attempt(state: QueueState | None, outcome: Outcome) -> QueueTask | None:
    """The queue task an outcome ends, or None when it is late, repeated or not ours."""
    if state is None or state.final:
        return None
    task = state.tasks.get(outcome.task_id)
    if task is None or task.status not in LIVE:
        return None
    if isinstance(outcome, TaskRejected):
        # Refused before it ran (agent offline, ...): it carries no attempt, and ends this one.
        return task if task.status == "ready" else None
    return task if outcome.attempt == task.attempt else None


def retry_delay_ms(task: QueueTask) -> int:
    """Exponential backoff after attempt `task.attempt` failed."""
    return task.backoff_s * 1000 * (1 << (task.attempt - 1))


def decide_outcome(state: QueueState | None, outcome: Outcome) -> list[Event]:
    """What follows a task's end: a retry, or the dependents that may now run or never will.

    Derived events take the outcome's time, so a replay derives them identically.
    """
    task = _open_attempt(state, outcome)
    if state is None or task is None:
        return []
    after = _apply(state, outcome)
    now = outcome.occurred_at
    if after.tasks[task.task_id].status == "retrying":
        next_attempt = task.attempt + 1
        due = now + retry_delay_ms(task)
        events: list[Event] = [
            QueueTaskRetryScheduled(
                derived_id(outcome.event_id, "retry"),
                now,
                state.queue_id,
                task.task_id,
                next_attempt,
                due,
            )
        ]
        if due <= now:  # no backoff: ready at once, without a round trip through the clock
            events.append(
                QueueTaskReady(
                    derived_id(outcome.event_id, f"ready:{task.task_id}:{next_attempt}"),
                    now,
                    state.queue_id,
                    task.task_id,
                    next_attempt,
                )
            )
        return events
    return _settle(after, task.task_id, outcome.event_id, now)


def due_retries(state: QueueState | None, now: int) -> list[RetryDue]:
    """The clock's facts: every retry whose due time is not after `now`."""
    if state is None or state.final:
        return []
    return [
        RetryDue(
            # One id per retry: the clock may say it on several ticks, the log keeps one.
            event_id=derived_id(f"{state.queue_id}:{t.task_id}:{t.attempt + 1}", "retry_due"),
            occurred_at=now,
            queue_id=state.queue_id,
            task_id=t.task_id,
            attempt=t.attempt + 1,
        )
        for t in state.tasks.values()
        if t.status == "retrying" and t.retry_due_at <= now
    ]


def retry_due(state: QueueState | None, fact: RetryDue) -> list[Event]:
    if state is None or state.final:
        return []
    task = state.tasks.get(fact.task_id)
    if task is None or task.status != "retrying" or fact.attempt != task.attempt + 1:
        return []
    return [
        QueueTaskReady(
            derived_id(fact.event_id, "ready"),
            fact.occurred_at,
            state.queue_id,
            task.task_id,
            fact.attempt,
        )
    ]


def _dependents(state: QueueState) -> dict[str, list[str]]:
    """Task id -> the ids of the tasks that depend on it, in the order they were added."""
    found: dict[str, list[str]] = {}
    for task in state.tasks.values():
        for dep in task.depends_on:
            found.setdefault(dep, []).append(task.task_id)
    return found


def _verdict(state: QueueState, task: QueueTask) -> tuple[Literal["ready", "skip"], str] | None:
    """Whether a pending task may run now, can never run (and why), or must wait."""
    deps = [state.tasks[d] for d in task.depends_on]
    if task.run_if == "all_done":
        return ("ready", "") if all(d.final for d in deps) else None
    for dep in deps:
        if dep.final and dep.status != "succeeded":
            return "skip", f"dependency {dep.task_id} {_ENDED[dep.status]}"
    return ("ready", "") if all(d.status == "succeeded" for d in deps) else None


def _settle(state: QueueState, ended: str, source_id: str, now: int) -> list[Event]:
    """Ready or skip the dependents of a task that ended, transitively; end the queue if done."""
    dependents = _dependents(state)
    events: list[Event] = []
    todo = deque([ended])
    while todo:
        for task_id in dependents.get(todo.popleft(), ()):
            task = state.tasks[task_id]
            verdict = _verdict(state, task) if task.status == "pending" else None
            if verdict is None:
                continue
            event: Event
            if verdict[0] == "ready":
                event = QueueTaskReady(
                    derived_id(source_id, f"ready:{task_id}:1"), now, state.queue_id, task_id, 1
                )
            else:
                event = QueueTaskSkipped(
                    derived_id(source_id, f"skipped:{task_id}"),
                    now,
                    state.queue_id,
                    task_id,
                    verdict[1],
                )
                todo.append(task_id)  # its own dependents may now be doomed, or done waiting
            events.append(event)
            state = _apply(state, event)
    if all(t.final for t in state.tasks.values()):
        ok = all(t.status == "succeeded" for t in state.tasks.values())
        events.append(
            QueueFinished(
                derived_id(source_id, "finished"),
                now,
                state.queue_id,
                "succeeded" if ok else "failed",
            )
        )
    return events


# --- The fold ---


def _with_task(state: QueueState, task: QueueTask) -> QueueState:
    return replace(state, tasks={**state.tasks, task.task_id: task})


def _record(state: QueueState, task: QueueTask, outcome: Outcome) -> QueueState:
    """A task's attempt ended: keep what it reported, and end the task unless a retry follows."""
    last_try = task.attempt >= task.max_attempts
    match outcome:
        case TaskSucceeded():
            ended = replace(
                task,
                status="succeeded",
                worker_flag=outcome.worker_flag,
                worker_message=outcome.worker_message,
                worker_costtime=outcome.worker_costtime,
                cause="",
            )
        case TaskFailed():
            ended = replace(
                task,
                status="failed" if last_try else "retrying",
                worker_flag=outcome.worker_flag,
                worker_message=outcome.worker_message,
                worker_costtime=outcome.worker_costtime,
                cause=f"attempt {task.attempt} failed",
            )
        case TaskTimedOut():
            ended = replace(
                task,
                status="timed_out" if last_try else "retrying",
                worker_flag=-1,
                cause=f"attempt {task.attempt} timed out",
            )
        case TaskRejected():
            ended = replace(
                task,
                status="failed" if last_try else "retrying",
                worker_flag=-1,
                cause=f"attempt {task.attempt} refused: [{outcome.code}] {outcome.reason}",
            )
        case _:
            assert_never(outcome)
    if ended.status == "retrying":
        ended = replace(ended, retry_due_at=outcome.occurred_at + retry_delay_ms(task))
    return _started(_with_task(state, ended))


def _started(state: QueueState) -> QueueState:
    return replace(state, status="running") if state.status == "committed" else state


def apply(state: QueueState | None, event: Event) -> QueueState | None:
    """Fold one event into the state. What does not fit the state (a duplicate, a late result,
    another queue's task) changes nothing."""
    if state is not None:
        return _apply(state, event)
    if isinstance(event, QueueCreated):
        return QueueState(event.queue_id, event.app, event.name, created_id=event.event_id)
    return None


def _apply(state: QueueState, event: Event) -> QueueState:
    task = state.tasks.get(getattr(event, "task_id", ""))
    match event:
        case QueueTaskAdded() if task is None and state.status == "open":
            return _with_task(
                state,
                QueueTask(
                    task_id=event.task_id,
                    agent_id=event.agent_id,
                    func=event.func,
                    params=event.params,
                    timeout_s=event.timeout_s,
                    mode=event.mode,
                    depends_on=event.depends_on,
                    run_if=event.run_if,
                    max_attempts=event.max_attempts,
                    backoff_s=event.backoff_s,
                    proxy=event.proxy,
                    added_id=event.event_id,
                ),
            )
        case QueueCommitted() if state.status == "open":
            return replace(state, status="committed", committed_id=event.event_id)
        case QueueTaskReady() if task is not None and task.status in ("pending", "retrying"):
            if event.attempt == task.attempt + 1:
                return _with_task(
                    state, replace(task, status="ready", attempt=event.attempt, retry_due_at=0)
                )
        case TaskStarted() if task is not None and task.status == "ready":
            if event.attempt == task.attempt:
                return _started(_with_task(state, replace(task, status="running")))
        case TaskSucceeded() | TaskFailed() | TaskTimedOut() | TaskRejected():
            if task is not None and _open_attempt(state, event) is task:
                return _record(state, task, event)
        case QueueTaskRetryScheduled() if task is not None and task.status == "retrying":
            if event.attempt == task.attempt + 1:
                return _with_task(state, replace(task, retry_due_at=event.due_at))
        case QueueTaskSkipped() if task is not None and task.status == "pending":
            return _with_task(state, replace(task, status="skipped", cause=event.cause))
        case QueueTaskCancelled() if task is not None and not task.final:
            return _with_task(state, replace(task, status="cancelled", cause="queue stopped"))
        case QueueFinished() if not state.final and event.status in _QUEUE_ENDS:
            return replace(state, status=_QUEUE_ENDS[event.status], finished_id=event.event_id)
    return state


def fold(events: Iterable[Event], state: QueueState | None = None) -> QueueState | None:
    for event in events:
        state = apply(state, event)
    return state


def fold_until(events: Iterable[Event], as_of_ms: int) -> QueueState | None:
    """The queue as it stood at `as_of_ms`: only the events that had occurred by then.

    Events are taken in log order and filtered by their own time (a task's outcome carries the
    agent's), so an event the log holds out of time order is left out, not reordered.
    """
    return fold(e for e in events if e.occurred_at <= as_of_ms)
