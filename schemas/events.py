"""The events of Elves, as frozen dataclasses: one per `.avsc` in `avro/`, field for field.

Every event starts with the envelope (`event_id`, `occurred_at` in Unix milliseconds). Ids that
a stream derives from an input event are deterministic (`derived_id`), so a redelivered input
derives the same event ids and every consumer can drop the repeat.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

_DERIVED = uuid.UUID("6f1c1f0e-5b1d-4e8e-9a55-e1f3e5c0e1f5")
_RANDOM_BITS = 74  # what a UUIDv7 or v8 leaves after its 48-bit time, version and variant


def _time_ordered(millis: int, bits: int, version: int) -> str:
    """An RFC 9562 layout: 48 bits of Unix milliseconds, the version, 12 of `bits`, the variant
    (0b10), then the other 62 of `bits`; as `str(uuid.UUID(int=...))` writes it, without the
    object (every event costs a few ids, in every part of the stack)."""
    rand_a, rand_b = (bits >> 62) & 0xFFF, bits & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | version << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# A v7 or v8 id as `_time_ordered` writes it (the audit's SQL matches the same text).
TIME_ORDERED_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[78][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
_TIME_ORDERED = re.compile(TIME_ORDERED_ID)


def new_id(millis: int | None = None) -> str:
    """A UUIDv7: its first 48 bits are the time it was made (or `millis`), the rest random.

    Ids that sort by time keep the audit's lookups flat: its table is ordered by `event_id`, and
    the watcher asks which ids of each batch are stored before it inserts. A batch of fresh ids
    falls in the newest rows; random ones (v4, before) fell across the whole table, and an insert
    cost 7 to 15 times as much at 4 M rows as in an empty table (`bench/audit.py`)."""
    bits = int.from_bytes(os.urandom(10)) >> (80 - _RANDOM_BITS)
    if millis is None:
        millis = time.time_ns() // 1_000_000
    return _time_ordered(millis, bits, version=7)


def random_id() -> str:
    """The id of a thing people name and read (a task, a queue, a cron): random (v4), so that
    any prefix of it tells it apart. The first 8 characters of a v7 are its time in units of 65
    seconds: ids made in the same minute share them."""
    return str(uuid.uuid4())


def derived_id(source_event_id: str, kind: str, at: int | None = None) -> str:
    """The id of the event `kind` derived from `source_event_id`: the same on every replay.

    A UUIDv8 whose first 48 bits are a time, so that it sorts beside its source, and the rest a
    hash: the source's time when the source is time-ordered (a v7, or an id derived from one),
    else `at` (Unix milliseconds fixed by the input itself: a fire's scheduled time, a
    deadline). Without either (ids made before v7, or by other systems, with no `at`), the uuid5
    it always was: a replay of an old input derives the ids it derived then."""
    name = f"{source_event_id}:{kind}"
    source_ms = id_time_ms(source_event_id)
    if source_ms is not None:
        at = source_ms
    if at is None:
        return str(uuid.uuid5(_DERIVED, name))
    digest = hashlib.sha256(_DERIVED.bytes + name.encode()).digest()
    bits = int.from_bytes(digest[:10]) >> (80 - _RANDOM_BITS)
    return _time_ordered(at, bits, version=8)


def canonical_time_ms(event_id: str) -> int | None:
    """The Unix milliseconds of a v7 or v8 id in the text `_time_ordered` writes, without a UUID
    parse; None for any other text, even another form of such an id (see `id_time_ms`)."""
    if _TIME_ORDERED.fullmatch(event_id) is None:
        return None
    return int(event_id[:8] + event_id[9:13], 16)


def id_time_ms(event_id: str) -> int | None:
    """The Unix milliseconds a time-ordered id (a v7, or a v8 that `derived_id` made) carries;
    None for any other id (a v4, another system's, not a UUID)."""
    canonical = canonical_time_ms(event_id)
    if canonical is not None:
        return canonical
    # Any other form uuid.UUID reads (upper case, braces, a urn): as it always was.
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        return None
    if parsed.variant != uuid.RFC_4122 or parsed.version not in (7, 8):
        return None
    return parsed.int >> 80


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
    queue_id: str | None = None  # since v2
    attempt: int = 1  # since v2: a retry submits the same task again
    cron_id: str | None = None  # since v3: the cron whose fire this is


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
    queue_id: str | None = None  # since v2
    cron_id: str | None = None  # since v3


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
class TaskCancelRequested:
    """The center asks an agent to kill one attempt (on the agent's own dispatch topic)."""

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    reason: str


@dataclass(frozen=True)
class TaskStarted:
    """An attempt's process has run the agent's START_REPORT_S and still runs (one that ends
    sooner reports its start inside its TaskResultReported, and has no TaskStarted)."""

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    pid: int


@dataclass(frozen=True)
class TaskOutput:
    """A part of what an attempt's process printed (stdout or stderr), sent while it runs, in
    order (`seq` from 0 for each attempt). Its result block is not part of it: that is the
    result. On its own topic: output is for reading, no fold depends on it."""

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    seq: int
    stream: str  # "stdout" or "stderr"
    data: str
    dropped_bytes: int = 0  # printed past the agent's cap and not sent, up to this part


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
    # Since v3: when the attempt's process started, and its pid (None: no process started). A
    # task that ends within the agent's START_REPORT_S has no TaskStarted: this is its start.
    started_at: int | None = None
    pid: int | None = None
    # Since v4: how many output parts (`TaskOutput`) the agent sent for this attempt before this
    # result, so a reader of its output knows when it has them all (None: an older agent).
    output_parts: int | None = None


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
    queue_id: str | None = None  # since v2
    cron_id: str | None = None  # since v3


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
    queue_id: str | None = None  # since v2
    cron_id: str | None = None  # since v3


@dataclass(frozen=True)
class TaskTimedOut:
    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    deadline_at: int
    queue_id: str | None = None  # since v2
    cron_id: str | None = None  # since v3


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
class ProcessorResult:
    """A P-mode task's outcome, on `processor.<app>` for the app's processor (ELVES' CAP/AAP).

    Its id derives from the outcome's, so a replay reaches the processor as the same event.
    """

    event_id: str
    occurred_at: int
    task_id: str
    attempt: int
    agent_id: str
    app: str
    func: str
    params: str
    status: str  # succeeded | failed | timed_out
    worker_flag: int
    worker_message: str
    worker_costtime: int
    queue_id: str | None = None
    mode: str = "CAP"
    cron_id: str | None = None  # since v2


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
    tags: Mapping[str, str] = field(default_factory=dict)  # since v2: what selectors match
    # since v3: app -> why the desired version did not install (the previous one still runs)
    install_errors: Mapping[str, str] = field(default_factory=dict)


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


# --- Queues: commands on `commands` (keyed by queue id), derived events on `queues`. ---


def _as_tuple(event: object, name: str) -> None:
    """Decoded Avro arrays (and JSON rows) arrive as lists; a frozen event keeps a tuple."""
    object.__setattr__(event, name, tuple(getattr(event, name)))


@dataclass(frozen=True)
class CreateQueue:
    """A client asks for a new, open queue of one app's tasks."""

    event_id: str
    occurred_at: int
    queue_id: str
    app: str
    name: str = ""
    # Since v2: at most this many tasks hold a slot (ready, running, retrying) at once; 0: any.
    max_parallel: int = 0
    # Since v2: once this many tasks failed or timed out, the rest are cancelled; 0: never.
    max_failures: int = 0
    # Since v3: once more than this percent of its tasks failed or timed out, the same; 0: never.
    max_failure_percent: int = 0
    # Since v3: at most this percent of its tasks at once (rounded down, at least 1); 0: any.
    max_parallel_percent: int = 0


@dataclass(frozen=True)
class AddQueueTask:
    """A client adds a task to an open queue; it runs once its dependencies allow it."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    agent_id: str
    func: str
    params: str  # JSON text, as ELVES' `param`
    timeout_s: int
    mode: str = "NP"  # NP or P (P: the result also goes to the app's processor)
    depends_on: tuple[str, ...] = ()  # ids of tasks added to the same queue before this one
    run_if: str = "all_succeeded"  # or all_done: run once every dependency ended, however
    max_attempts: int = 1
    backoff_s: int = 0  # wait before attempt n+1: backoff_s * 2**(n-1)
    proxy: str | None = None
    # Since v2: a task by tag selector, one task per agent the gateway matched (agent_id "").
    selector: str | None = None
    agent_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _as_tuple(self, "depends_on")
        _as_tuple(self, "agent_ids")


@dataclass(frozen=True)
class CommitQueue:
    event_id: str
    occurred_at: int
    queue_id: str


@dataclass(frozen=True)
class StopQueue:
    event_id: str
    occurred_at: int
    queue_id: str


@dataclass(frozen=True)
class SetQueueLimits:
    """Each limit given (not None) replaces the queue's; the queue must not have ended."""

    event_id: str
    occurred_at: int
    queue_id: str
    max_parallel: int | None = None
    max_failures: int | None = None
    max_failure_percent: int | None = None
    max_parallel_percent: int | None = None


@dataclass(frozen=True)
class QueueCreated:
    event_id: str
    occurred_at: int
    queue_id: str
    app: str
    name: str = ""
    max_parallel: int = 0  # since v2, as `CreateQueue`'s
    max_failures: int = 0  # since v2, as `CreateQueue`'s
    max_failure_percent: int = 0  # since v3, as `CreateQueue`'s
    max_parallel_percent: int = 0  # since v3, as `CreateQueue`'s


@dataclass(frozen=True)
class QueueTaskAdded:
    """An accepted `AddQueueTask`, field for field: the queue's log alone rebuilds the graph."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    agent_id: str
    func: str
    params: str
    timeout_s: int
    mode: str = "NP"
    depends_on: tuple[str, ...] = ()
    run_if: str = "all_succeeded"
    max_attempts: int = 1
    backoff_s: int = 0
    proxy: str | None = None
    group: str | None = None  # since v2: the selector task this is one agent's part of

    def __post_init__(self) -> None:
        _as_tuple(self, "depends_on")


@dataclass(frozen=True)
class QueueLimitsSet:
    """A queue's limits from now on, all four (a `SetQueueLimits` accepted)."""

    event_id: str
    occurred_at: int
    queue_id: str
    max_parallel: int
    max_failures: int
    max_failure_percent: int
    max_parallel_percent: int


@dataclass(frozen=True)
class QueueCommitted:
    event_id: str
    occurred_at: int
    queue_id: str


@dataclass(frozen=True)
class QueueCommandRejected:
    """A queue command broke a rule; nothing else happened. `code` is stable (412.x, 403.x)."""

    event_id: str
    occurred_at: int
    queue_id: str
    command: str  # the command's record name, e.g. AddQueueTask
    command_id: str  # the command's event_id, so a waiting caller or an audit query finds it
    code: str
    reason: str


@dataclass(frozen=True)
class QueueTaskReady:
    """One attempt of a queue task may run now: the wiring turns it into a dispatch."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    attempt: int


@dataclass(frozen=True)
class QueueTaskRunning:
    """A ready attempt's process has run a while on its agent (its `TaskStarted`, which names no
    queue): the queue's own word for it, in the queue's log."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    attempt: int


@dataclass(frozen=True)
class QueueTaskRetryScheduled:
    """An attempt failed with attempts left: `attempt` (the next one) is due at `due_at`."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    attempt: int
    due_at: int


@dataclass(frozen=True)
class RetryDue:
    """The streams' clock saw a scheduled retry come due (a fact, like `DeadlinePassed`)."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    attempt: int


@dataclass(frozen=True)
class QueueTaskSkipped:
    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    cause: str  # e.g. "dependency a failed"


@dataclass(frozen=True)
class QueueTaskCancelled:
    """A stop ended the task. `was_running`: it may be live on its agent, so send a kill."""

    event_id: str
    occurred_at: int
    queue_id: str
    task_id: str
    attempt: int  # the attempt to kill (0: never dispatched)
    was_running: bool


@dataclass(frozen=True)
class QueueFinished:
    event_id: str
    occurred_at: int
    queue_id: str
    status: str  # succeeded | failed | stopped


# --- Cron: commands on `commands` (keyed by cron id), derived events on `crons`. ---


@dataclass(frozen=True)
class AddCron:
    """A client schedules a task by a cron rule.

    Modes CANP/CAP fire from the center (the streams); AANP/AAP are pushed to the agent, which
    fires them itself, Kafka or not, and reports each run when it can.
    """

    event_id: str
    occurred_at: int
    cron_id: str
    agent_id: str
    app: str
    func: str
    params: str  # JSON text, as ELVES' `param`
    timeout_s: int
    rule: str  # 5 fields, 6 with seconds first, or Quartz (`0/5 * * * * ?`)
    timezone: str = "UTC"
    mode: str = "CANP"
    misfire: str = "run_once"  # run_once | run_all | skip: fires missed while down
    overlap: str = "skip"  # skip | queue | parallel: a fire while the previous run goes on
    name: str = ""
    proxy: str | None = None
    requested_by: str | None = None
    # since v2: fire on every live agent with these tags (`role=web,dc=bj`); agent_id is then ""
    selector: str | None = None


@dataclass(frozen=True)
class UpdateCron:
    """Each field given (not None) replaces the cron's. What runs where (its agent or selector,
    app, func and mode) is what the cron is, and is not changed: that is another cron."""

    event_id: str
    occurred_at: int
    cron_id: str
    rule: str | None = None
    timezone: str | None = None
    params: str | None = None
    timeout_s: int | None = None
    misfire: str | None = None
    overlap: str | None = None
    name: str | None = None


@dataclass(frozen=True)
class CronUpdated:
    """A cron's changeable fields from now on, all of them (an `UpdateCron` accepted)."""

    event_id: str
    occurred_at: int
    cron_id: str
    rule: str
    timezone: str
    params: str
    timeout_s: int
    misfire: str
    overlap: str
    name: str


@dataclass(frozen=True)
class PauseCron:
    event_id: str
    occurred_at: int
    cron_id: str


@dataclass(frozen=True)
class ResumeCron:
    event_id: str
    occurred_at: int
    cron_id: str


@dataclass(frozen=True)
class DeleteCron:
    event_id: str
    occurred_at: int
    cron_id: str


@dataclass(frozen=True)
class CronAdded:
    """An accepted `AddCron`, field for field: the cron's log alone rebuilds it."""

    event_id: str
    occurred_at: int
    cron_id: str
    agent_id: str
    app: str
    func: str
    params: str
    timeout_s: int
    rule: str
    timezone: str = "UTC"
    mode: str = "CANP"
    misfire: str = "run_once"
    overlap: str = "skip"
    name: str = ""
    proxy: str | None = None
    selector: str | None = None  # since v2


@dataclass(frozen=True)
class CronPaused:
    event_id: str
    occurred_at: int
    cron_id: str


@dataclass(frozen=True)
class CronResumed:
    """Fires are scheduled again from `occurred_at`; times that passed while paused are not
    misfires (the pause asked for them not to run)."""

    event_id: str
    occurred_at: int
    cron_id: str


@dataclass(frozen=True)
class CronDeleted:
    event_id: str
    occurred_at: int
    cron_id: str


@dataclass(frozen=True)
class CronCommandRejected:
    """A cron command broke a rule; nothing else happened. `code` is stable (411.x, 403.x)."""

    event_id: str
    occurred_at: int
    cron_id: str
    command: str
    command_id: str
    code: str
    reason: str


@dataclass(frozen=True)
class CronFired:
    """One fire of a cron: keyed by `(cron_id, scheduled_at)`, with its own task id.

    A selector cron's fire is still one event, so each scheduled time is decided once; it runs
    one task per agent that matched then (`task_ids[i]` on `agent_ids[i]`; `task_id` and
    `agent_id` are then "").
    """

    event_id: str
    occurred_at: int
    cron_id: str
    scheduled_at: int
    task_id: str
    agent_id: str
    catch_up: bool = False  # a missed time run late, by the misfire policy
    task_ids: tuple[str, ...] = ()  # since v2
    agent_ids: tuple[str, ...] = ()  # since v2

    def __post_init__(self) -> None:
        _as_tuple(self, "task_ids")
        _as_tuple(self, "agent_ids")

    def targets(self) -> list[tuple[str, str]]:
        """(task id, agent id) of every task this fire runs."""
        if self.task_ids:
            return list(zip(self.task_ids, self.agent_ids, strict=True))
        return [(self.task_id, self.agent_id)]


@dataclass(frozen=True)
class CronFiresMissed:
    """Scheduled times that did not run, by the misfire policy: never a silent loss."""

    event_id: str
    occurred_at: int
    cron_id: str
    first_at: int
    last_at: int
    count: int
    policy: str


@dataclass(frozen=True)
class CronFireSkipped:
    """A fire not run because the previous run was still going (overlap policy `skip`), or,
    for a selector cron, because no live agent matched (`running_task_id` "", the `reason`)."""

    event_id: str
    occurred_at: int
    cron_id: str
    scheduled_at: int
    running_task_id: str
    reason: str = ""  # since v2


@dataclass(frozen=True)
class CronFireQueued:
    """A fire held until the previous run ends (overlap policy `queue`)."""

    event_id: str
    occurred_at: int
    cron_id: str
    scheduled_at: int
    running_task_id: str


@dataclass(frozen=True)
class AgentCronSet:
    """The center's version of one agent-side cron (AANP/AAP), on the agent's dispatch topic.

    The agent keeps the newest it got per cron id and runs it from its own clock; `status`
    active, paused or deleted.
    """

    event_id: str
    occurred_at: int
    cron_id: str
    agent_id: str
    app: str
    func: str
    params: str
    timeout_s: int
    rule: str
    timezone: str
    mode: str
    status: str
    misfire: str = "run_once"
    overlap: str = "skip"
    proxy: str | None = None


@dataclass(frozen=True)
class AgentCronRan:
    """An agent-initiated run (AANP/AAP), reported whole once it ended (on `results`).

    Its task id derives from (agent, cron, scheduled time), so a run re-sent from the agent's
    spool after an outage is the same task. `source`: `config` (the agent's cron file) or
    `center` (an `AgentCronSet`).
    """

    event_id: str
    occurred_at: int
    task_id: str
    agent_id: str
    cron_id: str
    source: str
    scheduled_at: int
    started_at: int
    app: str
    func: str
    params: str
    mode: str
    worker_flag: int
    worker_message: str
    worker_costtime: int
    truncated: bool = False
    timed_out: bool = False
    # Since v2: how many output parts the run sent before this report (None: an older agent).
    output_parts: int | None = None


@dataclass(frozen=True)
class AppVersionPublished:
    """A package was stored (content-addressed by `sha256`) as `version` of `app` (on `apps`)."""

    event_id: str
    occurred_at: int
    app: str
    version: str
    sha256: str
    size: int
    entry: str  # from manifest.json: the worker script, relative to the package root
    proxy: str | None = None
    description: str = ""
    published_by: str | None = None


@dataclass(frozen=True)
class AppVersionActivated:
    """Agents should run `version` of `app` from now on; a rollback is an older version."""

    event_id: str
    occurred_at: int
    app: str
    version: str
    sha256: str
    previous: str | None = None  # the version that was active before, if any
    requested_by: str | None = None


@dataclass(frozen=True)
class AppPermissionSet:
    """The agents `app` may run on from now on (on `apps`): these ids and every agent one of
    these tag selectors matches, or `anywhere`. It replaces the app's rule before it; with no
    agents, no selectors and not anywhere, the app runs nowhere."""

    event_id: str
    occurred_at: int
    app: str
    agents: tuple[str, ...] = ()
    selectors: tuple[str, ...] = ()
    anywhere: bool = False
    set_by: str | None = None

    def __post_init__(self) -> None:
        _as_tuple(self, "agents")
        _as_tuple(self, "selectors")


# --- API keys: on `keys` (retained, one partition, key = key id), folded by the gateway. ---


@dataclass(frozen=True)
class ApiKeyCreated:
    """A key and what it may do. The secret is sealed (AES-GCM under the center's master key):
    the gateway needs it back to check HMAC signatures, so it cannot be a one-way hash."""

    event_id: str
    occurred_at: int
    key_id: str
    name: str
    apps: tuple[str, ...]  # app names, or "*"
    agents: tuple[str, ...]  # agent ids, tag selectors (`role=web`), or "*"
    operations: tuple[str, ...]  # exec, queue, cron, read, admin
    sealed_secret: str
    sealed_with: str  # the master key's id, so a wrong master key is named, not guessed
    created_by: str | None = None  # the key that made it; None: `elves up`'s bootstrap

    def __post_init__(self) -> None:
        _as_tuple(self, "apps")
        _as_tuple(self, "agents")
        _as_tuple(self, "operations")


@dataclass(frozen=True)
class ApiKeyRevoked:
    event_id: str
    occurred_at: int
    key_id: str
    revoked_by: str | None = None


# --- Agent enrolment: on `enrolments` (retained, key = agent id), folded by
# `streams/agents/enrolment.py` in the gateway and every streams worker. ---


@dataclass(frozen=True)
class AgentRegistered:
    """An agent asks to be enrolled with its Ed25519 public key (hex). `signature` (hex) is its
    signature over its id and that key (`signing.registration_message`): proof of possession."""

    event_id: str
    occurred_at: int
    agent_id: str
    public_key: str
    hostname: str
    signature: str


@dataclass(frozen=True)
class AgentAccepted:
    """An operator accepted the agent with this key; a new key makes it pending again."""

    event_id: str
    occurred_at: int
    agent_id: str
    public_key: str
    accepted_by: str | None = None


@dataclass(frozen=True)
class AgentRejected:
    """An operator rejected the agent: it stays rejected, whatever key it registers, until it is
    accepted again."""

    event_id: str
    occurred_at: int
    agent_id: str
    public_key: str
    reason: str = ""
    rejected_by: str | None = None


@dataclass(frozen=True)
class AgentTagsSet:
    """An operator's tags for an agent, laid over its heartbeats' (config) tags; they replace
    the admin tags set before."""

    event_id: str
    occurred_at: int
    agent_id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    set_by: str | None = None


@dataclass(frozen=True)
class DispatchRefused:
    """An agent refused a message on its dispatch topic (on `security`, through its outbox).
    `code` is stable (416.x); where the message is: `topic`, `partition`, `offset`."""

    event_id: str
    occurred_at: int
    agent_id: str
    code: str
    reason: str
    task_id: str | None
    topic: str
    partition: int
    offset: int
    key_id: str | None = None


Event = (
    TaskSubmitted
    | TaskAccepted
    | TaskRejected
    | TaskDispatched
    | TaskCancelRequested
    | TaskStarted
    | TaskOutput
    | TaskResultReported
    | TaskSucceeded
    | TaskFailed
    | TaskTimedOut
    | DeadlinePassed
    | ProcessorResult
    | Heartbeat
    | AgentUp
    | AgentDown
    | CreateQueue
    | AddQueueTask
    | CommitQueue
    | StopQueue
    | SetQueueLimits
    | QueueCreated
    | QueueLimitsSet
    | QueueTaskAdded
    | QueueCommitted
    | QueueCommandRejected
    | QueueTaskReady
    | QueueTaskRunning
    | QueueTaskRetryScheduled
    | RetryDue
    | QueueTaskSkipped
    | QueueTaskCancelled
    | QueueFinished
    | AddCron
    | PauseCron
    | UpdateCron
    | CronUpdated
    | ResumeCron
    | DeleteCron
    | CronAdded
    | CronPaused
    | CronResumed
    | CronDeleted
    | CronCommandRejected
    | CronFired
    | CronFiresMissed
    | CronFireSkipped
    | CronFireQueued
    | AgentCronSet
    | AgentCronRan
    | AppVersionPublished
    | AppVersionActivated
    | AppPermissionSet
    | ApiKeyCreated
    | ApiKeyRevoked
    | AgentRegistered
    | AgentAccepted
    | AgentRejected
    | AgentTagsSet
    | DispatchRefused
)

# The explicit registry: Avro record name -> class. A new event is added here and in avro/.
EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        TaskSubmitted,
        TaskAccepted,
        TaskRejected,
        TaskDispatched,
        TaskCancelRequested,
        TaskStarted,
        TaskOutput,
        TaskResultReported,
        TaskSucceeded,
        TaskFailed,
        TaskTimedOut,
        DeadlinePassed,
        ProcessorResult,
        Heartbeat,
        AgentUp,
        AgentDown,
        CreateQueue,
        AddQueueTask,
        CommitQueue,
        StopQueue,
        SetQueueLimits,
        QueueCreated,
        QueueLimitsSet,
        QueueTaskAdded,
        QueueCommitted,
        QueueCommandRejected,
        QueueTaskReady,
        QueueTaskRunning,
        QueueTaskRetryScheduled,
        RetryDue,
        QueueTaskSkipped,
        QueueTaskCancelled,
        QueueFinished,
        AddCron,
        PauseCron,
        UpdateCron,
        CronUpdated,
        ResumeCron,
        DeleteCron,
        CronAdded,
        CronPaused,
        CronResumed,
        CronDeleted,
        CronCommandRejected,
        CronFired,
        CronFiresMissed,
        CronFireSkipped,
        CronFireQueued,
        AgentCronSet,
        AgentCronRan,
        AppVersionPublished,
        AppVersionActivated,
        AppPermissionSet,
        ApiKeyCreated,
        ApiKeyRevoked,
        AgentRegistered,
        AgentAccepted,
        AgentRejected,
        AgentTagsSet,
        DispatchRefused,
    )
}
