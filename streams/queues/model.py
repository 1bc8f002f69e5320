"""The queue fold: pure rules of a queue of tasks that depend on each other.

A queue: open -> committed -> running -> succeeded | failed | stopped
A task:  pending -> ready -> running -> succeeded | failed | timed_out
         (retrying between two attempts; skipped or cancelled without running)

What arrives, and what decides on it:
- the five commands (`CreateQueue`, `AddQueueTask`, `CommitQueue`, `StopQueue`,
  `SetQueueLimits`): `decide`;
- a task's outcome from the task side (`TaskSucceeded`, `TaskFailed`, `TaskTimedOut`,
  `TaskRejected`), matched by task id and attempt: `decide_outcome`;
- the clock's `RetryDue` facts (listed by `due_retries`): `retry_due`;
- an agent's `TaskStarted` of a queue task (which names no queue: the wiring has the queue id
  from the message's key): `running`.
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
- A task by tag selector is one task per agent the gateway matched (`<task_id>@<agent_id>`),
  grouped under its task id; a dependency on the group is a dependency on each of its tasks.
- `run_if=all_succeeded` readies a task once every dependency succeeded and skips it as soon as
  one ended otherwise (skips propagate); `all_done` readies it once every dependency ended.
- A failed, timed-out or refused attempt with attempts left is retried after
  `backoff_s * 2**(attempt - 1)` seconds; the retry is an event with its due time.
- Every queue ends: `succeeded` when all its tasks did, `failed` when all ended and one did not,
  `stopped` on stop.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from typing import Literal, assert_never

from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    QueueCommandRejected,
    QueueCommitted,
    QueueCreated,
    QueueFinished,
    QueueLimitsSet,
    QueueTaskAdded,
    QueueTaskCancelled,
    QueueTaskReady,
    QueueTaskRetryScheduled,
    QueueTaskRunning,
    QueueTaskSkipped,
    RetryDue,
    SetQueueLimits,
    StopQueue,
    TaskStarted,
    TaskSubmitted,
    derived_id,
)
from elves.streams.queues.state import (
    _ENDED,
    FAILED,
    LIVE,
    MODES,
    NO_TASKS,
    RUN_IF,
    Command,
    Outcome,
    QueueState,
    QueueTask,
    _apply,
    _open_attempt,
    apply,
    fold,
    fold_until,
    retry_delay_ms,
)

# The rules are this module's; the state and its fold are state.py's, reached through here too.
__all__ = [
    "answer_ids",
    "decide",
    "decide_create",
    "field_error",
    "decide_add",
    "members",
    "decide_commit",
    "decide_stop",
    "decide_limits",
    "decide_outcome",
    "due_retries",
    "retry_due",
    "running",
    "QueueState",
    "QueueTask",
    "apply",
    "fold",
    "fold_until",
    "retry_delay_ms",
    "LIVE",
    "NO_TASKS",
    "MODES",
    "RUN_IF",
    "Command",
    "Outcome",
]
from elves.permissions import Permits, anywhere
from elves.streams.tasks.model import Limits, validation_error

# --- Commands ---


def decide(
    state: QueueState | None,
    command: Command,
    now: int,
    *,
    limits: Limits,
    task_queues: Mapping[str, str] = NO_TASKS,
    permits: Permits = anywhere,
) -> list[Event]:
    """The events a command leads to; a rule it breaks is one `QueueCommandRejected`.

    `limits` are the instant tasks' own (a queue task is dispatched as a task). `task_queues`
    maps the task ids of every queue to their queue id: this queue's fold cannot see the others.
    `permits(app, agent_id)`: may the app run on that agent (its permission rule).
    """
    match command:
        case CreateQueue():
            return decide_create(state, command, now)
        case AddQueueTask():
            return decide_add(state, command, now, limits, task_queues, permits)
        case CommitQueue():
            return decide_commit(state, command, now)
        case StopQueue():
            return decide_stop(state, command, now)
        case SetQueueLimits():
            return decide_limits(state, command, now)
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
    for name, _ in LIMITS:
        reason = limit_error(name, getattr(cmd, name))
        if reason is not None:
            return _reject(cmd, "403.2", reason, now)
    limits = (getattr(cmd, name) for name, _ in LIMITS)
    return [QueueCreated(created, now, cmd.queue_id, cmd.app, cmd.name, *limits)]


# The most a count may be: the events carry it as an Avro int (a larger one failed to encode,
# and the gateway answered 500).
MOST_COUNT = 2**31 - 1
# A queue's limits, in `CreateQueue`'s order, each with the most it may be. 100% of failures
# could never stop a queue: asking for it is a mistake.
LIMITS = (
    ("max_parallel", MOST_COUNT),
    ("max_failures", MOST_COUNT),
    ("max_failure_percent", 99),
    ("max_parallel_percent", 100),
)


def limit_error(name: str, value: int) -> str | None:
    """Why `value` is not a valid `name` (one of `LIMITS`), or None."""
    most = dict(LIMITS)[name]
    if not 0 <= value <= most:
        return f"{name} must be 0 (no limit) to {most}, not {value}"
    return None


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


def members(cmd: AddQueueTask) -> list[tuple[str, str, str]]:
    """(task id, agent id, added event id) of each task an add makes: the one task, or for a
    selector one task per matched agent, `<task_id>@<agent_id>`, grouped under the task id."""
    if cmd.selector is None:
        return [(cmd.task_id, cmd.agent_id, derived_id(cmd.event_id, "added"))]
    return [
        (f"{cmd.task_id}@{agent}", agent, derived_id(cmd.event_id, f"added:{agent}"))
        for agent in cmd.agent_ids
    ]


def _target_error(cmd: AddQueueTask) -> tuple[str, str] | None:
    if cmd.selector is None:
        return None
    if cmd.agent_id:
        return "403.2", "give either agent_id or selector, not both"
    if not cmd.agent_ids:
        return "414.3", f"no live agent matches the selector {cmd.selector}"
    if len(set(cmd.agent_ids)) != len(cmd.agent_ids):
        return "403.2", "agent_ids names an agent more than once"
    return None


def _dependencies(state: QueueState, cmd: AddQueueTask) -> tuple[str, ...]:
    """depends_on with each selector task's id replaced by its tasks: a dependent waits for
    every agent's part."""
    expanded: list[str] = []
    for dep in cmd.depends_on:
        expanded.extend(state.groups.get(dep, (dep,)))
    return tuple(expanded)


def decide_add(
    state: QueueState | None,
    cmd: AddQueueTask,
    now: int,
    limits: Limits,
    task_queues: Mapping[str, str] = NO_TASKS,
    permits: Permits = anywhere,
) -> list[Event]:
    if state is None:
        return _not_found(cmd, now)
    made = members(cmd)
    if made:
        first_id, _, first_added = made[0]
        existing = state.tasks.get(first_id)
        if existing is not None and existing.added_id == first_added:
            return []
    if state.status != "open":
        return _reject(
            cmd, "412.2", f"queue {state.queue_id} is {state.status}: it takes no more tasks", now
        )
    error = _target_error(cmd) or field_error(state, _one_agent(cmd, made), limits)
    if error is not None:
        return _reject(cmd, *error, now)
    # Only the fold knows the queue's app. A selector add is refused whole rather than cut
    # down: the gateway named its agents, and the reply lists every task it made.
    denied = [agent for _, agent, _ in made if not permits(state.app, agent)]
    if denied:
        where = ", ".join(denied)
        return _reject(cmd, "413.5", f"app {state.app} may not run on agent {where}", now)
    ids = [cmd.task_id, *(task_id for task_id, _, _ in made)]
    for task_id in ids:
        if task_id in state.tasks or task_id in state.groups:
            return _reject(cmd, "412.8", f"duplicate task id: {task_id}", now)
        owner = task_queues.get(task_id, state.queue_id)
        if owner != state.queue_id:
            return _reject(cmd, "412.6", f"task {task_id} belongs to queue {owner}", now)
    for dep in cmd.depends_on:
        if dep == cmd.task_id:
            return _reject(cmd, "412.5", f"dependency cycle: {dep} depends on itself", now)
        if dep in state.tasks or dep in state.groups:
            continue
        owner = task_queues.get(dep, state.queue_id)
        if owner != state.queue_id:
            return _reject(cmd, "412.6", f"dependency {dep} is a task of queue {owner}", now)
        return _reject(
            cmd, "412.4", f"unknown dependency: {dep} (add it to {state.queue_id} first)", now
        )
    depends_on = _dependencies(state, cmd)
    return [
        QueueTaskAdded(
            event_id=added,
            occurred_at=now,
            queue_id=cmd.queue_id,
            task_id=task_id,
            agent_id=agent_id,
            func=cmd.func,
            params=cmd.params,
            timeout_s=cmd.timeout_s,
            mode=cmd.mode,
            depends_on=depends_on,
            run_if=cmd.run_if,
            max_attempts=cmd.max_attempts,
            backoff_s=cmd.backoff_s,
            proxy=cmd.proxy,
            group=None if cmd.selector is None else cmd.task_id,
        )
        for task_id, agent_id, added in made
    ]


def _one_agent(cmd: AddQueueTask, made: list[tuple[str, str, str]]) -> AddQueueTask:
    """The add as one agent's task, for the field rules every task follows."""
    if cmd.selector is None or not made:
        return cmd
    return replace(cmd, task_id=made[0][0], agent_id=made[0][1])


def decide_commit(state: QueueState | None, cmd: CommitQueue, now: int) -> list[Event]:
    """Commit closes the queue and readies every root at once: they run in parallel (the
    first `max_parallel` of them in the order they were added, if the queue has a limit)."""
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
    if state.free_slots is not None:
        roots = roots[: state.free_slots]
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
    return [
        *_cancel_all(state, cmd.event_id, now),
        QueueFinished(finished, now, state.queue_id, "stopped"),
    ]


def decide_limits(state: QueueState | None, cmd: SetQueueLimits, now: int) -> list[Event]:
    """New limits for a queue that has not ended; the ones the command leaves out stay.

    They hold from now on, for a queue that runs too: a higher or no parallel limit readies at
    once the tasks that waited for a slot (in the order added, as a freed slot does); a lower
    one readies nothing more until the tasks that hold slots end, and kills none. A failure
    limit the queue has already reached stops it now, as the failure that reached it would
    have (every task not ended is cancelled, and the queue ends failed)."""
    if state is None:
        return _not_found(cmd, now)
    limits_id = derived_id(cmd.event_id, "limits")
    if state.limits_id == limits_id:
        return []
    if state.final:
        return _reject(cmd, "412.2", f"queue {state.queue_id} already ended {state.status}", now)
    given = {name: getattr(cmd, name) for name, _ in LIMITS if getattr(cmd, name) is not None}
    if not given:
        names = ", ".join(name for name, _ in LIMITS)
        return _reject(cmd, "403.1", f"no limit given: one or more of {names}", now)
    for name, value in given.items():
        reason = limit_error(name, value)
        if reason is not None:
            return _reject(cmd, "403.2", reason, now)
    limits = (given.get(name, getattr(state, name)) for name, _ in LIMITS)
    changed = QueueLimitsSet(limits_id, now, state.queue_id, *limits)
    after = _apply(state, changed)
    if after.status == "open":  # nothing runs before the commit, which applies them
        return [changed]
    if after.failed_enough:
        return [changed, *_halt(after, cmd.event_id, now)]
    return [changed, *_fill(after, cmd.event_id, now)]


def _cancel_all(state: QueueState, source_id: str, now: int) -> list[Event]:
    """Cancel every task that has not ended; a live one (`was_running`) gets a kill."""
    return [
        QueueTaskCancelled(
            event_id=derived_id(source_id, f"cancelled:{t.task_id}"),
            occurred_at=now,
            queue_id=state.queue_id,
            task_id=t.task_id,
            attempt=t.attempt,
            was_running=t.status in LIVE,
        )
        for t in state.tasks.values()
        if not t.final
    ]


# --- Outcomes and retries ---


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
    if after.failed_enough and after.tasks[task.task_id].status in FAILED:
        return _halt(after, outcome.event_id, now)
    return _settle(after, task.task_id, outcome.event_id, now)


def _halt(state: QueueState, source_id: str, now: int) -> list[Event]:
    """The failure that reached the queue's `max_failures`: every task that has not ended is
    cancelled (one that runs is killed, as by a stop), and the queue ends failed."""
    finished = QueueFinished(derived_id(source_id, "finished"), now, state.queue_id, "failed")
    return [*_cancel_all(state, source_id, now), finished]


def due_retries(state: QueueState | None, now: int) -> list[RetryDue]:
    """The clock's facts: every retry whose due time is not after `now`."""
    if state is None or state.final:
        return []
    return [
        RetryDue(
            # One id per retry: the clock may say it on several ticks, the log keeps one.
            event_id=derived_id(
                f"{state.queue_id}:{t.task_id}:{t.attempt + 1}", "retry_due", at=t.retry_due_at
            ),
            occurred_at=now,
            queue_id=state.queue_id,
            task_id=t.task_id,
            attempt=t.attempt + 1,
        )
        for t in state.tasks.values()
        if t.status == "retrying" and t.retry_due_at <= now
    ]


def _task_in(state: QueueState | None, task_id: str, status: str, attempt: int) -> QueueTask | None:
    """The task of a queue that has not ended, if it is in `status` at `attempt`: what a fact
    about one attempt must find, else it is late, repeated or not this queue's."""
    if state is None or state.final:
        return None
    task = state.tasks.get(task_id)
    return task if task is not None and (task.status, task.attempt) == (status, attempt) else None


def retry_due(state: QueueState | None, fact: RetryDue) -> list[Event]:
    task = _task_in(state, fact.task_id, "retrying", fact.attempt - 1)
    if state is None or task is None:
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


def running(state: QueueState | None, started: TaskStarted) -> list[Event]:
    """A ready attempt's process runs (its agent's `TaskStarted`): the queue says so in its own
    log, where its readers find it (the task's own event names no queue)."""
    task = _task_in(state, started.task_id, "ready", started.attempt)
    if state is None or task is None:
        return []
    return [
        QueueTaskRunning(
            derived_id(started.event_id, "running"),
            started.occurred_at,
            state.queue_id,
            task.task_id,
            task.attempt,
        )
    ]


def _verdict(task: QueueTask, ended: QueueTask) -> tuple[Literal["ready", "skip"], str] | None:
    """Whether a pending task may run now, can never run (and why), or must wait, once `ended`,
    one of its dependencies, ended. A doomed task is skipped when its first dependency fails, so
    the one that just ended is the first that did not succeed."""
    if task.run_if == "all_succeeded" and ended.status != "succeeded":
        return "skip", f"dependency {ended.task_id} {_ENDED[ended.status]}"
    return ("ready", "") if task.waiting == 0 else None


def _settle(state: QueueState, ended: str, source_id: str, now: int) -> list[Event]:
    """Ready or skip the dependents of a task that ended, transitively; end the queue if done.

    Only the dependents are looked at: the state counts what each task still waits for. A
    queue with a limit (`max_parallel`) readies none of them here: it fills its free slots
    afterwards, in the order the tasks were added (`_fill`)."""
    limited = state.free_slots is not None
    events: list[Event] = []
    todo = deque([ended])
    while todo:
        done = state.tasks[todo.popleft()]
        for task_id in done.dependents:
            task = state.tasks[task_id]
            verdict = _verdict(task, done) if task.status == "pending" else None
            if verdict is None or (limited and verdict[0] == "ready"):
                continue  # waits for more dependencies, or for a slot
            event: Event
            if verdict[0] == "ready":
                event = _ready(state, task_id, source_id, now)
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
    if limited:
        for event in _fill(state, source_id, now):
            events.append(event)
            state = _apply(state, event)
    if state.unfinished == 0:
        events.append(
            QueueFinished(
                derived_id(source_id, "finished"),
                now,
                state.queue_id,
                "succeeded" if state.unsucceeded == 0 else "failed",
            )
        )
    return events


def _ready(state: QueueState, task_id: str, source_id: str, now: int) -> QueueTaskReady:
    """A pending task's first attempt made ready, derived from the input that allowed it."""
    return QueueTaskReady(
        derived_id(source_id, f"ready:{task_id}:1"), now, state.queue_id, task_id, 1
    )


def _fill(state: QueueState, source_id: str, now: int) -> list[QueueTaskReady]:
    """Ready the tasks that may run (pending, every dependency ended, none of them dooming it:
    a doomed task was skipped when its dependency ended) in the order they were added, as many
    as the queue's limit leaves slots for (all of them once it has none). It reads the whole
    queue, but only for a queue with a limit, when a task ended, or when its limits change."""
    free = state.free_slots
    ready: list[QueueTaskReady] = []
    for task in state.tasks.values():
        if free is not None and len(ready) >= free:
            break
        if task.status == "pending" and task.waiting == 0:
            ready.append(_ready(state, task.task_id, source_id, now))
    return ready


_ANSWERS = {
    CreateQueue: "created",
    AddQueueTask: "added",
    CommitQueue: "committed",
    StopQueue: "finished",
    SetQueueLimits: "limits",
}


def answer_ids(command: Command) -> frozenset[str]:
    """The ids of the events that answer a command: its success or its rejection.

    A caller that sends a command can wait for these (ids derive from the command's own).
    """
    rejected = derived_id(command.event_id, "rejected")
    if isinstance(command, AddQueueTask):
        return frozenset({rejected, *(added for _, _, added in members(command))})
    kind = _ANSWERS[type(command)]
    return frozenset({derived_id(command.event_id, kind), rejected})
