"""The task fold: pure rules of an instant task's lifecycle.

submitted -> accepted | rejected -> dispatched -> running -> succeeded | failed | timed_out

`decide_*` turn what arrives (a submission, a result, a passed deadline) into the events that
follow; `apply` folds an event into the state. No Kafka, no clock, no I/O: `now` and every id
arrive as arguments, and derived event ids come from the input's id, so a replayed input derives
the very same events.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from elves.permissions import Permits, anywhere
from elves.schemas.events import (
    AgentCronRan,
    DeadlinePassed,
    Event,
    ProcessorResult,
    TaskAccepted,
    TaskDispatched,
    TaskFailed,
    TaskRejected,
    TaskResultReported,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
    derived_id,
)

Status = Literal[
    "accepted", "rejected", "dispatched", "running", "succeeded", "failed", "timed_out"
]
FINAL: frozenset[str] = frozenset({"rejected", "succeeded", "failed", "timed_out"})
# What the task fold needs to know of an agent: never heard of, not accepted by an operator
# (pending or rejected: 414.4), or accepted and then up or down.
AgentStatus = Literal["unknown", "pending", "rejected", "up", "down"]
NOT_ACCEPTED: frozenset[str] = frozenset({"pending", "rejected"})


@dataclass(frozen=True)
class Limits:
    grace_ms: int  # deadline = dispatch time + timeout + grace: time for the kill and the report
    max_params_bytes: int


@dataclass(frozen=True)
class TaskState:
    task_id: str
    agent_id: str
    app: str
    func: str
    status: Status
    attempt: int = 0
    deadline_at: int = 0
    worker_flag: int | None = None
    worker_message: str = ""
    worker_costtime: int = 0
    reason: str = ""
    queue_id: str | None = None  # a queue task's queue: its outcomes are copied to it
    mode: str = "CSNP"
    params: str = ""  # kept for the processor of a P-mode task, which gets the instruction
    cron_id: str | None = None  # a cron fire's cron: its outcomes are copied to it
    outcome_id: str = ""  # the event that ended the attempt: a replay of its input derives it again

    @property
    def final(self) -> bool:
        return self.status in FINAL


def _reject(cmd: TaskSubmitted, code: str, reason: str) -> list[Event]:
    return [
        TaskRejected(
            event_id=derived_id(cmd.event_id, "rejected"),
            occurred_at=cmd.occurred_at,
            task_id=cmd.task_id,
            agent_id=cmd.agent_id,
            code=code,
            reason=reason,
            queue_id=cmd.queue_id,
            cron_id=cmd.cron_id,
        )
    ]


def validation_error(cmd: TaskSubmitted, limits: Limits) -> tuple[str, str] | None:
    """(code, reason) of the first rule a submission breaks, or None. Same codes as the gateway."""
    for name in ("task_id", "agent_id", "app", "func"):
        if not getattr(cmd, name):
            return "403.1", f"missing field: {name}"
    if cmd.timeout_s <= 0:
        return "403.2", f"timeout must be a positive number of seconds, not {cmd.timeout_s}"
    return params_error(cmd.params, limits.max_params_bytes)


def params_error(params: str, max_bytes: int) -> tuple[str, str] | None:
    """(code, reason) if a task's params are not a JSON object of at most `max_bytes`."""
    if len(params.encode()) > max_bytes:
        return "403.3", f"params larger than {max_bytes} bytes"
    try:
        value = json.loads(params)
    except ValueError:
        return "403.4", "params is not valid JSON"
    if not isinstance(value, dict):
        return "403.4", "params must be a JSON object"
    return None


def decide_submit(
    state: TaskState | None,
    cmd: TaskSubmitted,
    agent: AgentStatus,
    now: int,
    limits: Limits,
    permits: Permits = anywhere,
) -> list[Event]:
    """`permits(app, agent_id)`: may the app run on that agent (its permission rule)."""
    if state is not None and not (state.final and cmd.attempt > state.attempt):
        return []  # the same task id again: already decided, nothing new happens
    error = validation_error(cmd, limits)
    if error is not None:
        return _reject(cmd, *error)
    # Before liveness: the rule is about the agent's id and tags, whether it is up or not.
    if not permits(cmd.app, cmd.agent_id):
        return _reject(cmd, "413.5", f"app {cmd.app} may not run on agent {cmd.agent_id}")
    if agent == "unknown":
        return _reject(cmd, "414.2", f"unknown agent: {cmd.agent_id}")
    if agent in NOT_ACCEPTED:
        return _reject(
            cmd,
            "414.4",
            f"agent not accepted: {cmd.agent_id} is {agent} (elves agent accept {cmd.agent_id})",
        )
    if agent == "down":
        return _reject(cmd, "414.1", f"agent offline: {cmd.agent_id}")
    deadline = now + cmd.timeout_s * 1000 + limits.grace_ms
    dispatched = TaskDispatched(
        event_id=derived_id(cmd.event_id, f"dispatched:{cmd.attempt}"),
        occurred_at=now,
        task_id=cmd.task_id,
        attempt=cmd.attempt,
        agent_id=cmd.agent_id,
        app=cmd.app,
        func=cmd.func,
        params=cmd.params,
        timeout_s=cmd.timeout_s,
        deadline_at=deadline,
        proxy=cmd.proxy,
    )
    if state is not None:
        return [dispatched]  # a retry: the task was accepted with its first attempt
    return [
        TaskAccepted(
            event_id=derived_id(cmd.event_id, "accepted"),
            occurred_at=now,
            task_id=cmd.task_id,
            agent_id=cmd.agent_id,
            app=cmd.app,
            func=cmd.func,
            deadline_at=deadline,
        ),
        dispatched,
    ]


def _again(state: TaskState, out: list[Event]) -> list[Event]:
    """For an input that finds its task ended: the outcome it derives, if that outcome is the
    one that ended it. That input is being replayed (the worker stopped after the task's row
    was written, before the outcome's copies to its queue or cron were), and deriving the same
    event again sends those copies; every reader takes an outcome once, by its id. Any other
    input (a late, duplicate or stray one) derives nothing."""
    return out if [e.event_id for e in out] == [state.outcome_id] else []


def decide_result(state: TaskState | None, result: TaskResultReported) -> list[Event]:
    """A result ends an open attempt; a late, duplicate or stray result changes nothing (but a
    replayed one derives its outcome again: `_again`)."""
    if state is None or result.attempt != state.attempt:
        return []
    out = _result_outcome(state, result)
    return _again(state, out) if state.final else out


def _result_outcome(state: TaskState, result: TaskResultReported) -> list[Event]:
    if result.timed_out:
        return [
            TaskTimedOut(
                event_id=derived_id(result.event_id, "outcome"),
                occurred_at=result.occurred_at,
                task_id=result.task_id,
                attempt=result.attempt,
                agent_id=result.agent_id,
                deadline_at=state.deadline_at,
                queue_id=state.queue_id,
                cron_id=state.cron_id,
            )
        ]
    common = {
        "event_id": derived_id(result.event_id, "outcome"),
        "occurred_at": result.occurred_at,
        "task_id": result.task_id,
        "attempt": result.attempt,
        "agent_id": result.agent_id,
        "worker_flag": result.worker_flag,
        "worker_message": result.worker_message,
        "worker_costtime": result.worker_costtime,
        "queue_id": state.queue_id,
        "cron_id": state.cron_id,
    }
    if result.worker_flag == 1:
        return [TaskSucceeded(**common)]  # type: ignore[arg-type]
    return [TaskFailed(**common)]  # type: ignore[arg-type]


def decide_deadline(state: TaskState | None, passed: DeadlinePassed) -> list[Event]:
    if state is None or passed.attempt != state.attempt:
        return []
    out = _timed_out(state, passed)
    return _again(state, out) if state.final else out


def _timed_out(state: TaskState, passed: DeadlinePassed) -> list[Event]:
    return [
        TaskTimedOut(  # no result at all: the agent is gone, or its report is stuck
            event_id=derived_id(passed.event_id, "timed_out"),
            occurred_at=passed.occurred_at,
            task_id=state.task_id,
            attempt=state.attempt,
            agent_id=state.agent_id,
            deadline_at=state.deadline_at,
            queue_id=state.queue_id,
            cron_id=state.cron_id,
        )
    ]


def decide_agent_run(state: TaskState | None, ran: AgentCronRan) -> list[Event]:
    """An agent-initiated run arrives whole: its outcome, once (a re-sent report adds nothing;
    a replayed one derives it again: `_again`)."""
    out = _ran_outcome(ran)
    return out if state is None else _again(state, out)


def _ran_outcome(ran: AgentCronRan) -> list[Event]:
    common = {
        "event_id": derived_id(ran.event_id, "outcome"),
        "occurred_at": ran.occurred_at,
        "task_id": ran.task_id,
        "attempt": 1,
        "agent_id": ran.agent_id,
        "cron_id": ran.cron_id,
    }
    if ran.timed_out:
        return [TaskTimedOut(deadline_at=ran.occurred_at, **common)]  # type: ignore[arg-type]
    worker = {
        "worker_flag": ran.worker_flag,
        "worker_message": ran.worker_message,
        "worker_costtime": ran.worker_costtime,
    }
    if ran.worker_flag == 1:
        return [TaskSucceeded(**common, **worker)]  # type: ignore[arg-type]
    return [TaskFailed(**common, **worker)]  # type: ignore[arg-type]


PROCESSOR_MODES = frozenset({"CAP", "AAP"})


def processor_result(state: TaskState, outcome: Event) -> ProcessorResult | None:
    """What a P-mode task's app processor receives when the task ends; None for other modes."""
    if state.mode not in PROCESSOR_MODES:
        return None
    match outcome:
        case TaskSucceeded() | TaskFailed():
            flag, message, cost = (
                outcome.worker_flag,
                outcome.worker_message,
                outcome.worker_costtime,
            )
        case TaskTimedOut():
            flag, message, cost = -1, "no result by the deadline", 0
        case _:
            return None
    return ProcessorResult(
        event_id=derived_id(outcome.event_id, "processor"),
        occurred_at=outcome.occurred_at,
        task_id=state.task_id,
        attempt=outcome.attempt,
        agent_id=state.agent_id,
        app=state.app,
        func=state.func,
        params=state.params,
        status={TaskSucceeded: "succeeded", TaskFailed: "failed"}.get(type(outcome), "timed_out"),
        worker_flag=flag,
        worker_message=message,
        worker_costtime=cost,
        queue_id=state.queue_id,
        cron_id=state.cron_id,
        mode=state.mode,
    )


def overdue(states: Iterable[TaskState], now: int) -> list[DeadlinePassed]:
    """The clock's facts: every open attempt whose deadline is behind `now`."""
    return [
        DeadlinePassed(
            # One id per attempt and deadline: the clock may say it twice, the log keeps one.
            event_id=derived_id(
                f"{s.task_id}:{s.attempt}:{s.deadline_at}", "deadline", at=s.deadline_at
            ),
            occurred_at=now,
            task_id=s.task_id,
            attempt=s.attempt,
            deadline_at=s.deadline_at,
        )
        for s in states
        if not s.final and s.deadline_at and s.deadline_at < now
    ]


def apply(state: TaskState | None, event: Event) -> TaskState | None:
    match event:
        case TaskSubmitted() if state is None:
            return TaskState(
                event.task_id,
                event.agent_id,
                event.app,
                event.func,
                "accepted",
                queue_id=event.queue_id,
                mode=event.mode,
                params=event.params,
                cron_id=event.cron_id,
            )
        case TaskAccepted():
            base = state or TaskState(
                event.task_id, event.agent_id, event.app, event.func, "accepted"
            )
            return replace(base, status="accepted", deadline_at=event.deadline_at)
        case TaskRejected():
            base = state or TaskState(
                event.task_id,
                event.agent_id,
                "",
                "",
                "rejected",
                queue_id=event.queue_id,
                cron_id=event.cron_id,
            )
            return replace(base, status="rejected", reason=f"[{event.code}] {event.reason}")
        case TaskDispatched() if state is not None and (
            not state.final or event.attempt > state.attempt
        ):
            # A retry reopens a final task with its next attempt.
            return replace(
                state,
                status="dispatched",
                attempt=event.attempt,
                deadline_at=event.deadline_at,
                worker_flag=None,
                worker_message="",
                worker_costtime=0,
                reason="",
                outcome_id="",
            )
        case TaskStarted() if state is not None and state.status == "dispatched":
            if event.attempt == state.attempt:
                return replace(state, status="running")
        case TaskSucceeded() | TaskFailed() if state is not None and not state.final:
            return replace(
                state,
                status="succeeded" if isinstance(event, TaskSucceeded) else "failed",
                worker_flag=event.worker_flag,
                worker_message=event.worker_message,
                worker_costtime=event.worker_costtime,
                outcome_id=event.event_id,
            )
        case AgentCronRan() if state is None:
            return TaskState(
                event.task_id,
                event.agent_id,
                event.app,
                event.func,
                "running",
                attempt=1,
                mode=event.mode,
                params=event.params,
                cron_id=event.cron_id,
            )
        case TaskTimedOut() if state is not None and not state.final:
            return replace(
                state,
                status="timed_out",
                worker_flag=-1,
                reason=f"no result by the deadline of attempt {event.attempt}",
                outcome_id=event.event_id,
            )
    return state


def fold(events: Iterable[Event]) -> TaskState | None:
    state: TaskState | None = None
    for event in events:
        state = apply(state, event)
    return state
