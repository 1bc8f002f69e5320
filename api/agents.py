"""Agents: the listing (liveness, enrolment, tags) and the operator's word on an agent.

Accept and reject are salt-key's: the gateway decides with the enrolment fold
(`streams/agents/enrolment.py`) and writes `AgentAccepted` (naming the key it accepts) or
`AgentRejected` to `enrolments`, keyed by agent id; admin tags are `AgentTagsSet` there too. The
reply waits until the gateway's own listener has folded the event, so a read right after it sees
the change; the streams see it a moment later (and read `enrolments` to its end before they
refuse a task as not accepted).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from elves.api.access import who
from elves.api.gateway import Gateway, gateway, write
from elves.api.requests import parse_json_body
from elves.errors import UnknownAgent, WrongType
from elves.schemas.events import AgentTagsSet, new_id
from elves.selectors import parse_tags
from elves.streams.agents import enrolment
from elves.streams.agents.model import AgentState


def _now() -> int:
    return int(time.time() * 1000)


def known(gw: Gateway) -> list[str]:
    """Every agent heard from or registered: a pending agent shows before its first beat."""
    heard = {a.agent_id for a in gw.listener.agents()}
    return sorted(heard | set(gw.listener.enrolments()))


def agent_json(gw: Gateway, agent_id: str) -> dict[str, Any] | None:
    """One agent as the API shows it: liveness (`status`), enrolment, and tags (`tags` the
    effective ones selectors match; `config_tags` its heartbeat's; `admin_tags` the operator's)."""
    live = gw.listener.agent(agent_id)
    enrolled = gw.listener.enrolment(agent_id)
    if live is None and enrolled is None:
        return None
    if live is None:
        assert enrolled is not None
        live = AgentState(
            agent_id,
            up=False,
            last_seen_at=0,
            interval_s=0.0,
            hostname=enrolled.hostname,
            tags=enrolment.effective_tags({}, enrolled),
        )
    data = asdict(live)
    data["status"] = "up" if live.up else "down"
    data["config_tags"] = gw.listener.config_tags(agent_id)
    data.update(enrolment.to_json(enrolled))
    return data


def _require_known(gw: Gateway, agent_id: str) -> None:
    if gw.listener.agent(agent_id) is None and gw.listener.enrolment(agent_id) is None:
        raise UnknownAgent(f"unknown agent: {agent_id}", agent_id=agent_id)


async def _reply(gw: Gateway, agent_id: str) -> JSONResponse:
    data = agent_json(gw, agent_id)
    assert data is not None  # written and folded just now
    return JSONResponse(data)


async def accept(request: Request) -> JSONResponse:
    """Accept the key the agent is registered with now (pending -> accepted)."""
    gw = gateway(request)
    agent_id = request.path_params["agent_id"]
    _require_known(gw, agent_id)
    by = who(request)
    events = enrolment.decide_accept(gw.listener.enrolment(agent_id), new_id(), _now(), by)
    await write(gw, "enrolments", agent_id, events)
    return await _reply(gw, agent_id)


async def reject(request: Request) -> JSONResponse:
    """Reject an agent (body, optional: {"reason": "..."}): nothing is dispatched to it."""
    gw = gateway(request)
    agent_id = request.path_params["agent_id"]
    _require_known(gw, agent_id)
    raw = await request.body()
    body = parse_json_body(raw) if raw else {}
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise WrongType("`reason` must be a string", field="reason")
    by = who(request)
    state = gw.listener.enrolment(agent_id)
    events = enrolment.decide_reject(state, agent_id, new_id(), _now(), by, reason)
    await write(gw, "enrolments", agent_id, events)
    return await _reply(gw, agent_id)


async def put_tags(request: Request) -> JSONResponse:
    """Set the operator's tags of an agent (body {"tags": {"role": "web"}}; {} clears them).
    They are laid over the agent's own (heartbeat) tags, for selectors and permissions."""
    gw = gateway(request)
    agent_id = request.path_params["agent_id"]
    _require_known(gw, agent_id)
    tags = parse_json_body(await request.body()).get("tags")
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise WrongType('`tags` must be an object of strings, e.g. {"role": "web"}', field="tags")
    parse_tags(",".join(f"{k}={v}" for k, v in tags.items()))  # the words selectors can match
    event = AgentTagsSet(
        event_id=new_id(),
        occurred_at=_now(),
        agent_id=agent_id,
        tags=tags,
        set_by=who(request),
    )
    await write(gw, "enrolments", agent_id, [event])
    return await _reply(gw, agent_id)
