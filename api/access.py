"""Every route, guarded: the signature proves the key, then the key's scopes must reach the
route's operation and every app and agent the request touches.

`guard(ROUTES)` wraps each route's endpoint, so no route can be forgotten: `/health` and
`/openapi.json` stay open, and a route missing from `RULES` is for keys that may do everything
(admin, every app and agent) until someone writes its rule. What a request touches comes from
its path parameters, looked up whatever the route (`{app}`, `{agent_id}`, a task's app and agent
from the audit, a queue's app, a cron's app and agents from the gateway's view), and from its
body where the route has a rule for it. ELVES skipped the check for queue and cron ids, so one
app's key could act on another app's queues; here the id is the way in.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from elves.api.gateway import Gateway, gateway
from elves.api.requests import parse_json_body
from elves.apikeys import KeyState
from elves.errors import NoPermission, PackageTooLarge
from elves.request_signing import AGENT_HEADER, KEY_HEADER
from elves.scopes import (
    ANY,
    Scopes,
    denies_agent,
    denies_agents,
    denies_app,
    denies_operation,
    denies_selector,
)
from elves.selectors import parse_selector

OPEN_PATHS = frozenset({"/health", "/openapi.json"})
# What an agent's own key opens (signed with its enrolled Ed25519 key, see request_signing).
AGENT_ROUTES = frozenset({("GET", "/api/v1/apps/{app}/versions/{version}/package")})
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Target:
    """Something a request touches. `selector` is a standing one (a cron's: checked as text,
    for the agents it will match later); `matching` is resolved now (an instant run, a queue
    task), and every agent it matches now must be in scope."""

    app: str | None = None
    agent: str | None = None
    selector: str | None = None
    matching: str | None = None
    unknown: str | None = None  # an id not found: only a key for everything may act on it


@dataclass(frozen=True)
class Rule:
    operation: str
    everything: bool = False  # the key must reach every app and agent (raw SQL, keys)
    body: Callable[[dict[str, Any]], list[Target]] | None = None


def _text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) and value else None  # else the handler says why


def _run(body: dict[str, Any]) -> list[Target]:
    return [Target(_text(body, "app"), _text(body, "agent"), matching=_text(body, "selector"))]


def _cron(body: dict[str, Any]) -> list[Target]:
    return [Target(_text(body, "app"), _text(body, "agent"), selector=_text(body, "selector"))]


def _queue_task(body: dict[str, Any]) -> list[Target]:
    return [Target(agent=_text(body, "agent"), matching=_text(body, "selector"))]  # app: the id's


def _queue_tasks(body: dict[str, Any]) -> list[Target]:
    items = body.get("tasks")
    tasks = [t for t in items if isinstance(t, dict)] if isinstance(items, list) else []
    return [target for task in tasks for target in _queue_task(task)]


def _app(body: dict[str, Any]) -> list[Target]:
    return [Target(_text(body, "app"))]


EVERYTHING = Rule("admin", everything=True)
# (method, route path) -> what it needs. Read routes need `read`; runs, queues and crons their
# own operation; publishing and activating app versions, `admin` for that app.
RULES: dict[tuple[str, str], Rule] = {
    ("POST", "/api/v1/tasks/instant"): Rule("exec", body=_run),
    ("GET", "/api/v1/tasks"): Rule("read"),  # the list shows the tasks in scope only
    ("GET", "/api/v1/tasks/{task_id}"): Rule("read"),
    ("GET", "/api/v1/tasks/{task_id}/output"): Rule("read"),
    ("GET", "/api/v1/agents"): Rule("read"),  # the list shows the agents in scope only
    ("GET", "/api/v1/agents/{agent_id}"): Rule("read"),
    # Enrolment is the fleet's trust, and admin tags move agents into other keys' selectors:
    # only a key for everything.
    ("POST", "/api/v1/agents/{agent_id}/accept"): EVERYTHING,
    ("POST", "/api/v1/agents/{agent_id}/reject"): EVERYTHING,
    ("PUT", "/api/v1/agents/{agent_id}/tags"): EVERYTHING,
    # Raw SQL reads every app's events: it cannot be narrowed, so only a key for everything.
    ("GET", "/api/v1/audit"): Rule("read", everything=True),
    ("POST", "/api/v1/audit"): Rule("read", everything=True),
    ("POST", "/api/v1/queues"): Rule("queue", body=_app),
    ("POST", "/api/v1/queues/quick"): Rule("queue", body=_run),
    ("GET", "/api/v1/queues"): Rule("read"),  # the list shows the queues of apps in scope only
    ("GET", "/api/v1/queues/{queue_id}"): Rule("read"),
    ("POST", "/api/v1/queues/{queue_id}/tasks"): Rule("queue", body=_queue_task),
    ("POST", "/api/v1/queues/{queue_id}/tasks/batch"): Rule("queue", body=_queue_tasks),
    ("POST", "/api/v1/queues/{queue_id}/commit"): Rule("queue"),
    ("POST", "/api/v1/queues/{queue_id}/stop"): Rule("queue"),
    ("POST", "/api/v1/queues/{queue_id}/limits"): Rule("queue"),
    # The old queue's app is checked by its id; its tasks' agents in the handler.
    ("POST", "/api/v1/queues/{queue_id}/rerun"): Rule("queue"),
    ("POST", "/api/v1/crons"): Rule("cron", body=_cron),
    ("GET", "/api/v1/crons"): Rule("read"),  # the list shows the crons in scope only
    ("GET", "/api/v1/crons/{cron_id}"): Rule("read"),
    ("DELETE", "/api/v1/crons/{cron_id}"): Rule("cron"),
    ("PATCH", "/api/v1/crons/{cron_id}"): Rule("cron"),
    ("POST", "/api/v1/crons/{cron_id}/pause"): Rule("cron"),
    ("POST", "/api/v1/crons/{cron_id}/resume"): Rule("cron"),
    ("GET", "/api/v1/apps"): Rule("read"),  # the list shows the apps in scope only
    ("GET", "/api/v1/apps/{app}"): Rule("read"),
    ("POST", "/api/v1/apps/{app}/active"): Rule("admin"),
    ("POST", "/api/v1/apps/{app}/versions/{version}"): Rule("admin"),
    ("GET", "/api/v1/apps/{app}/versions/{version}/package"): Rule("read"),
    ("GET", "/api/v1/apps/{app}/permissions"): Rule("read"),
    # Which agents an app may run on is the fleet's rule, not the app owner's: a key scoped to
    # some agents must not open an app to others.
    ("PUT", "/api/v1/apps/{app}/permissions"): EVERYTHING,
    # Key management: a narrower admin could otherwise mint itself a wider key.
    ("POST", "/api/v1/keys"): EVERYTHING,
    ("GET", "/api/v1/keys"): EVERYTHING,
    ("DELETE", "/api/v1/keys/{key_id}"): EVERYTHING,
}


def caller(request: Request) -> KeyState:
    """The key that signed this request (set by the guard before any handler runs)."""
    key: KeyState = request.state.api_key
    return key


def who(request: Request) -> str:
    """Who asked, for the audit: the id of the key that signed the request, and the client's
    own name for itself (`X-Elves-Client`) when it gives one. The name alone proves nothing."""
    key_id = caller(request).key_id
    client = request.headers.get("x-elves-client")
    return f"{key_id} ({client})" if client else key_id


def _denial(gw: Gateway, scopes: Scopes, target: Target) -> str | None:
    if target.unknown is not None:
        return None if scopes.everything else f"{target.unknown} is not known to this gateway"
    if target.app is not None and (why := denies_app(scopes, target.app)):
        return why
    if target.agent is not None:
        known = gw.listener.agent(target.agent)
        if why := denies_agent(scopes, target.agent, known.tags if known else {}):
            return why
    if target.selector is not None and (why := denies_selector(scopes, target.selector)):
        return why
    if target.matching is not None:
        return denies_matched(gw, scopes, gw.listener.matching(parse_selector(target.matching)))
    return None


def denies_matched(gw: Gateway, scopes: Scopes, agent_ids: Sequence[str]) -> str | None:
    tags = {a: known.tags for a in agent_ids if (known := gw.listener.agent(a)) is not None}
    return denies_agents(scopes, agent_ids, tags)


def allowed(request: Request, target: Target) -> bool:
    """For lists: show only what the caller's key reaches."""
    return _denial(gateway(request), caller(request).scopes, target) is None


def require_agents(request: Request, agent_ids: Sequence[str]) -> None:
    """The exact check of a selector run, on the very agents the handler resolved."""
    key = caller(request)
    why = denies_matched(gateway(request), key.scopes, agent_ids)
    if why is not None:
        raise NoPermission(why, key_id=key.key_id)


async def task_events(request: Request, task_id: str) -> list[dict[str, Any]]:
    """A task's rows in the audit, read once per request: the guard reads them for the task's
    app and agent, and the handler gets the same rows."""
    cached: dict[str, list[dict[str, Any]]] | None = getattr(request.state, "task_rows", None)
    if cached is None:
        cached = request.state.task_rows = {}
    if task_id not in cached:
        cached[task_id] = await asyncio.to_thread(gateway(request).store.task_events, task_id)
    return cached[task_id]


async def _task(request: Request, task_id: str) -> list[Target]:
    rows = await task_events(request, task_id)
    # Not in the audit: the handler answers 404 with nothing in it. Most often the task was
    # made a moment ago (`elves exec --output` asks at once): the watcher's next insert hurries.
    if not rows:
        gateway(request).watcher.hurry()
    app = next((str(r["app"]) for r in rows if r["app"]), None)
    agent = next((str(r["agent_id"]) for r in rows if r["agent_id"]), None)
    return [Target(app, agent)] if rows else []


async def _queue(gw: Gateway, queue_id: str) -> list[Target]:
    app = gw.listener.queue_app(queue_id)  # queues made since the gateway started
    if app is None:
        rows = await asyncio.to_thread(gw.store.queue_events, queue_id)
        app = next((str(r["payload"]["app"]) for r in rows if r["type"] == "QueueCreated"), None)
    return [Target(app)] if app is not None else [Target(unknown=f"queue {queue_id}")]


def _cron_of(gw: Gateway, cron_id: str) -> list[Target]:
    cron = gw.listener.cron(cron_id)
    if cron is None:
        return [Target(unknown=f"cron {cron_id}")]
    return [Target(cron.app, cron.agent_id or None, selector=cron.selector or None)]


async def _path_targets(request: Request, params: Mapping[str, str]) -> list[Target]:
    gw = gateway(request)
    targets = []
    if "app" in params:
        targets.append(Target(app=params["app"]))
    if "agent_id" in params:
        targets.append(Target(agent=params["agent_id"]))
    if "task_id" in params:
        targets += await _task(request, params["task_id"])
    if "queue_id" in params:
        targets += await _queue(gw, params["queue_id"])
    if "cron_id" in params:
        targets += _cron_of(gw, params["cron_id"])
    return targets


async def authorize(request: Request, path: str) -> KeyState:
    gw = gateway(request)
    declared = request.headers.get("content-length", "")
    limit = gw.settings.max_package_bytes  # the largest body any route takes (a package)
    if declared.isdigit() and int(declared) > limit:
        # The signature covers the body's hash: refuse before reading what no route would take.
        raise PackageTooLarge(f"the request body is {declared} bytes, over the limit of {limit}")
    body = await request.body()  # kept by the request: the handler reads it again for free
    method = "GET" if request.method == "HEAD" else request.method
    if request.headers.get(AGENT_HEADER) and not request.headers.get(KEY_HEADER):
        return _as_agent(gw, request, body, method, path)
    key = gw.auth.authenticate(request, body)
    request.state.api_key = key
    rule = RULES.get((method, path), EVERYTHING)
    why = denies_operation(key.scopes, rule.operation, rule.everything)
    if why is None:
        targets = await _path_targets(request, request.path_params)
        if rule.body is not None:
            targets += rule.body(parse_json_body(body))
        why = next((w for t in targets if (w := _denial(gw, key.scopes, t))), None)
    if why is not None:
        raise NoPermission(f"{why} ({method} {path})", key_id=key.key_id)
    return key


def _as_agent(gw: Gateway, request: Request, body: bytes, method: str, path: str) -> KeyState:
    """A request an accepted agent signed with its own key: it opens `AGENT_ROUTES` only (an
    agent fetches the packages it installs; it needs no API key for that)."""
    agent_id = gw.auth.authenticate_agent(request, body)
    if (method, path) not in AGENT_ROUTES:
        raise NoPermission(
            f"an agent's own key opens only {', '.join(p for _, p in AGENT_ROUTES)},"
            f" not {method} {path}",
            agent_id=agent_id,
        )
    key = agent_caller(agent_id)
    request.state.api_key = key
    return key


def agent_caller(agent_id: str) -> KeyState:
    """An agent as a caller, for the handlers and the audit (`who`): `agent:<id>`, reading the
    routes it may reach. It is no key: nothing can sign with it but the agent."""
    scopes = Scopes(apps=(ANY,), agents=(agent_id,), operations=("read",))
    return KeyState(f"agent:{agent_id}", f"agent {agent_id}", scopes, "", "", 0)


def _guarded(path: str, endpoint: Endpoint) -> Endpoint:
    @functools.wraps(endpoint)
    async def checked(request: Request) -> Response:
        await authorize(request, path)
        return await endpoint(request)

    return checked


def guard(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The routes with every endpoint but the open ones behind `authorize`."""
    guarded: list[BaseRoute] = []
    for route in routes:
        if not isinstance(route, Route):
            raise TypeError(f"{route!r}: only plain routes can be guarded; add a rule for it")
        if route.path in OPEN_PATHS:
            guarded.append(route)
            continue
        methods = sorted(route.methods or {"GET"})
        endpoint = _guarded(route.path, route.endpoint)
        guarded.append(Route(route.path, endpoint, methods=methods, name=route.name))
    return guarded
