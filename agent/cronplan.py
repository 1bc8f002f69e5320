"""What the agent's cron does at a moment, and the events it reports: pure, times in Unix ms.

- `decide_due`: the scheduled times of a cron that came due since the last one handled. The
  newest is on time if at most GRACE_MS old; older ones (the agent was down, or asleep) follow
  the cron's misfire policy (`rules.plan_fires`), and those not run are reported as one
  `CronFiresMissed`.
- `decide_overlap`: a fire while the cron's previous run goes on (skip | queue | parallel).
- A fire's task id derives from (agent, cron, scheduled time) and its report's event id from
  the task id: a run re-sent after an outage, or decided again after a crash, is the same one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from elves.agent.cronfile import CronDef
from elves.agent.runner import RunResult
from elves.schemas.events import (
    AgentCronRan,
    CronFireSkipped,
    CronFiresMissed,
    derived_id,
)
from elves.streams.cron import rules

GRACE_MS = 2000  # a fire decided within this long after its time is on time
MAX_MISSED_COUNTED = 10_000  # a long outage's missed times are counted up to this many
MAX_QUEUED = 3  # overlap `queue` holds at most this many fires per cron; more are skipped

Overlap = Literal["run", "queue", "skip"]


def run_task_id(agent_id: str, cron_id: str, scheduled_at: int) -> str:
    return derived_id(f"{agent_id}:{cron_id}:{scheduled_at}", "agent-cron")


@dataclass(frozen=True)
class Due:
    run: tuple[tuple[int, bool], ...]  # (scheduled_at, catch_up), oldest first
    missed: CronFiresMissed | None
    handled_until: int  # the newest scheduled time decided (by running, missing or skipping)


def next_due(cron: CronDef, handled_until: int) -> int:
    """The first scheduled time not handled yet."""
    return rules.next_fire(cron.rule, handled_until)


def decide_due(cron: CronDef, handled_until: int, now: int) -> Due:
    """Every scheduled time in (handled_until, now], decided once."""
    times = rules.fires_between(cron.rule, handled_until, now, MAX_MISSED_COUNTED)
    if not times:
        return Due((), None, handled_until)
    plan = rules.plan_fires(times, now, cast(rules.MisfirePolicy, cron.misfire), GRACE_MS)
    missed = None
    if plan.missed:
        # Past MAX_MISSED_COUNTED only the newest times are listed; the first is still named.
        first = next_due(cron, handled_until)
        missed = CronFiresMissed(
            event_id=rules.missed_event_id(cron.cron_id, first, plan.missed[-1]),
            occurred_at=now,
            cron_id=cron.cron_id,
            first_at=first,
            last_at=plan.missed[-1],
            count=len(plan.missed),
            policy=cron.misfire,
        )
    return Due(plan.run, missed, times[-1])


def decide_overlap(policy: str, running: int, queued: int) -> Overlap:
    """A fire when `running` runs of its cron go on and `queued` wait behind them."""
    if policy == "parallel" or (running == 0 and queued == 0):
        return "run"
    if policy == "queue" and queued < MAX_QUEUED:
        return "queue"
    return "skip"


def ran(
    agent_id: str,
    cron: CronDef,
    scheduled_at: int,
    started_at: int,
    ended_at: int,
    result: RunResult,
) -> AgentCronRan:
    """The report of one run, once it ended."""
    task_id = run_task_id(agent_id, cron.cron_id, scheduled_at)
    return AgentCronRan(
        event_id=derived_id(task_id, "ran", at=scheduled_at),
        occurred_at=ended_at,
        task_id=task_id,
        agent_id=agent_id,
        cron_id=cron.cron_id,
        source=cron.source,
        scheduled_at=scheduled_at,
        started_at=started_at,
        app=cron.app,
        func=cron.func,
        params=cron.params,
        mode=cron.mode,
        worker_flag=result.worker_flag,
        worker_message=result.worker_message,
        worker_costtime=result.worker_costtime,
        truncated=result.truncated,
        timed_out=result.timed_out,
        output_parts=result.output_parts,
    )


def skipped(
    agent_id: str, cron: CronDef, scheduled_at: int, running_at: int, now: int
) -> CronFireSkipped:
    """A fire not run because the cron's previous one (scheduled at `running_at`) goes on."""
    return CronFireSkipped(
        event_id=rules.fire_event_id(cron.cron_id, scheduled_at, "skipped"),
        occurred_at=now,
        cron_id=cron.cron_id,
        scheduled_at=scheduled_at,
        running_task_id=run_task_id(agent_id, cron.cron_id, running_at),
    )
