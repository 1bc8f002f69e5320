"""The cron fold: pure rules of scheduled tasks.

A cron: active <-> paused, -> deleted. Center crons (CANP/CAP) fire from here; agent crons
(AANP/AAP) are only kept here and pushed to their agent, which fires them itself.

What arrives, and what decides on it:
- the five commands (`AddCron`, `PauseCron`, `ResumeCron`, `DeleteCron`, `UpdateCron`):
  `decide`;
- the clock's reading (`now`): `decide_due`, for each cron whose next time has come;
- a fire's outcome (`TaskSucceeded`, `TaskFailed`, `TaskTimedOut`, `TaskRejected` with the
  cron's id): `decide_outcome`, which may start a fire held by the overlap policy `queue`.

Rules:
- Every scheduled time is decided once: fired, missed (misfire policy) or skipped/queued
  (overlap policy). `handled_until` is the newest decided time, so a repeated tick, a second
  streams worker or a replay after a restart finds nothing left to decide.
- A fire's event id and task id derive from `(cron_id, scheduled_at)` alone: even an output
  produced twice (a crash between the send and the commit) is the same fire and the same task,
  which the task fold takes once.
- Times that pass while a cron is paused are not misfires: resuming schedules from then.
- A selector cron (`role=web,dc=bj` instead of one agent) runs, at each fire, one task per
  live agent that matches then and that the app may run on: the caller passes those agent ids
  in (`targets`), read from its view of the agents and the apps' rules. The fire stays one
  `CronFired`, so the time is still decided once; each task's id derives from
  `(cron_id, scheduled_at, agent_id)`. The fire counts as running while any of its tasks runs.
  No agent matching is a `CronFireSkipped` with the reason.

No Kafka, no clock, no I/O: `now` arrives on the events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import assert_never, cast

from elves.errors import BadRequest
from elves.permissions import Permits, anywhere
from elves.schemas.events import (
    AddCron,
    CronAdded,
    CronCommandRejected,
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
    TaskSubmitted,
    UpdateCron,
    derived_id,
)
from elves.selectors import parse_selector
from elves.streams.cron import rules
from elves.streams.cron.state import (
    AGENT_MODES,
    CENTER_MODES,
    CHANGEABLE,
    GRACE_MS,
    MAX_MISSED_COUNTED,
    MAX_QUEUED,
    Command,
    CronState,
    Outcome,
    apply,
    fold,
    next_fire,
    parsed_rule,
    upcoming,
)
from elves.streams.tasks.model import AgentStatus, params_error

# The rules are this module's; the state and its fold are state.py's, reached through here too.
__all__ = [
    "AGENT_MODES",
    "CENTER_MODES",
    "Command",
    "CronState",
    "Outcome",
    "answer_ids",
    "apply",
    "decide",
    "decide_due",
    "decide_outcome",
    "field_error",
    "fire_task_id",
    "fold",
    "selector_task_id",
    "submissions",
    "upcoming",
]


# The setting's default (ELVES_MAX_PARAMS); the wiring passes the setting itself.
DEFAULT_MAX_PARAMS = 64 * 1024


def fire_task_id(cron_id: str, scheduled_at: int) -> str:
    return derived_id(f"{cron_id}:{scheduled_at}", "cron-task")


def selector_task_id(cron_id: str, scheduled_at: int, agent_id: str) -> str:
    return derived_id(f"{cron_id}:{scheduled_at}:{agent_id}", "cron-task")


def submissions(state: CronState, fired: CronFired) -> list[TaskSubmitted]:
    """The task commands of a fire, one per target: each runs through the task lifecycle like
    any task."""
    many = bool(fired.task_ids)
    return [
        TaskSubmitted(
            event_id=derived_id(fired.event_id, f"submit:{agent_id}" if many else "submit"),
            occurred_at=fired.occurred_at,
            task_id=task_id,
            agent_id=agent_id,
            app=state.app,
            func=state.func,
            params=state.params,
            timeout_s=state.timeout_s,
            proxy=state.proxy,
            mode=state.mode,
            cron_id=state.cron_id,
        )
        for task_id, agent_id in fired.targets()
    ]


# --- commands ---


def decide(
    state: CronState | None,
    cmd: Command,
    max_params_bytes: int = DEFAULT_MAX_PARAMS,
    permits: Permits = anywhere,
) -> list[Event]:
    """`permits(app, agent_id)`: may the app run on that agent (its permission rule)."""
    match cmd:
        case AddCron():
            return decide_add(state, cmd, max_params_bytes, permits)
        case PauseCron():
            return _if_exists(state, cmd) or [_derived(CronPaused, cmd)]
        case ResumeCron():
            return _if_exists(state, cmd) or [_derived(CronResumed, cmd)]
        case DeleteCron():
            return _if_exists(state, cmd) or [_derived(CronDeleted, cmd)]
        case UpdateCron():
            return decide_update(state, cmd, max_params_bytes)
        case _:
            assert_never(cmd)


def _derived(cls: type[CronPaused | CronResumed | CronDeleted], cmd: Command) -> Event:
    return cls(
        event_id=derived_id(cmd.event_id, cls.__name__),
        occurred_at=cmd.occurred_at,
        cron_id=cmd.cron_id,
    )


def agent_not_accepted(cmd: AddCron, status: AgentStatus) -> list[Event]:
    """An agent cron goes to its agent, so only to one an operator accepted (414.4): one added
    for an unknown agent (414.2) could never be sent. [] when its agent is accepted."""
    if status in ("up", "down"):
        return []
    code, why = ("414.2", "unknown agent") if status == "unknown" else ("414.4", status)
    reason = f"agent cron for {cmd.agent_id}: {why}; an agent cron needs an accepted agent"
    return _reject(cmd, code, reason)


def _reject(cmd: Command, code: str, reason: str) -> list[Event]:
    return [
        CronCommandRejected(
            event_id=derived_id(cmd.event_id, "rejected"),
            occurred_at=cmd.occurred_at,
            cron_id=cmd.cron_id,
            command=type(cmd).__name__,
            command_id=cmd.event_id,
            code=code,
            reason=reason,
        )
    ]


def _if_exists(state: CronState | None, cmd: Command) -> list[Event]:
    if state is None or state.status == "deleted":
        return _reject(cmd, "411.1", f"cron not found: {cmd.cron_id}")
    return []


def field_error(cmd: AddCron, max_params_bytes: int) -> tuple[str, str] | None:
    """(code, reason) of the first rule an `AddCron` breaks, or None. The gateway checks the
    same before it sends, so a client learns at once; the fold checks again for producers
    that are not the gateway."""
    for name in ("cron_id", "app", "func", "rule"):
        if not getattr(cmd, name):
            return "403.1", f"missing field: {name}"
    if not cmd.agent_id and not cmd.selector:
        return "403.1", "missing field: agent (or selector)"
    if cmd.agent_id and cmd.selector:
        return "403.2", "give either agent or selector, not both"
    if cmd.selector:
        try:
            parse_selector(cmd.selector)
        except BadRequest as exc:
            return exc.code, exc.message
        if cmd.mode not in CENTER_MODES:
            return "403.2", f"a selector cron fires from the center (CANP, CAP), not {cmd.mode}"
    if cmd.timeout_s <= 0:
        return "403.2", f"timeout must be a positive number of seconds, not {cmd.timeout_s}"
    if cmd.mode not in CENTER_MODES + AGENT_MODES:
        modes = ", ".join(CENTER_MODES + AGENT_MODES)
        return "403.2", f"mode must be one of {modes}, not {cmd.mode!r}"
    if cmd.misfire not in rules.MISFIRE_POLICIES:
        return "403.2", f"misfire must be one of {', '.join(rules.MISFIRE_POLICIES)}"
    if cmd.overlap not in rules.OVERLAP_POLICIES:
        return "403.2", f"overlap must be one of {', '.join(rules.OVERLAP_POLICIES)}"
    error = params_error(cmd.params, max_params_bytes)
    if error is not None:
        return error
    try:
        parsed_rule(cmd.rule, cmd.timezone)
    except BadRequest as exc:
        return exc.code, exc.message
    return None


def decide_add(
    state: CronState | None, cmd: AddCron, max_params_bytes: int, permits: Permits = anywhere
) -> list[Event]:
    if state is not None:
        if state.status == "deleted":
            return _reject(cmd, "411.3", f"cron id {cmd.cron_id} was used by a deleted cron")
        return _reject(cmd, "411.3", f"cron already exists: {cmd.cron_id}")
    error = field_error(cmd, max_params_bytes)
    if error is not None:
        return _reject(cmd, *error)
    # One agent's cron, checked once here (an agent cron never passes the task fold); a
    # selector cron fires only on the matching agents the app may run on, at each fire.
    if cmd.agent_id and not permits(cmd.app, cmd.agent_id):
        return _reject(cmd, "413.5", f"app {cmd.app} may not run on agent {cmd.agent_id}")
    fields = {k: v for k, v in asdict(cmd).items() if k != "requested_by"}
    return [CronAdded(**{**fields, "event_id": derived_id(cmd.event_id, "added")})]


def decide_update(state: CronState | None, cmd: UpdateCron, max_params_bytes: int) -> list[Event]:
    """A cron changed in place: the fields given replace its own, checked as an add checks
    them on the cron as it would be. It keeps its id, counts and history; from the change on,
    it runs by its new rule (the times before the change count as decided, as on a resume),
    and an agent cron's agent gets its new version."""
    missing = _if_exists(state, cmd)
    if missing or state is None:
        return missing
    given = {name: getattr(cmd, name) for name in CHANGEABLE if getattr(cmd, name) is not None}
    if not given:
        return _reject(
            cmd, "403.1", f"nothing to change: give one or more of {', '.join(CHANGEABLE)}"
        )
    after = {name: given.get(name, getattr(state, name)) for name in CHANGEABLE}
    candidate = AddCron(
        event_id=cmd.event_id,
        occurred_at=cmd.occurred_at,
        cron_id=state.cron_id,
        agent_id=state.agent_id,
        app=state.app,
        func=state.func,
        mode=state.mode,
        proxy=state.proxy,
        selector=state.selector,
        **after,
    )
    error = field_error(candidate, max_params_bytes)
    if error is not None:
        return _reject(cmd, *error)
    updated = derived_id(cmd.event_id, "CronUpdated")
    return [CronUpdated(updated, cmd.occurred_at, state.cron_id, **after)]


# --- the clock ---


def decide_due(state: CronState | None, now: int, targets: Sequence[str] = ()) -> list[Event]:
    """What is due by `now`: fires, missed times and overlaps, each time decided once.

    `targets`: for a selector cron, the live agents that match it now (ignored otherwise)."""
    if state is None or state.status != "active" or not state.on_center:
        return []
    if not state.next_at or state.next_at > now:
        return []
    # The newest times only: after a long outage the count stops at MAX_MISSED_COUNTED, but
    # `next_at` still names the first time missed.
    after_next = next_fire(state.rule, state.timezone, state.next_at)
    if after_next > now:
        times = [state.next_at]  # the usual case, one time due: no search
    else:
        rule = parsed_rule(state.rule, state.timezone)
        times = rules.fires_between(rule, state.handled_until, now, MAX_MISSED_COUNTED)
    if not times:
        return []
    policy = cast(rules.MisfirePolicy, state.misfire)  # checked when the cron was added
    plan = rules.plan_fires(times, now, policy, GRACE_MS)
    out: list[Event] = []
    missed = sorted(plan.missed)
    if missed:
        cut_off = times[0] > state.next_at
        out.append(
            CronFiresMissed(
                event_id=rules.missed_event_id(state.cron_id, missed[0], missed[-1]),
                occurred_at=now,
                cron_id=state.cron_id,
                first_at=state.next_at if cut_off else missed[0],
                last_at=missed[-1],
                count=len(missed),
                policy=state.misfire,
            )
        )
    running = state.running
    queued = state.queued
    for scheduled_at, catch_up in plan.run:
        event = _fire_or_hold(state, scheduled_at, catch_up, now, running, queued, targets)
        out.append(event)
        if isinstance(event, CronFired):
            running = (*running, *(task_id for task_id, _ in event.targets()))
        elif isinstance(event, CronFireQueued):
            queued = (*queued, scheduled_at)
    return out


def _fire_or_hold(
    state: CronState,
    scheduled_at: int,
    catch_up: bool,
    now: int,
    running: tuple[str, ...],
    queued: tuple[int, ...],
    targets: Sequence[str],
) -> Event:
    if running and state.overlap != "parallel":
        if state.overlap == "queue" and len(queued) < MAX_QUEUED:
            return CronFireQueued(
                event_id=rules.fire_event_id(state.cron_id, scheduled_at, "queued"),
                occurred_at=now,
                cron_id=state.cron_id,
                scheduled_at=scheduled_at,
                running_task_id=running[-1],
            )
        return CronFireSkipped(
            event_id=rules.fire_event_id(state.cron_id, scheduled_at, "skipped"),
            occurred_at=now,
            cron_id=state.cron_id,
            scheduled_at=scheduled_at,
            running_task_id=running[-1],
        )
    return _fired(state, scheduled_at, catch_up, now, targets)


def _no_target(state: CronState, scheduled_at: int, now: int) -> CronFireSkipped:
    return CronFireSkipped(
        event_id=rules.fire_event_id(state.cron_id, scheduled_at, "skipped"),
        occurred_at=now,
        cron_id=state.cron_id,
        scheduled_at=scheduled_at,
        running_task_id="",
        reason=f"no live agent that {state.app} may run on matches the selector {state.selector}",
    )


def _fired(
    state: CronState, scheduled_at: int, catch_up: bool, now: int, targets: Sequence[str]
) -> CronFired | CronFireSkipped:
    if not state.selector:
        return CronFired(
            event_id=rules.fire_event_id(state.cron_id, scheduled_at, "fired"),
            occurred_at=now,
            cron_id=state.cron_id,
            scheduled_at=scheduled_at,
            task_id=fire_task_id(state.cron_id, scheduled_at),
            agent_id=state.agent_id,
            catch_up=catch_up,
        )
    if not targets:
        return _no_target(state, scheduled_at, now)
    agents = tuple(sorted(set(targets)))
    return CronFired(
        event_id=rules.fire_event_id(state.cron_id, scheduled_at, "fired"),
        occurred_at=now,
        cron_id=state.cron_id,
        scheduled_at=scheduled_at,
        task_id="",
        agent_id="",
        catch_up=catch_up,
        task_ids=tuple(selector_task_id(state.cron_id, scheduled_at, a) for a in agents),
        agent_ids=agents,
    )


# --- outcomes ---


def decide_outcome(
    state: CronState | None, outcome: Outcome, targets: Sequence[str] = ()
) -> list[Event]:
    """A fire ended: a fire held behind it (overlap `queue`) goes now. `targets` as for
    `decide_due`: with none for a selector cron, every held fire is skipped (nothing would
    end to release the rest)."""
    if state is None or outcome.task_id not in state.running:
        return []
    if state.status != "active" or not state.queued or len(state.running) > 1:
        return []
    if state.selector and not targets:
        return [_no_target(state, t, outcome.occurred_at) for t in state.queued]
    return [_fired(state, state.queued[0], False, outcome.occurred_at, targets)]


def answer_ids(cmd: Command) -> frozenset[str]:
    """The ids of the events that answer a command, for a caller waiting on `crons`."""
    names = {
        AddCron: "added",
        PauseCron: "CronPaused",
        ResumeCron: "CronResumed",
        DeleteCron: "CronDeleted",
        UpdateCron: "CronUpdated",
    }
    return frozenset(
        {derived_id(cmd.event_id, names[type(cmd)]), derived_id(cmd.event_id, "rejected")}
    )
