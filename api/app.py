"""The Starlette gateway: explicit routes, one lifespan holding the clients, one error handler.

It owns the embedded ClickHouse (chDB allows one process per path), so the watcher runs here too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elves.api import agents, apps, crons, keys, output, permissions, queues, tasks
from elves.api.access import Target, allowed, guard, require_agents, who
from elves.api.audit import AuditStore
from elves.api.auth import Authenticator
from elves.api.gateway import Gateway, Inserts, gateway
from elves.api.listener import Listener
from elves.api.openapi import OPENAPI
from elves.api.requests import InstantRequest, parse_instant, parse_json_body
from elves.api.watcher import Watcher
from elves.config import Settings
from elves.errors import (
    AgentNotAccepted,
    AppNotAllowed,
    ElvesError,
    NoAgentMatches,
    NotFound,
    TaskTimeout,
)
from elves.kafka import producer
from elves.keyring import KeyRing
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    Event,
    TaskRejected,
    TaskResultReported,
    TaskSubmitted,
    TaskTimedOut,
    new_id,
    random_id,
)
from elves.sealing import Sealer
from elves.selectors import parse_selector
from elves.topics import ensure_topics

log = logging.getLogger("elves.api")

# How long past a task's own timeout the instant call waits: the streams' grace plus a margin.
REPLY_MARGIN_S = 2.0


async def exec_instant(request: Request) -> JSONResponse:
    """One agent: its result. A selector: one task per live matching agent the app may run on,
    every result (each with its agent id, sorted by it), and the worst one's HTTP status; the
    matching agents the app may not run on are listed in `not_allowed` (all of them: 413.5)."""
    gw = gateway(request)
    req = parse_instant(parse_json_body(await request.body()), gw.settings)
    requested_by = who(request)
    if req.selector is None:
        permissions.check(gw, req.app, req.agent)
        body, status = await _run(gw, req, req.agent, requested_by)
        return JSONResponse(body, status_code=status)
    matched = gw.listener.matching(parse_selector(req.selector))
    if not matched:
        raise NoAgentMatches(
            f"no live agent matches the selector {req.selector}", selector=req.selector
        )
    require_agents(request, matched)  # the API key must reach every agent it matched
    agent_ids, not_allowed = permissions.split(gw, req.app, matched)
    if not agent_ids:
        raise AppNotAllowed(
            f"app {req.app} may not run on any agent the selector {req.selector} matches",
            app=req.app,
            selector=req.selector,
            not_allowed=not_allowed,
        )
    runs = await asyncio.gather(*(_run_or_wait(gw, req, a, requested_by) for a in agent_ids))
    results = [{"agent_id": a, **body} for a, (body, _) in zip(agent_ids, runs, strict=True)]
    worst = max(status for _, status in runs)
    return JSONResponse(
        {"selector": req.selector, "results": results, "not_allowed": not_allowed},
        status_code=worst,
    )


async def _run_or_wait(
    gw: Gateway, req: InstantRequest, agent_id: str, requested_by: str | None
) -> tuple[dict[str, Any], int]:
    """One agent's run among several: a wait past its timeout is its result (408.1), not the
    whole call's error, so the others' results still come back."""
    try:
        return await _run(gw, req, agent_id, requested_by)
    except TaskTimeout as exc:
        task_id = str(exc.details.get("task_id", ""))
        return {"task_id": task_id, "status": "waiting", "error": exc.to_dict()}, exc.status


async def _run(
    gw: Gateway, req: InstantRequest, agent_id: str, requested_by: str | None
) -> tuple[dict[str, Any], int]:
    """Submit one task and wait for its outcome: (the response body, its HTTP status)."""
    task_id = random_id()
    submitted_at = int(time.time() * 1000)
    command = TaskSubmitted(
        event_id=new_id(),
        occurred_at=submitted_at,
        task_id=task_id,
        agent_id=agent_id,
        app=req.app,
        func=req.func,
        params=req.params,
        timeout_s=req.timeout_s,
        proxy=req.proxy,
        mode="CSNP",
        requested_by=requested_by,
    )
    pending = gw.listener.expect(task_id)
    try:
        gw.producer.produce(
            gw.settings.topic("commands"), key=task_id.encode(), value=CODEC.encode(command)
        )
        gw.producer.poll(0)
        wait_s = req.timeout_s + gw.settings.task_grace_s + REPLY_MARGIN_S
        try:
            outcome = await asyncio.wait_for(asyncio.shield(pending.future), wait_s)
        except TimeoutError:
            raise TaskTimeout(
                f"no result within {wait_s:.0f} s; the task goes on: look it up by id",
                task_id=task_id,
            ) from None
    finally:
        gw.listener.forget(task_id)
    timings = _timings(submitted_at, pending.seen, outcome)
    return _outcome(task_id, outcome, timings), _status(outcome)


def _outcome(task_id: str, event: Event, timings: dict[str, int]) -> dict[str, Any]:
    if isinstance(event, TaskRejected):
        return {
            "task_id": task_id,
            "status": "rejected",
            "error": {"code": event.code, "message": event.reason, "task_id": task_id},
        }
    if isinstance(event, TaskTimedOut):
        return {
            "task_id": task_id,
            "status": "timed_out",
            "worker_flag": -1,
            "worker_message": "no result by the deadline",
            "error": {"code": "408.2", "message": "the task timed out", "task_id": task_id},
        }
    assert isinstance(event, TaskResultReported)
    status = "succeeded" if event.worker_flag == 1 else "failed"
    return {
        "task_id": task_id,
        "status": "timed_out" if event.timed_out else status,
        "worker_flag": event.worker_flag,
        "worker_message": event.worker_message,
        "worker_costtime": event.worker_costtime,
        "truncated": event.truncated,
        "timings_ms": timings,
    }


def _status(event: Event) -> int:
    if isinstance(event, TaskRejected):
        if event.code == AppNotAllowed.code:
            return AppNotAllowed.status
        if event.code == AgentNotAccepted.code:
            return AgentNotAccepted.status
        return 409 if event.code == "414.1" else 404 if event.code == "414.2" else 400
    if isinstance(event, TaskTimedOut):
        return 504
    return 200


def _timings(submitted_at: int, seen: dict[str, int], outcome: Event) -> dict[str, int]:
    """Where an instant call's time went, from the events' own clocks (one host, one clock)."""
    if not isinstance(outcome, TaskResultReported):
        return {}
    accepted = seen.get("TaskAccepted", submitted_at)
    started = outcome.started_at or seen.get("TaskStarted", accepted)
    replied = seen.get("replied", outcome.occurred_at)
    return {
        "gateway_to_dispatch": accepted - submitted_at,
        "dispatch_to_agent": started - accepted,
        "app_run": outcome.worker_costtime,
        "result_to_reply": replied - outcome.occurred_at,
        "total": replied - submitted_at,
    }


async def list_agents(request: Request) -> JSONResponse:
    """Every agent heard from or registered (a pending one too), with its enrolment."""
    gw = gateway(request)
    ids = [a for a in agents.known(gw) if allowed(request, Target(agent=a))]
    return JSONResponse({"agents": [agents.agent_json(gw, a) for a in ids]})


async def get_agent(request: Request) -> JSONResponse:
    gw = gateway(request)
    agent = agents.agent_json(gw, request.path_params["agent_id"])
    if agent is None:
        raise NotFound(f"no agent {request.path_params['agent_id']}")
    return JSONResponse(agent)


async def audit(request: Request) -> JSONResponse:
    gw = gateway(request)
    if request.method == "POST":
        sql = str(parse_json_body(await request.body()).get("sql", ""))
    else:
        sql = request.query_params.get("sql", "")
    columns, rows = await asyncio.to_thread(gw.store.query, sql)
    return JSONResponse({"columns": columns, "rows": [[_plain(v) for v in r] for r in rows]})


def _plain(value: Any) -> Any:
    """ClickHouse values as JSON: numbers, strings and None stay, the rest become text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


async def health(request: Request) -> JSONResponse:
    gw = gateway(request)
    return JSONResponse(
        {"status": "ok", "kafka": gw.settings.bootstrap, "audit": gw.settings.audit_dsn}
    )


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(OPENAPI)


async def on_elves_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ElvesError)
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)


def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(
        {"error": {"code": "500", "message": f"internal error: {type(exc).__name__}"}},
        status_code=500,
    )


class CatchUnexpected:
    """Any exception a route did not turn into an error reply becomes a 500 with its code, logged
    here. Not a Starlette handler for `Exception`: that one replies and then raises again, for
    the server to log, and uvicorn then closes the connection, so a client's next request on it
    failed ("server disconnected"). A reply already under way (a followed output) cannot become
    a 500 any more: its exception goes on to the server, which ends the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:
                raise
            await on_unexpected(Request(scope), exc)(scope, receive, send)


async def on_not_found(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "404.0", "message": f"no route {request.method} {request.url.path}"}},
        status_code=404,
    )


async def on_method(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": "405.0", "message": f"{request.method} not allowed here"}},
        status_code=405,
    )


ROUTES = [
    Route("/health", health),
    Route("/openapi.json", openapi),
    Route("/api/v1/tasks/instant", exec_instant, methods=["POST"]),
    Route("/api/v1/tasks", tasks.list_tasks, methods=["GET"]),
    Route("/api/v1/tasks/{task_id}", tasks.get_task),
    Route("/api/v1/tasks/{task_id}/output", output.task_output),
    Route("/api/v1/agents", list_agents),
    Route("/api/v1/agents/{agent_id}", get_agent),
    Route("/api/v1/agents/{agent_id}/accept", agents.accept, methods=["POST"]),
    Route("/api/v1/agents/{agent_id}/reject", agents.reject, methods=["POST"]),
    Route("/api/v1/agents/{agent_id}/tags", agents.put_tags, methods=["PUT"]),
    Route("/api/v1/audit", audit, methods=["GET", "POST"]),
    Route("/api/v1/queues", queues.create_queue, methods=["POST"]),
    Route("/api/v1/queues", queues.list_queues, methods=["GET"]),
    Route("/api/v1/queues/quick", queues.quick, methods=["POST"]),
    Route("/api/v1/queues/{queue_id}", queues.get_queue),
    Route("/api/v1/queues/{queue_id}/tasks", queues.add_task, methods=["POST"]),
    Route("/api/v1/queues/{queue_id}/tasks/batch", queues.add_tasks, methods=["POST"]),
    Route("/api/v1/queues/{queue_id}/commit", queues.commit, methods=["POST"]),
    Route("/api/v1/queues/{queue_id}/rerun", queues.rerun, methods=["POST"]),
    Route("/api/v1/queues/{queue_id}/stop", queues.stop, methods=["POST"]),
    Route("/api/v1/queues/{queue_id}/limits", queues.set_limits, methods=["POST"]),
    Route("/api/v1/crons", crons.add_cron, methods=["POST"]),
    Route("/api/v1/crons", crons.list_crons, methods=["GET"]),
    Route("/api/v1/crons/{cron_id}", crons.get_cron, methods=["GET"]),
    Route("/api/v1/crons/{cron_id}", crons.delete, methods=["DELETE"]),
    Route("/api/v1/crons/{cron_id}", crons.update, methods=["PATCH"]),
    Route("/api/v1/crons/{cron_id}/pause", crons.pause, methods=["POST"]),
    Route("/api/v1/crons/{cron_id}/resume", crons.resume, methods=["POST"]),
    Route("/api/v1/apps", apps.list_apps, methods=["GET"]),
    Route("/api/v1/apps/{app}", apps.get_app, methods=["GET"]),
    Route("/api/v1/apps/{app}/active", apps.activate, methods=["POST"]),
    Route("/api/v1/apps/{app}/versions/{version}", apps.publish, methods=["POST"]),
    Route("/api/v1/apps/{app}/versions/{version}/package", apps.download, methods=["GET"]),
    Route("/api/v1/keys", keys.create_key, methods=["POST"]),
    Route("/api/v1/keys", keys.list_keys, methods=["GET"]),
    Route("/api/v1/keys/{key_id}", keys.revoke_key, methods=["DELETE"]),
    Route("/api/v1/apps/{app}/permissions", permissions.get_permissions, methods=["GET"]),
    Route("/api/v1/apps/{app}/permissions", permissions.put_permissions, methods=["PUT"]),
]


def create_app(settings: Settings) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ensure_topics(settings)
        store = AuditStore(settings.audit_dsn)
        watcher = Watcher(settings, store)
        listener = Listener(settings)
        prod = producer(settings, "gateway")
        keyring = KeyRing(settings)
        # Every key written before now is folded before the first request is answered.
        await asyncio.to_thread(keyring.start)

        def accepted_key(agent_id: str) -> str | None:
            enrolled = listener.enrolment(agent_id)
            accepted = enrolled is not None and enrolled.status == "accepted"
            return enrolled.public_key if enrolled is not None and accepted else None

        auth = Authenticator(keyring, Sealer.open(settings.center_dir), accepted_key)
        await asyncio.to_thread(listener.start)
        inserts = Inserts(watcher, asyncio.get_running_loop())
        watcher.start()
        app.state.gateway = Gateway(settings, prod, listener, store, watcher, auth, inserts)
        try:
            yield
        finally:
            prod.flush(10)
            keyring.stop()
            listener.stop()
            watcher.stop()
            store.close()

    return Starlette(
        routes=guard(ROUTES),  # every route signed and in scope, but /health and /openapi.json
        lifespan=lifespan,
        middleware=[Middleware(CatchUnexpected)],
        exception_handlers={
            ElvesError: on_elves_error,
            404: on_not_found,
            405: on_method,
        },
    )


def run(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level="warning",
        # Longer than a client's own idle limit (httpx: 5 s, uvicorn's default here too), so
        # the client drops an idle connection first: when the server closed it at the moment a
        # client reused it, the request failed with a read error (bench/instant.py, once).
        timeout_keep_alive=30,
        # An open follow of a task's output (`api/output.py`) lasts until the task ends: at a
        # stop, the gateway waits for open requests this long, then closes them.
        timeout_graceful_shutdown=5,
    )
