"""The cron state and its fold: `apply(state, event) -> state`, pure.

The rules that decide what happens (commands, the clock, outcomes) are `model.py`'s; this is
what a cron is after the events so far. `apply` ignores what does not fit the state, so a
duplicate or late event changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any, Literal

from elves.schemas.events import (
    AddCron,
    CronAdded,
    CronDeleted,
    CronFired,
    CronFireQueued,
    CronFireSkipped,
    CronFiresMissed,
    CronPaused,
    CronResumed,
    CronUpdated,
    DeleteCron,
    Event,
    PauseCron,
    ResumeCron,
    TaskFailed,
    TaskRejected,
    TaskSucceeded,
    TaskTimedOut,
    UpdateCron,
)
from elves.streams.cron import rules

Status = Literal["active", "paused", "deleted"]
Command = AddCron | PauseCron | ResumeCron | DeleteCron | UpdateCron
# What an `UpdateCron` may change: how and when it runs, not what runs where.
CHANGEABLE = ("rule", "timezone", "params", "timeout_s", "misfire", "overlap", "name")
Outcome = TaskSucceeded | TaskFailed | TaskTimedOut | TaskRejected
CENTER_MODES = ("CANP", "CAP")
AGENT_MODES = ("AANP", "AAP")
# A fire is on time when decided within this long after its scheduled time; later, it missed.
GRACE_MS = 2000
MAX_QUEUED = 10  # overlap `queue` holds at most this many fires; more are skipped
MAX_MISSED_COUNTED = 10_000  # a long outage's misses are counted up to this many


@lru_cache(maxsize=4096)
def parsed_rule(text: str, timezone: str) -> rules.Rule:
    return rules.parse_rule(text, timezone)


@lru_cache(maxsize=1 << 16)
def next_fire(rule: str, timezone: str, after: int) -> int:
    # Crons share rules and fire at the same times: one croniter walk (~100 us) serves them all.
    return rules.next_fire(parsed_rule(rule, timezone), after)


@dataclass(frozen=True)
class CronState:
    cron_id: str
    agent_id: str
    app: str
    func: str
    params: str
    timeout_s: int
    rule: str
    timezone: str
    mode: str
    misfire: str
    overlap: str
    name: str
    proxy: str | None
    created_at: int
    status: Status = "active"
    selector: str | None = None  # set: fire on every live agent it matches; agent_id is ""
    handled_until: int = 0  # every scheduled time up to here is decided
    next_at: int = 0  # the next scheduled time to decide; 0: none (paused, deleted, agent cron)
    running: tuple[str, ...] = ()  # task ids of fires not ended yet
    queued: tuple[int, ...] = ()  # scheduled times held by overlap `queue`
    fires: int = 0
    missed: int = 0
    skipped: int = 0
    succeeded: int = 0
    failed: int = 0
    last_scheduled_at: int = 0  # the newest fire
    last_task_id: str = ""
    last_task_ids: tuple[str, ...] = ()  # every task of the newest fire (one per agent)
    ended_task_id: str = ""  # the newest fire that ended, and how
    last_status: str = ""  # succeeded | failed | timed_out | rejected
    last_message: str = ""
    last_ended_at: int = 0

    @property
    def on_center(self) -> bool:
        return self.mode in CENTER_MODES

    def to_dict(self) -> dict[str, Any]:
        # Every field is a str, an int or a tuple of str: a shallow copy is the row (asdict's
        # deep copy was a tenth of the cron clock's time in bench/cron.py).
        return dict(vars(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CronState:
        tuples = {k: tuple(raw.get(k, ())) for k in ("running", "queued", "last_task_ids")}
        return cls(**{**raw, **tuples})


# --- the fold ---


def _handled(state: CronState, scheduled_at: int, **changes: Any) -> CronState:
    """`state` with `changes`, its times up to `scheduled_at` decided, and its next fire: one
    `replace` (three per fire were a tenth of the cron clock's time)."""
    handled_until = max(state.handled_until, scheduled_at)
    active = changes.get("status", state.status) == "active" and state.on_center
    next_at = next_fire(state.rule, state.timezone, handled_until) if active else 0
    return replace(state, handled_until=handled_until, next_at=next_at, **changes)


def apply(state: CronState | None, event: Event) -> CronState | None:
    match event:
        case CronAdded() if state is None:
            fields = asdict(event)
            del fields["event_id"], fields["occurred_at"]
            new = CronState(**fields, created_at=event.occurred_at)
            return _handled(new, event.occurred_at)
    if state is None:
        return None
    match event:
        case CronPaused() if state.status == "active":
            return replace(state, status="paused", next_at=0, queued=())
        case CronResumed() if state.status == "paused":
            return _handled(state, event.occurred_at, status="active")
        case CronDeleted():
            return replace(state, status="deleted", next_at=0, queued=())
        case CronUpdated() if state.status != "deleted":
            # As a resume: the times up to the change count as decided, and the next one is the
            # new rule's (a new rule's past times were never scheduled, so none is a misfire).
            changes = {name: getattr(event, name) for name in CHANGEABLE}
            return _handled(replace(state, **changes), event.occurred_at)
        # A fire is new once: its time not decided yet, or held by overlap `queue` until now.
        case CronFired() if (
            event.scheduled_at > state.handled_until or event.scheduled_at in state.queued
        ):
            held = tuple(t for t in state.queued if t != event.scheduled_at)
            task_ids = tuple(task_id for task_id, _ in event.targets())
            return _handled(
                state,
                event.scheduled_at,
                running=(*state.running, *task_ids),
                queued=held,
                fires=state.fires + 1,
                last_scheduled_at=event.scheduled_at,
                last_task_id=task_ids[0],
                last_task_ids=task_ids,
            )
        case CronFiresMissed():
            return _handled(state, event.last_at, missed=state.missed + event.count)
        case CronFireSkipped():
            held = tuple(t for t in state.queued if t != event.scheduled_at)
            return _handled(state, event.scheduled_at, skipped=state.skipped + 1, queued=held)
        case CronFireQueued() if event.scheduled_at not in state.queued:
            return _handled(state, event.scheduled_at, queued=(*state.queued, event.scheduled_at))
        case TaskSucceeded() | TaskFailed() | TaskTimedOut() | TaskRejected():
            return _ended(state, event)
    return state


def _ended(state: CronState, outcome: Outcome) -> CronState:
    if not state.on_center:
        # An agent cron's run is reported whole, never tracked as running here.
        state = replace(state, fires=state.fires + 1, last_task_id=outcome.task_id)
        state = replace(state, last_scheduled_at=outcome.occurred_at)
    elif outcome.task_id not in state.running:
        return state
    match outcome:
        case TaskSucceeded():
            status, message = "succeeded", outcome.worker_message
        case TaskFailed():
            status, message = "failed", outcome.worker_message
        case TaskTimedOut():
            status, message = "timed_out", "no result by the deadline"
        case TaskRejected():
            status, message = "rejected", f"[{outcome.code}] {outcome.reason}"
    ok = status == "succeeded"
    return replace(
        state,
        running=tuple(t for t in state.running if t != outcome.task_id),
        succeeded=state.succeeded + ok,
        failed=state.failed + (not ok),
        ended_task_id=outcome.task_id,
        last_status=status,
        last_message=message,
        last_ended_at=outcome.occurred_at,
    )


def fold(events: Iterable[Event], state: CronState | None = None) -> CronState | None:
    for event in events:
        state = apply(state, event)
    return state


def upcoming(state: CronState, now: int, count: int) -> list[int]:
    """The next `count` scheduled times, for the detail view. A center cron's start from the
    first undecided one (overdue ones show a stalled scheduler); an agent cron's from `now`."""
    if state.status != "active":
        return []
    after = state.handled_until if state.on_center else now
    return rules.next_fires(parsed_rule(state.rule, state.timezone), after, count)
