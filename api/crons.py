"""Cron endpoints: commands produced to Kafka and answered by the cron stream; reads from the
crons table as the gateway's listener keeps it (the table's compacted changelog)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from elves.api import permissions
from elves.api.access import Target, allowed, who
from elves.api.gateway import ask, gateway
from elves.api.requests import parse_cron, parse_cron_update, parse_json_body
from elves.errors import CronNotFound
from elves.schemas.events import (
    AddCron,
    DeleteCron,
    PauseCron,
    ResumeCron,
    UpdateCron,
    new_id,
    random_id,
)
from elves.streams.cron import model as crons

UPCOMING = 5  # next fire times shown in a cron's detail


def _now() -> int:
    return int(time.time() * 1000)


async def add_cron(request: Request) -> JSONResponse:
    gw = gateway(request)
    req = parse_cron(parse_json_body(await request.body()), gw.settings)
    if req.agent:  # a selector cron fires only on the matching agents the app may run on
        permissions.check(gw, req.app, req.agent)
    command = AddCron(
        event_id=new_id(),
        occurred_at=_now(),
        cron_id=random_id(),
        agent_id=req.agent,
        app=req.app,
        func=req.func,
        params=req.params,
        timeout_s=req.timeout_s,
        rule=req.rule,
        timezone=req.timezone,
        mode=req.mode,
        misfire=req.misfire,
        overlap=req.overlap,
        name=req.name,
        proxy=req.proxy,
        requested_by=who(request),
        selector=req.selector,
    )
    await ask(gw, command.cron_id, command, crons.answer_ids(command))
    return JSONResponse(_detail(_known(request, command.cron_id)), status_code=201)


async def _order(request: Request, cls: type[PauseCron | ResumeCron | DeleteCron]) -> JSONResponse:
    gw = gateway(request)
    cron_id = request.path_params["cron_id"]
    command = cls(new_id(), _now(), cron_id)
    await ask(gw, cron_id, command, crons.answer_ids(command))
    return JSONResponse(_detail(_known(request, cron_id)))


async def pause(request: Request) -> JSONResponse:
    return await _order(request, PauseCron)


async def resume(request: Request) -> JSONResponse:
    return await _order(request, ResumeCron)


async def delete(request: Request) -> JSONResponse:
    return await _order(request, DeleteCron)


async def update(request: Request) -> JSONResponse:
    """Change a cron in place (`streams.cron.model.decide_update`): the fields the body gives
    (rule, timezone, params, timeout, misfire, overlap, name); the reply is the cron after."""
    gw = gateway(request)
    cron_id = request.path_params["cron_id"]
    changes = parse_cron_update(parse_json_body(await request.body()), gw.settings)
    command = UpdateCron(new_id(), _now(), cron_id, **changes)
    await ask(gw, cron_id, command, crons.answer_ids(command))
    return JSONResponse(_detail(_known(request, cron_id)))


async def get_cron(request: Request) -> JSONResponse:
    return JSONResponse(_detail(_known(request, request.path_params["cron_id"])))


async def list_crons(request: Request) -> JSONResponse:
    gw = gateway(request)
    show_deleted = request.query_params.get("deleted") in ("1", "true")
    states = [
        c
        for c in gw.listener.crons()
        if (show_deleted or c.status != "deleted")
        and allowed(request, Target(c.app, c.agent_id or None, selector=c.selector or None))
    ]
    return JSONResponse({"crons": [_summary(c) for c in states]})


def _known(request: Request, cron_id: str) -> crons.CronState:
    state = gateway(request).listener.cron(cron_id)
    if state is None:
        raise CronNotFound(f"cron not found: {cron_id}", cron_id=cron_id)
    return state


def _summary(state: crons.CronState) -> dict[str, Any]:
    keys = (
        "cron_id",
        "name",
        "agent_id",
        "selector",
        "app",
        "func",
        "rule",
        "timezone",
        "mode",
        "status",
    )
    data = {k: getattr(state, k) for k in keys}
    data["next_at"] = state.next_at or None
    data["last_status"] = state.last_status or None
    return data


def _detail(state: crons.CronState) -> dict[str, Any]:
    data = asdict(state)
    data["running"] = list(state.running)
    data["queued"] = list(state.queued)
    data["last_task_ids"] = list(state.last_task_ids)
    data["next_fires"] = crons.upcoming(state, _now(), UPCOMING)
    data["last_fire"] = (
        {
            "scheduled_at": state.last_scheduled_at,
            "task_id": state.last_task_id,
            "task_ids": list(state.last_task_ids or (state.last_task_id,)),
            # a selector fire runs while any of its tasks (one per agent) runs
            "status": "running"
            if set(state.last_task_ids or (state.last_task_id,)) & set(state.running)
            else "ended",
        }
        if state.last_task_id
        else None
    )
    data["last_result"] = (
        {
            "task_id": state.ended_task_id,
            "status": state.last_status,
            "message": state.last_message,
            "ended_at": state.last_ended_at,
        }
        if state.ended_task_id
        else None
    )
    data["counts"] = {
        k: getattr(state, k) for k in ("fires", "missed", "skipped", "succeeded", "failed")
    }
    return data
