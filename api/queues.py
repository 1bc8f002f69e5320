"""Queue endpoints: each command is produced to Kafka and answered by the queue stream.

A write waits for the event that answers its command (success or `QueueCommandRejected`, whose
ids derive from the command's), so a client learns at once of a cycle or an unknown dependency.
Reads fold the queue's events from the audit in the queue's log order (`in_log_order`), up to
`as_of` for the state at a past moment.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import JSONResponse

from elves.api import listing
from elves.api.access import require_agents
from elves.api.gateway import Gateway, ask, ask_all, events_of, gateway
from elves.api.requests import parse_json_body, parse_queue_task
from elves.errors import (
    CommandRejected,
    ElvesError,
    MissingField,
    NoAgentMatches,
    NotFound,
    WrongType,
)
from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    QueueLimitsSet,
    SetQueueLimits,
    StopQueue,
    new_id,
    random_id,
)
from elves.selectors import parse_selector
from elves.streams.queues import model as queues
from elves.streams.queues import rerun as reruns
from elves.streams.queues.state import QueueState, QueueStatus

# Tasks one call may add: a fan-in of a thousand fits, and one reply stays small.
MAX_BATCH = 1000
# How long a rerun of a queue that the audit still has running gives the watcher to catch up:
# the batch in flight when it asked, then the next (hurried: 50 ms apart while there is news).
CATCH_UP_INSERTS = 2
INSERT_WAIT_S = 1.0


def _now() -> int:
    return int(time.time() * 1000)


async def send(gw: Gateway, command: queues.Command) -> Event:
    """Produce a queue command and wait for the event that answers it."""
    return await ask(gw, command.queue_id, command, queues.answer_ids(command))


async def create_queue(request: Request) -> JSONResponse:
    gw = gateway(request)
    body = parse_json_body(await request.body())
    app = body.get("app")
    if not isinstance(app, str) or not app:
        raise MissingField("missing field: app", field="app")
    name = body.get("name", "")
    queue_id = random_id()
    await send(gw, CreateQueue(new_id(), _now(), queue_id, app, str(name), *_limits(body)))
    return JSONResponse({"queue_id": queue_id}, status_code=201)


def _limits(body: dict[str, Any], default: int | None = 0) -> list[Any]:
    """The queue's `LIMITS` from a body, in `CreateQueue`'s order, checked before anything is
    sent as the queue fold checks them; one the body leaves out or gives as null is `default`
    (0: no limit; None: unchanged, for a change of limits)."""
    limits = []
    for name, _ in queues.LIMITS:
        limit = body.get(name)
        if limit is None:
            limit = default  # a null on a new queue went through as one, and failed to encode
        if limit is not None:
            if not isinstance(limit, int) or isinstance(limit, bool):
                raise WrongType(f"{name} must be a whole number (0: no limit)", field=name)
            reason = queues.limit_error(name, limit)
            if reason is not None:
                raise WrongType(reason, field=name)
        limits.append(limit)
    return limits


async def add_task(request: Request) -> JSONResponse:
    added = await _add(request, request.path_params["queue_id"], await request.body())
    return JSONResponse(added, status_code=201)


async def _add(request: Request, queue_id: str, raw: bytes) -> dict[str, Any]:
    """Add one task, or by selector one task per live matching agent: {"task_id"}, and for a
    selector the tasks made ({"tasks": [{"task_id", "agent_id"}]})."""
    command = _add_command(request, queue_id, parse_json_body(raw))
    await send(gateway(request), command)
    return _added(command)


def _add_command(request: Request, queue_id: str, body: dict[str, Any]) -> AddQueueTask:
    gw = gateway(request)
    req = parse_queue_task(body, gw.settings)
    agent_ids: tuple[str, ...] = ()
    if req.selector is not None:
        # Matched here, recorded in the command: the fold stays pure and replays alike.
        agent_ids = tuple(gw.listener.matching(parse_selector(req.selector)))
        if not agent_ids:
            raise NoAgentMatches(
                f"no live agent matches the selector {req.selector}", selector=req.selector
            )
        require_agents(request, agent_ids)  # the API key must reach every agent it matched
    return AddQueueTask(
        event_id=new_id(),
        occurred_at=_now(),
        queue_id=queue_id,
        task_id=req.task_id or random_id(),
        agent_id=req.agent,
        func=req.func,
        params=req.params,
        timeout_s=req.timeout_s,
        mode=req.mode,
        depends_on=req.depends_on,
        run_if=req.run_if,
        max_attempts=req.max_attempts,
        backoff_s=req.backoff_s,
        proxy=req.proxy,
        selector=req.selector,
        agent_ids=agent_ids,
    )


def _added(command: AddQueueTask) -> dict[str, Any]:
    if command.selector is None:
        return {"task_id": command.task_id}
    tasks = [{"task_id": t, "agent_id": a} for t, a, _ in queues.members(command)]
    return {"task_id": command.task_id, "selector": command.selector, "tasks": tasks}


async def add_tasks(request: Request) -> JSONResponse:
    """Add many tasks in one call, in their order: a task may depend on one before it.

    Every task is checked first, and a malformed one fails the call (400, its `index`) before
    any is sent. The queue stream then judges each one as it would a single add, so the reply
    lists each: `added`, or `rejected` with its code (a cycle, an unknown dependency, ...).
    201 when every task was added, else 207 (those added stay, as single adds would)."""
    queue_id = request.path_params["queue_id"]
    items = parse_json_body(await request.body()).get("tasks")
    if items is None or items == []:
        raise MissingField("tasks must be a non-empty list of tasks", field="tasks")
    if not isinstance(items, list):
        raise WrongType("tasks must be a list of tasks", field="tasks")
    if len(items) > MAX_BATCH:
        raise WrongType(f"at most {MAX_BATCH} tasks a call, got {len(items)}", field="tasks")
    commands = []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise WrongType("a task must be a JSON object", field="tasks")
            commands.append(_add_command(request, queue_id, item))
        except ElvesError as exc:
            exc.message = f"tasks[{index}]: {exc.message}"
            exc.details["index"] = index
            raise
    answers = await ask_all(
        gateway(request), queue_id, [(c, queues.answer_ids(c)) for c in commands]
    )
    results: list[dict[str, Any]] = []
    for command, answer in zip(commands, answers, strict=True):
        if isinstance(answer, CommandRejected):
            error = {"code": answer.code, "message": answer.message}
            results.append({"task_id": command.task_id, "status": "rejected", "error": error})
        else:
            results.append({**_added(command), "status": "added"})
    rejected = sum(r["status"] == "rejected" for r in results)
    body = {"added": len(results) - rejected, "rejected": rejected, "tasks": results}
    return JSONResponse(body, status_code=207 if rejected else 201)


async def commit(request: Request) -> JSONResponse:
    gw = gateway(request)
    queue_id = request.path_params["queue_id"]
    await send(gw, CommitQueue(new_id(), _now(), queue_id))
    return JSONResponse({"queue_id": queue_id, "status": "committed"})


async def stop(request: Request) -> JSONResponse:
    gw = gateway(request)
    queue_id = request.path_params["queue_id"]
    await send(gw, StopQueue(new_id(), _now(), queue_id))
    return JSONResponse({"queue_id": queue_id, "status": "stopped"})


async def set_limits(request: Request) -> JSONResponse:
    """Change the limits of a queue that has not ended (`streams.queues.model.decide_limits`):
    the ones the body gives, the others stay. The reply has all four from now on."""
    gw = gateway(request)
    queue_id = request.path_params["queue_id"]
    limits = _limits(parse_json_body(await request.body()), default=None)
    if all(limit is None for limit in limits):
        names = ", ".join(name for name, _ in queues.LIMITS)
        raise MissingField(f"give one or more of: {names}", field="max_parallel")
    answer = await send(gw, SetQueueLimits(new_id(), _now(), queue_id, *limits))
    assert isinstance(answer, QueueLimitsSet)  # a rejection raises
    now = {name: getattr(answer, name) for name, _ in queues.LIMITS}
    return JSONResponse({"queue_id": queue_id, **now})


async def quick(request: Request) -> JSONResponse:
    """ELVES' qksqueue: create, add one task and commit, in one call."""
    gw = gateway(request)
    raw = await request.body()
    body = parse_json_body(raw)
    app = body.get("app")
    if not isinstance(app, str) or not app:
        raise MissingField("missing field: app", field="app")
    limits = _limits(body)  # checked before anything is sent, as the task is by `_add`
    queue_id = random_id()
    name = str(body.get("name", ""))
    await send(gw, CreateQueue(new_id(), _now(), queue_id, app, name, *limits))
    added = await _add(request, queue_id, raw)
    await send(gw, CommitQueue(new_id(), _now(), queue_id))
    return JSONResponse({"queue_id": queue_id, **added}, status_code=201)


STATUSES: tuple[str, ...] = get_args(QueueStatus)


async def list_queues(request: Request) -> JSONResponse:
    """The queues created since `since` (default: a day ago), newest first, of the apps the key
    may read: `?since=&app=&status=&limit=` (at most 500)."""
    gw = gateway(request)
    asked = listing.page(request, STATUSES)
    apps = listing.apps_shown(request)
    found = (
        []
        if apps == []
        else await asyncio.to_thread(gw.store.queues, asked.since, asked.limit, apps, asked.status)
    )
    return JSONResponse({"queues": found, "since": asked.since, "limit": asked.limit})


def in_log_order(rows: list[dict[str, Any]], queues_topic: str) -> list[dict[str, Any]]:
    """A queue's audit rows in the order its flow took them: first its own log, `queues` (one
    partition per queue, written by the flow alone), by offset. That log holds what the flow
    decided and each outcome it took, put there before what it caused (the audit keeps that
    copy: `api/watcher.py`). Then the rest (commands, submissions, retry facts), which the fold
    does not read, by time.

    Times cannot order them: an outcome carries its agent's clock, which may be behind or ahead
    of the center's, and a refusal the millisecond of the attempt it refuses."""
    own = sorted((r for r in rows if r["topic"] == queues_topic), key=lambda r: r["offset"])
    return own + [r for r in rows if r["topic"] != queues_topic]


async def folded(gw: Gateway, queue_id: str, as_of: int | None = None) -> QueueState | None:
    """A queue's state from the audit, now or as of a past time; None if it has no events."""
    rows = await asyncio.to_thread(gw.store.queue_events, queue_id)
    events = events_of(in_log_order(rows, gw.settings.topic("queues")))
    return queues.fold(events) if as_of is None else queues.fold_until(events, as_of)


async def get_queue(request: Request) -> JSONResponse:
    queue_id = request.path_params["queue_id"]
    as_of = listing.time_param(request, "as_of")
    state = await folded(gateway(request), queue_id, as_of)
    if state is None:
        raise NotFound(f"no queue {queue_id}" + ("" if as_of is None else " at that time"))
    data: dict[str, Any] = asdict(state)
    data["tasks"] = list(data["tasks"].values())
    data["parallel_limit"] = state.parallel_limit  # derived: the lower of the two limits
    data["as_of"] = as_of
    return JSONResponse(data)


async def rerun(request: Request) -> JSONResponse:
    """Run an ended queue again, as a new queue (`streams.queues.rerun`): `{"only": "all"}` (the
    default) or `"unsuccessful"`, and an optional `name`. The new queue is committed once the
    queue stream took every task: 201, with each task's new id. If it refused some (an agent
    the app may no longer run on, ...), the new queue stays open with the tasks it took, not
    committed: 207, with each refusal's code; commit or stop it."""
    gw = gateway(request)
    old_id = request.path_params["queue_id"]
    raw = await request.body()
    body = parse_json_body(raw) if raw.strip() else {}
    only = body.get("only", "all")
    if only not in reruns.ONLY:
        raise WrongType(f"only must be one of: {', '.join(reruns.ONLY)}", field="only")
    state = await folded(gw, old_id)
    if state is None or not state.final:
        # It may have ended a moment ago (or been made, and ended): its end on Kafka, not yet in
        # the audit (a reader of `queues` knows before the audit does). Two of the watcher's
        # inserts, hurried, bring what was on Kafka before this call.
        await gw.inserts.passed(CATCH_UP_INSERTS, INSERT_WAIT_S)
        state = await folded(gw, old_id)
    if state is None:
        raise CommandRejected("412.1", f"queue not found: {old_id}", queue_id=old_id)
    if not state.final:
        raise CommandRejected(
            "412.2", f"queue {old_id} is {state.status}: only an ended queue runs again"
        )
    queue_id = random_id()
    planned = reruns.plan(state, only, queue_id)
    if not planned:
        raise CommandRejected("412.7", f"queue {old_id} has no task that did not succeed")
    require_agents(request, sorted({r.task.agent_id for r in planned}))
    name = str(body.get("name") or f"rerun of {state.name or old_id}")
    limits = [getattr(state, name) for name, _ in queues.LIMITS]
    await send(gw, CreateQueue(new_id(), _now(), queue_id, state.app, name, *limits))
    commands = [_rerun_add(queue_id, r) for r in planned]
    answers: list[Event | CommandRejected] = []
    for start in range(0, len(commands), MAX_BATCH):  # in order: dependencies come first
        chunk = commands[start : start + MAX_BATCH]
        answers += await ask_all(gw, queue_id, [(c, queues.answer_ids(c)) for c in chunk])
    tasks: list[dict[str, Any]] = []
    for r, answer in zip(planned, answers, strict=True):
        task: dict[str, Any] = {"task_id": r.task_id, "rerun_of": r.task.task_id, "status": "added"}
        if isinstance(answer, CommandRejected):
            task["status"] = "rejected"
            task["error"] = {"code": answer.code, "message": answer.message}
        tasks.append(task)
    rejected = sum(t["status"] == "rejected" for t in tasks)
    if not rejected:
        await send(gw, CommitQueue(new_id(), _now(), queue_id))
    reply = {
        "queue_id": queue_id,
        "rerun_of": old_id,
        "only": only,
        "committed": not rejected,
        "added": len(tasks) - rejected,
        "rejected": rejected,
        "tasks": tasks,
    }
    return JSONResponse(reply, status_code=207 if rejected else 201)


def _rerun_add(queue_id: str, planned: reruns.Rerun) -> AddQueueTask:
    task = planned.task
    return AddQueueTask(
        event_id=new_id(),
        occurred_at=_now(),
        queue_id=queue_id,
        task_id=planned.task_id,
        agent_id=task.agent_id,
        func=task.func,
        params=task.params,
        timeout_s=task.timeout_s,
        mode=task.mode,
        depends_on=planned.depends_on,
        run_if=task.run_if,
        max_attempts=task.max_attempts,
        backoff_s=task.backoff_s,
        proxy=task.proxy,
    )
