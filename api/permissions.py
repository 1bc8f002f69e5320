"""App permissions over REST, and the gateway's own check of them.

`PUT /api/v1/apps/{app}/permissions` writes `AppPermissionSet` to `apps` (keyed by app, like
the versions) and replies once the listener has folded it; `GET` reads the rule that holds.
The gateway checks a task's app against its agent before anything is sent (413.5), so a caller
learns at once; the streams check again for every producer, and the agent once more.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from elves import app_versions
from elves.api.access import who
from elves.api.gateway import Gateway, gateway, write
from elves.api.requests import parse_json_body
from elves.errors import AppNotAllowed, MissingField, WrongType
from elves.packages import APP_NAME
from elves.permissions import Rule, allowed, make_rule
from elves.schemas.events import AppPermissionSet, new_id


def rule_for(gw: Gateway, app: str) -> Rule:
    return app_versions.permission(gw.listener.app(app), gw.settings.default_rule)


def _tags(gw: Gateway, agent_id: str) -> Mapping[str, str]:
    """The agent's tags as the listener knows them (an unknown agent has none)."""
    agent = gw.listener.agent(agent_id)
    return agent.tags if agent is not None else {}


def split(gw: Gateway, app: str, agent_ids: list[str]) -> tuple[list[str], list[str]]:
    """(the agents `app` may run on, the others), each in the order given."""
    rule = rule_for(gw, app)
    ok = [a for a in agent_ids if allowed(rule, a, _tags(gw, a))]
    return ok, [a for a in agent_ids if a not in ok]


def check(gw: Gateway, app: str, agent_id: str) -> None:
    """Raise 413.5 unless `app` may run on `agent_id`."""
    if not split(gw, app, [agent_id])[0]:
        raise AppNotAllowed(
            f"app {app} may not run on agent {agent_id}", app=app, agent_id=agent_id
        )


def _strings(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WrongType(f"{name} must be a list of strings", field=name)
    return value


def parse_rule(body: dict[str, Any]) -> Rule:
    """{"agents": [...], "selectors": [...]} (either may be left out; both empty: nowhere) or
    {"anywhere": true}."""
    anywhere = body.get("anywhere", False)
    if not isinstance(anywhere, bool):
        raise WrongType("anywhere must be true or false", field="anywhere")
    if not anywhere and "agents" not in body and "selectors" not in body:
        raise MissingField('give "agents" and/or "selectors", or "anywhere": true', field="agents")
    return make_rule(_strings(body, "agents"), _strings(body, "selectors"), anywhere)


def _app(request: Request) -> str:
    app = str(request.path_params["app"])
    if not APP_NAME.match(app):
        raise WrongType(f"bad app name {app!r}: letters, digits and _, not first a digit")
    return app


def _reply(gw: Gateway, app: str) -> dict[str, Any]:
    state = gw.listener.app(app)
    rule = rule_for(gw, app)
    return {
        "app": app,
        "default": state is None or state.permission is None,  # no rule: the center's default
        **rule.to_json(),
        # The agents known now that it may run on: what a selector or an id list comes to.
        "allowed_agents": split(gw, app, [a.agent_id for a in gw.listener.agents()])[0],
    }


async def put_permissions(request: Request) -> JSONResponse:
    gw = gateway(request)
    app = _app(request)
    rule = parse_rule(parse_json_body(await request.body()))
    event = AppPermissionSet(
        event_id=new_id(),
        occurred_at=int(time.time() * 1000),
        app=app,
        agents=rule.agents,
        selectors=tuple(str(s) for s in rule.selectors),
        anywhere=rule.anywhere,
        set_by=who(request),
    )
    await write(gw, "apps", app, [event])
    return JSONResponse(_reply(gw, app))


async def get_permissions(request: Request) -> JSONResponse:
    gw = gateway(request)
    return JSONResponse(_reply(gw, _app(request)))
