"""The events of Elves, as frozen dataclasses: one per `.avsc` in `avro/`, field for field.

Every event starts with the envelope (`event_id`, `occurred_at` in Unix milliseconds). Ids that
a stream derives from an input event are deterministic (`derived_id`), so a redelivered input
derives the same event ids and every consumer can drop the repeat.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

_DERIVED = uuid.UUID("6f1c1f0e-5b1d-4e8e-9a55-e1f3e5c0e1f5")


def new_id() -> str:
    return str(uuid.uuid4())


def derived_id(source_event_id: str, kind: str) -> str:
    """The id of the event `kind` derived from `source_event_id`: the same on every replay."""
    return str(uuid.uuid5(_DERIVED, f"{source_event_id}:{kind}"))


@dataclass(frozen=True)
class TaskSubmitted:
    """A client asks for a task to run on one agent (command topic)."""

    event_id: str
    occurred_at: int
    task_id: str
    agent_id: str
    app: str
    func: str
    params: str  # JSON text, as ELVES' `param`
    timeout_s: int
    proxy: str | None = None
    mode: str = "CSNP"
    requested_by: str | None = None


@dataclass(frozen=True)
class TaskAccepted:
    event_id: str
    occurred_at: int
    task_id: str
    agent_id: str
    app: str
    func: str
    deadline_at: int


@dataclass(frozen=True)
class TaskRejected:
    event_id: str
    occurred_at: int
    task_id: str
    agent_id: str
    code: str
    reason: str


@dataclass(frozen=True)
class TaskDispatched:
    """The order to run one attempt of a task: produced to the agent's own dispatch topic."""

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    app: str
    func: str
    params: str
    timeout_s: int
    deadline_at: int
    proxy: str | None = None


@dataclass(frozen=True)
class TaskStarted:
    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    pid: int


@dataclass(frozen=True)
class TaskResultReported:
    """What an agent reports after a run (ELVES' worker_flag, worker_message, worker_costtime)."""

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    app: str
    func: str
    worker_flag: int
    worker_message: str
    worker_costtime: int
    truncated: bool = False  # since v2: the output went past the agent's cap
    timed_out: bool = False  # since v2: the agent killed the worker at the task's timeout


@dataclass(frozen=True)
class TaskSucceeded:
    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    worker_flag: int
    worker_message: str
    worker_costtime: int


@dataclass(frozen=True)
class TaskFailed:
    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    worker_flag: int
    worker_message: str
    worker_costtime: int


@dataclass(frozen=True)
class TaskTimedOut:
    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    deadline_at: int


@dataclass(frozen=True)
class DeadlinePassed:
    """The streams' clock saw an attempt's deadline pass (on `results`, keyed by task id).

    A fact from the clock, not a verdict: the task fold turns it into `TaskTimedOut` only if no
    result came first, so the clock and the agent never race on the task's state.
    """

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    deadline_at: int


@dataclass(frozen=True)
class Heartbeat:
    event_id: str
    occurred_at: int
    agent_id: str
    hostname: str
    interval_s: float
    started_at: int
    apps: Mapping[str, str] = field(default_factory=dict)  # app name -> version
    load1: float = 0.0


@dataclass(frozen=True)
class AgentUp:
    event_id: str
    occurred_at: int
    agent_id: str
    last_seen_at: int


@dataclass(frozen=True)
class AgentDown:
    event_id: str
    occurred_at: int
    agent_id: str
    last_seen_at: int
    missed: int


Event = (
    TaskSubmitted
    | TaskAccepted
    | TaskRejected
    | TaskDispatched
    | TaskStarted
    | TaskResultReported
    | TaskSucceeded
    | TaskFailed
    | TaskTimedOut
    | DeadlinePassed
    | Heartbeat
    | AgentUp
    | AgentDown
)

# The explicit registry: Avro record name -> class. A new event is added here and in avro/.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        TaskSubmitted,
        TaskAccepted,
        TaskRejected,
        TaskDispatched,
        TaskStarted,
        TaskResultReported,
        TaskSucceeded,
        TaskFailed,
        TaskTimedOut,
        DeadlinePassed,
        Heartbeat,
        AgentUp,
        AgentDown,
    )
}
