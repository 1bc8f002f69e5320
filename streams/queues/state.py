"""The queue state and its fold: what a queue is after a stream of events.

`apply` folds one event (a command's derived events, a task's outcome, ...) into a
`QueueState`; it ignores what does not fit the state, so a duplicate or late event changes
nothing. `fold_until` gives the state as of a time (time travel). The rules that derive events
live in `model.py`.

A state also keeps what follows from its tasks (who depends on a task, how many dependencies a
task still waits for, how many tasks have not ended, the tasks of each selector task), so that
the rules' work per event is the tasks it affects, not every task of the queue. That is never
stored: `QueueState.restore` derives it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Literal, assert_never, get_args

from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
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
    SetQueueLimits,
    StopQueue,
    TaskFailed,
    TaskRejected,
    TaskStarted,
    TaskSucceeded,
    TaskTimedOut,
)

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
# What holds one of a queue's `max_parallel` slots: a retrying task keeps its slot for its next
# attempt, so a limit of n never has more than n tasks between their first start and their end.
SLOT: frozenset[str] = frozenset({"ready", "running", "retrying"})
# What counts towards a queue's `max_failures`: a task's own failure, not a skip or a cancel
# that follows from another's.
FAILED: frozenset[str] = frozenset({"failed", "timed_out"})
MODES = ("NP", "P")
RUN_IF = ("all_succeeded", "all_done")
NO_TASKS: Mapping[str, str] = MappingProxyType({})


class _Draft(dict[str, "QueueTask"]):
    """A queue's task map while one fold builds it (`fold`, `apply`, `restore`, and the rules'
    look-ahead in `model.py`): changed in place until the fold hands its state out, which closes
    it. A closed map is never changed again: the next fold copies it first. So k events applied
    to a queue of n tasks copy its map once, not k times: a fan-out of n tasks used to make 2n
    copies of n entries, some seconds at 8,000 tasks, all of them inside one event."""

    __slots__ = ("open",)

    def __init__(self, tasks: Mapping[str, QueueTask]) -> None:
        super().__init__(tasks)
        self.open = True


def _writable(tasks: Mapping[str, QueueTask]) -> _Draft:
    return tasks if isinstance(tasks, _Draft) and tasks.open else _Draft(tasks)


def _handed_out(state: QueueState | None) -> QueueState | None:
    """Close the task map of a state a fold returns: whoever holds it may keep it."""
    if state is not None and isinstance(state.tasks, _Draft):
        state.tasks.open = False
    return state


Command = CreateQueue | AddQueueTask | CommitQueue | StopQueue | SetQueueLimits
Outcome = TaskSucceeded | TaskFailed | TaskTimedOut | TaskRejected
# Their type names, as the audit stores them.
OUTCOME_NAMES: frozenset[str] = frozenset(t.__name__ for t in get_args(Outcome))

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
    seq: int = 0  # its place in the queue: tasks stored one by one keep their order by it
    status: TaskStatus = "pending"
    attempt: int = 0  # the latest attempt made ready; 0 before the first
    retry_due_at: int = 0  # while retrying: when attempt + 1 may run
    worker_flag: int | None = None
    worker_message: str = ""
    worker_costtime: int = 0
    cause: str = ""  # why it was skipped, cancelled, or why its last attempt did not succeed
    group: str | None = None  # the selector task (one task per matching agent) it is part of
    # Derived (see the module's doc), kept up to date by `_with_task`:
    waiting: int = 0  # how many of its dependencies have not ended yet
    dependents: tuple[str, ...] = ()  # the tasks that depend on it, in the order they were added

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
    # In the order they were added. Never changed once a fold has handed the state out (`_Draft`).
    tasks: Mapping[str, QueueTask] = field(default_factory=dict)
    committed_id: str = ""
    finished_id: str = ""
    max_parallel: int = 0  # at most this many tasks in a `SLOT` status at once; 0: no limit
    max_failures: int = 0  # once this many tasks are `FAILED`, the rest are cancelled; 0: never
    # Once more than this percent of the tasks are `FAILED`, the same; 0: never.
    max_failure_percent: int = 0
    # At most this percent of the tasks in a `SLOT` status at once (at least 1); 0: no limit.
    max_parallel_percent: int = 0
    limits_id: str = ""  # the last `QueueLimitsSet`'s id: its command redelivered is known
    # Derived, like the tasks' `waiting` and `dependents`:
    unfinished: int = 0  # tasks that have not ended
    unsucceeded: int = 0  # tasks that ended otherwise than succeeded
    busy: int = 0  # tasks in a `SLOT` status
    failures: int = 0  # tasks that ended in a `FAILED` status
    # A selector task's id -> the ids of its tasks (one per agent), in the order added.
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status in QUEUE_FINAL

    @property
    def failed_enough(self) -> bool:
        """Whether the queue has had the failures its `max_failures` allows, or more, or more
        than its `max_failure_percent` of its tasks (as Ansible's `max_fail_percentage`: 10% of
        20 tasks stops at the third failure)."""
        if 0 < self.max_failures <= self.failures:
            return True
        percent = self.max_failure_percent
        return percent > 0 and self.failures * 100 > percent * len(self.tasks)

    @property
    def parallel_limit(self) -> int | None:
        """How many tasks may hold a slot at once: the lower of `max_parallel` and
        `max_parallel_percent` of the tasks (rounded down, at least 1, as Ansible's `serial`:
        25% of 10 is 2); None: no limit. Its tasks are fixed once the queue is committed."""
        limits = [self.max_parallel] if self.max_parallel > 0 else []
        if self.max_parallel_percent > 0:
            limits.append(max(1, self.max_parallel_percent * len(self.tasks) // 100))
        return min(limits) if limits else None

    @property
    def free_slots(self) -> int | None:
        """How many more tasks may be made ready now; None: no limit."""
        limit = self.parallel_limit
        return None if limit is None else max(0, limit - self.busy)

    @classmethod
    def restore(cls, header: QueueState, tasks: Iterable[QueueTask]) -> QueueState:
        """A state from its header (the state without its tasks) and its tasks, as they are
        stored: apart, and without what is derived, which is made again here."""
        state = header
        for task in sorted(tasks, key=lambda t: t.seq):
            state = _with_task(state, task)
        _handed_out(state)
        return state


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


# --- The fold ---


def _with_task(state: QueueState, task: QueueTask) -> QueueState:
    """The state with `task` added or changed, and what is derived from the tasks moved along:
    only the tasks it touches are rebuilt."""
    before = state.tasks.get(task.task_id)
    tasks = _writable(state.tasks)
    tasks[task.task_id] = task
    busy = state.busy + (task.status in SLOT) - (before is not None and before.status in SLOT)
    if before is None:
        for dep in task.depends_on:
            tasks[dep] = replace(tasks[dep], dependents=(*tasks[dep].dependents, task.task_id))
        # A task restored after some of its dependencies ended waits for fewer of them.
        task = replace(task, waiting=sum(1 for d in task.depends_on if not tasks[d].final))
        tasks[task.task_id] = task
        if task.group is not None:
            members = (*state.groups.get(task.group, ()), task.task_id)
            state = replace(state, groups={**state.groups, task.group: members})
        return _counted(state, tasks, task, added=1, busy=busy)
    if task.final and not before.final:
        for waiting in task.dependents:
            tasks[waiting] = replace(tasks[waiting], waiting=tasks[waiting].waiting - 1)
        return _counted(state, tasks, task, added=0, busy=busy)
    return replace(state, tasks=tasks, busy=busy)


def _counted(
    state: QueueState, tasks: _Draft, task: QueueTask, added: int, busy: int
) -> QueueState:
    """The state with `tasks`, counted once `task` was added (`added=1`) or ended (`added=0`)."""
    ended = int(task.final)
    return replace(
        state,
        tasks=tasks,
        unfinished=state.unfinished + added - ended,
        unsucceeded=state.unsucceeded + ended * (task.status != "succeeded"),
        failures=state.failures + (task.status in FAILED),
        busy=busy,
    )


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
    return _handed_out(_step(state, event))


def _step(state: QueueState | None, event: Event) -> QueueState | None:
    """`apply` without closing the task map: a fold's steps between its own events."""
    if state is not None:
        return _apply(state, event)
    if isinstance(event, QueueCreated):
        return QueueState(
            event.queue_id,
            event.app,
            event.name,
            created_id=event.event_id,
            max_parallel=event.max_parallel,
            max_failures=event.max_failures,
            max_failure_percent=event.max_failure_percent,
            max_parallel_percent=event.max_parallel_percent,
        )
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
                    seq=len(state.tasks),
                    group=event.group,
                ),
            )
        case QueueCommitted() if state.status == "open":
            return replace(state, status="committed", committed_id=event.event_id)
        case QueueTaskReady() if task is not None and task.status in ("pending", "retrying"):
            if event.attempt == task.attempt + 1:
                return _with_task(
                    state, replace(task, status="ready", attempt=event.attempt, retry_due_at=0)
                )
        case TaskStarted() | QueueTaskRunning() if task is not None and task.status == "ready":
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
            cause = "queue stopped"
            if state.failed_enough:  # the queue stopped itself: `max_failures` or its percent
                cause = f"queue stopped: {state.failures} failed, {_limit_reached(state)}"
            return _with_task(state, replace(task, status="cancelled", cause=cause))
        case QueueLimitsSet() if not state.final:
            return replace(
                state,
                max_parallel=event.max_parallel,
                max_failures=event.max_failures,
                max_failure_percent=event.max_failure_percent,
                max_parallel_percent=event.max_parallel_percent,
                limits_id=event.event_id,
            )
        case QueueFinished() if not state.final and event.status in _QUEUE_ENDS:
            return replace(state, status=_QUEUE_ENDS[event.status], finished_id=event.event_id)
    return state


def fold(events: Iterable[Event], state: QueueState | None = None) -> QueueState | None:
    for event in events:
        state = _step(state, event)
    return _handed_out(state)


def fold_until(events: Iterable[Event], as_of_ms: int) -> QueueState | None:
    """The queue as it stood at `as_of_ms`: only the events that had occurred by then.

    Events are taken in log order and filtered by their own time (a task's outcome carries the
    agent's), so an event the log holds out of time order is left out, not reordered.
    """
    return fold(e for e in events if e.occurred_at <= as_of_ms)


def _limit_reached(state: QueueState) -> str:
    """Which failure limit stopped the queue, for its cancelled tasks' cause."""
    if 0 < state.max_failures <= state.failures:
        return "its max_failures"
    return f"over its max_failure_percent ({state.max_failure_percent}% of {len(state.tasks)})"
