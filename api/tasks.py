"""Task reads: one task's state and lifecycle, and the list of recent tasks.

Both fold a task's audit rows with the task lifecycle's own fold (`streams/tasks/model.py`), so
the list and a task's page always agree on its status.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse

from elves.api import listing
from elves.api.access import task_events
from elves.api.gateway import events_of, gateway
from elves.errors import TaskNotFound
from elves.streams.tasks import model as tasks

STATUSES: tuple[str, ...] = get_args(tasks.Status)
# The events a task in each status must have had (its fold may have moved on since): the audit
# narrows a status's list to these tasks, then the fold decides.
SIGNS: dict[str, tuple[str, ...]] = {
    "accepted": ("TaskAccepted",),
    "rejected": ("TaskRejected",),
    "dispatched": ("TaskDispatched",),
    "running": ("TaskStarted", "AgentCronRan"),
    "succeeded": ("TaskSucceeded",),
    "failed": ("TaskFailed",),
    "timed_out": ("TaskTimedOut",),
}
# And the events it cannot have had: an accepted task was dispatched in the same breath (one
# transaction), so one still accepted has no dispatch. Every task has its acceptance: without
# this, asking for the accepted folded every task of the range to find none.
LACKS: dict[str, tuple[str, ...]] = {"accepted": ("TaskDispatched",)}


async def get_task(request: Request) -> JSONResponse:
    task_id = request.path_params["task_id"]
    rows = await task_events(request, task_id)  # the guard read them already
    if not rows:
        raise TaskNotFound(f"no task with id {task_id}", task_id=task_id)
    state = tasks.fold(events_of(rows))
    return JSONResponse(
        {
            "task_id": task_id,
            "state": asdict(state) if state is not None else None,
            "lifecycle": [
                {k: r[k] for k in ("type", "topic", "occurred_at", "payload")} for r in rows
            ],
        }
    )


async def list_tasks(request: Request) -> JSONResponse:
    """The tasks made since `since` (default: a day ago), newest first, of the apps and agents
    the key may read: `?since=&app=&agent=&status=&limit=` (at most 500)."""
    gw = gateway(request)
    asked = listing.page(request, STATUSES)
    apps, agents = listing.apps_shown(request), listing.agents_shown(request)
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    offset = 0
    while len(found) < asked.limit and apps != [] and agents != []:
        ids = await asyncio.to_thread(
            gw.store.task_ids,
            asked.since,
            asked.limit,
            offset,
            apps,
            agents,
            SIGNS.get(asked.status or "", ()),
            LACKS.get(asked.status or "", ()),
        )
        rows = await asyncio.to_thread(gw.store.tasks_events, ids)
        for task_id in ids:
            item = summary(task_id, rows[task_id])
            if item is not None and asked.status in (None, item["status"]) and task_id not in seen:
                found.append(item)
                seen.add(task_id)  # a task made meanwhile moves the next page down by one
        if asked.status is None or len(ids) < asked.limit:
            break  # without a status, every task found is shown; else the range is done
        offset += len(ids)
    return JSONResponse({"tasks": found[: asked.limit], "since": asked.since, "limit": asked.limit})


def summary(task_id: str, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One task of the list: its fold's state without the bulky parts (params, the worker's
    message: its page has them), and when it was made and last changed."""
    events = events_of(rows)
    state = tasks.fold(events)
    if state is None:
        return None
    return {
        "task_id": task_id,
        "app": state.app,
        "func": state.func,
        "agent_id": state.agent_id,
        "status": state.status,
        "attempt": state.attempt,
        "worker_flag": state.worker_flag,
        "worker_costtime": state.worker_costtime,
        "reason": state.reason,
        "mode": state.mode,
        "queue_id": state.queue_id,
        "cron_id": state.cron_id,
        "created_at": events[0].occurred_at,  # Unix ms, as in the queue list
        "updated_at": events[-1].occurred_at,
    }
