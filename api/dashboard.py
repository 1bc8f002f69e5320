"""`elves dashboard`: a read-only web view of the platform for operators.

One page shows the fleet at a glance (agents with liveness and enrolment, the last day's tasks
and queues, the crons, what agents refused) and refreshes itself; every task, queue and cron
links to its own page (a task's lifecycle, a queue's tasks with results and causes, a cron's
counts, last fire and result, and next fires).

It is a small process of its own, on loopback by default, that reads everything through the
gateway's signed API with the operator's key (`ELVES_KEY_FILE`): the key never reaches a browser,
and the gateway needs no second way to authenticate. It shows what that key may read; a part the
key may not read, or a gateway that does not answer, shows its error code in place of the part,
and the rest of the page still renders. Pages are HTML made on the server, with no script.

The page functions (`overview_page`, `task_page`, `queue_page`, `cron_page`) are pure: data in,
HTML out.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from elves.client import async_client
from elves.config import Settings
from elves.table import (
    AGENT_HEADERS,
    QUEUE_TASK_HEADERS,
    agent_row,
    limits_said,
    queue_task_row,
    when,
)

REFRESH_S = 5
Endpoint = Callable[[Request], Awaitable[HTMLResponse]]
GOOD = frozenset({"TaskSucceeded", "succeeded", "up", "accepted", "active"})
BAD = frozenset(
    {
        "TaskFailed",
        "TaskTimedOut",
        "TaskRejected",
        "failed",
        "timed_out",
        "rejected",
        "down",
        "stopped",
        "skipped",
        "cancelled",
    }
)

# The audit's answers for the overview (the tasks and queues come from their lists).
REFUSALS = """
SELECT toString(toDateTime(occurred_at)) AS at, agent_id,
       JSONExtractString(payload, 'code') AS code,
       JSONExtractString(payload, 'reason') AS reason, task_id
FROM events WHERE type IN ('DispatchRefused', 'UnverifiedDispatch')
ORDER BY occurred_at DESC LIMIT 10
"""
LAST_HOUR = """
SELECT type, count() FROM events
WHERE type IN ('TaskSucceeded', 'TaskFailed', 'TaskTimedOut', 'TaskRejected')
  AND occurred_at > now() - INTERVAL 1 HOUR
GROUP BY type ORDER BY type
"""


# --- HTML, pure --------------------------------------------------------------------------------


class Markup(str):
    """Text that is already HTML: `table` and `page` put it in as it is."""


def esc(value: object) -> Markup:
    """Anything shown comes from agents, apps and users: escaped, always."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value)))


def link(href: str, text: object) -> Markup:
    return Markup(f'<a href="{html.escape(href)}">{esc(text)}</a>')


def page_link(kind: str, ident: str | None) -> Markup:
    """A link to a task's, queue's or cron's page (`kind`: tasks, queues, crons); nothing for
    no id. The id is one path segment, whatever it holds."""
    return link(f"/{kind}/{quote(ident, safe='')}", ident) if ident else Markup("")


def badge(word: object, kind: str = "") -> Markup:
    """A status word, coloured by whether it is good news (or as `kind` says)."""
    text = "" if word is None else str(word)
    kind = kind or ("good" if text in GOOD else "bad" if text in BAD else "plain")
    return Markup(f'<span class="{kind}">{esc(text)}</span>')


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str = "none") -> Markup:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        body = f'<tr><td colspan="{len(headers)}" class="plain">{esc(empty)}</td></tr>'
    return Markup(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def section(title: str, content: Markup) -> Markup:
    return Markup(f"<section><h2>{esc(title)}</h2>{content}</section>")


def page(title: str, body: Iterable[Markup], refresh_s: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"{meta}<title>{esc(title)} - Elves</title><style>{STYLE}</style></head>"
        f'<body><header><a href="/">Elves</a> <span class="plain">{esc(title)}</span></header>'
        + "".join(body)
        + "</body></html>"
    )


STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
header { font-size: 1.3em; margin-bottom: 1em; } header a { font-weight: bold; }
h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
table { border-collapse: collapse; } td, th { padding: .2em .8em .2em 0; text-align: left; }
th { border-bottom: 1px solid #ccc; } td { border-bottom: 1px solid #eee; vertical-align: top; }
.good { color: #1a7f37; } .bad { color: #cf222e; font-weight: bold; } .plain { color: #666; }
.error { color: #cf222e; } a { color: #0550ae; text-decoration: none; }
pre { background: #f6f8fa; padding: .6em; white-space: pre-wrap; max-width: 100em; }
"""


@dataclass(frozen=True)
class Part:
    """One part of a page as the gateway answered it: its JSON, or its error."""

    data: Any = None
    error: str = ""
    status: int = 200  # the gateway's HTTP status (502: it did not answer)


def _shown(part: Part, render: Callable[[Any], Markup]) -> Markup:
    if part.error:
        return Markup(f'<p class="error">{esc(part.error)}</p>')
    return render(part.data)


def _agents(data: dict[str, Any]) -> Markup:
    rows = []
    for a in data["agents"]:
        agent_id, status, enrolment, *rest = agent_row(a)
        # A package that did not install: the version before still runs (rollout.py).
        errors = "; ".join(f"{k}: {v}" for k, v in sorted(a.get("install_errors", {}).items()))
        rows.append([agent_id, badge(status), badge(enrolment), *rest, badge(errors, "bad")])
    return table([*AGENT_HEADERS, "not installed"], rows, "no agent yet")


def _rows(data: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = data["rows"]
    return rows


def _tasks(data: dict[str, Any]) -> Markup:
    """GET /api/v1/tasks: each task's status is its fold's, as on its own page."""
    rows = [
        [
            page_link("tasks", t["task_id"]),
            badge(t["status"]),
            when(t["created_at"]),
            f"{t['app']}.{t['func']}",
            t["agent_id"],
        ]
        for t in data["tasks"]
    ]
    return table(["task", "status", "made (UTC)", "app.func", "agent"], rows, "no task today")


def _queues(data: dict[str, Any]) -> Markup:
    """GET /api/v1/queues: the status is the queue's own (open, committed, running, ...)."""
    rows = [
        [
            page_link("queues", q["queue_id"]),
            q["app"],
            q["name"],
            when(q["created_at"]),
            q["tasks"],
            badge(q["status"]),
        ]
        for q in data["queues"]
    ]
    headers = ["queue", "app", "name", "created (UTC)", "tasks", "status"]
    return table(headers, rows, "no queue today")


def _crons(data: dict[str, Any]) -> Markup:
    rows = [
        [
            page_link("crons", c["cron_id"]),
            c.get("name") or "",
            c.get("agent_id") or c.get("selector") or "",
            f"{c['app']}.{c['func']}",
            f"{c['rule']} ({c.get('timezone') or 'UTC'})",
            c["mode"],
            badge(c["status"]),
            when(c.get("next_at")),
            badge(c.get("last_status") or ""),
        ]
        for c in data["crons"]
    ]
    headers = ["cron", "name", "target", "app.func", "rule", "mode", "status", "next", "last"]
    return table(headers, rows, "no cron")


def _refusals(data: dict[str, Any]) -> Markup:
    rows = [
        [at, agent, badge(code, "bad"), reason, page_link("tasks", t)]
        for at, agent, code, reason, t in _rows(data)
    ]
    return table(["at (UTC)", "agent", "code", "reason", "task"], rows, "nothing refused")


def _last_hour(data: dict[str, Any]) -> Markup:
    counts = {str(kind): int(n) for kind, n in _rows(data)}
    words = [
        f"{counts.get(kind, 0)} {word}"
        for kind, word in (
            ("TaskSucceeded", "succeeded"),
            ("TaskFailed", "failed"),
            ("TaskTimedOut", "timed out"),
            ("TaskRejected", "rejected"),
        )
    ]
    return Markup(f"<p>{esc(', '.join(words))}</p>")


def overview_page(parts: dict[str, Part]) -> str:
    """The fleet at a glance; `parts` by name: agents, last_hour, tasks, queues, crons,
    refusals (each the gateway's JSON for it, or its error)."""
    body = [
        section("Agents", _shown(parts["agents"], _agents)),
        section("Outcomes in the last hour", _shown(parts["last_hour"], _last_hour)),
        section("Recent tasks", _shown(parts["tasks"], _tasks)),
        section("Recent queues", _shown(parts["queues"], _queues)),
        section("Crons", _shown(parts["crons"], _crons)),
        section("Refused by agents", _shown(parts["refusals"], _refusals)),
    ]
    return page("overview", body, REFRESH_S)


def task_page(task_id: str, part: Part, output: Part | None = None) -> str:
    """A task's state, lifecycle and output; the page reloads itself until the task ends."""

    def render(data: dict[str, Any]) -> Markup:
        state = data.get("state") or {}
        fields = table(["field", "value"], [[k, v] for k, v in sorted(state.items())])
        events = table(
            ["time (UTC)", "event", "topic"],
            [[e["occurred_at"], badge(e["type"]), e["topic"]] for e in data["lifecycle"]],
        )
        status = badge(state.get("status", "no outcome yet"))
        return Markup(f"<p>status {status}</p>{fields}<h2>Lifecycle</h2>{events}")

    body = [_shown(part, render)]
    if output is not None:
        body.append(section("Output", _shown(output, _output)))
    ended = output is None or output.error or output.data.get("ended")
    return page(f"task {task_id}", body, None if ended else REFRESH_S)


def _output(data: dict[str, Any]) -> Markup:
    """What the task printed, stderr in red: a page of it (the gateway's, 1,000 parts), with
    links to the next page and back to the first (`?after=`, the gateway's cursor)."""
    later = data.get("after", -1) >= 0  # not the first page
    if not data["parts"]:
        none = "nothing more printed" if later else "nothing printed (its result is above)"
        return Markup(f'<p class="plain">{none}</p>')
    text = "".join(_printed(p["stream"], p["data"]) for p in data["parts"])
    links = []
    if later:
        links.append('<a href="?">from the start</a>')
    if data["more"]:
        links.append(f'<a href="?after={int(data["next"])}">next parts</a>')
    more = f'<p class="plain">{" · ".join(links)}</p>' if links else ""
    return Markup(f"<pre>{text}</pre>{more}")


def _printed(stream: str, data: str) -> str:
    return f'<span class="error">{esc(data)}</span>' if stream == "stderr" else esc(data)


def queue_page(queue_id: str, part: Part) -> str:
    def render(data: dict[str, Any]) -> Markup:
        rows = []
        for t in data["tasks"]:
            task_id, status, *rest = queue_task_row(t)
            rows.append([page_link("tasks", task_id), badge(status), *rest])
        limits = esc(limits_said(data))
        head = Markup(f"<p>app {esc(data['app'])}, status {badge(data['status'])}{limits}</p>")
        return Markup(head + table(QUEUE_TASK_HEADERS, rows, "no task"))

    return page(f"queue {queue_id}", [_shown(part, render)])


def cron_page(cron_id: str, part: Part) -> str:
    def render(data: dict[str, Any]) -> Markup:
        target = data.get("agent_id") or f"selector {data.get('selector')}"
        head = Markup(
            f"<p>{esc(data['app'])}.{esc(data['func'])} on {esc(target)}, rule"
            f" {esc(data['rule'])} ({esc(data.get('timezone') or 'UTC')}), {esc(data['mode'])},"
            f" status {badge(data['status'])}; misfire {esc(data.get('misfire'))},"
            f" overlap {esc(data.get('overlap'))}</p>"
        )
        counts = table(list(data["counts"]), [list(data["counts"].values())])
        fire, result = data.get("last_fire") or {}, data.get("last_result") or {}
        last = table(
            ["", "scheduled / ended (UTC)", "task", "status", "message"],
            [
                [
                    "last fire",
                    when(fire.get("scheduled_at")),
                    page_link("tasks", fire.get("task_id")),
                    badge(fire.get("status")),
                    "",
                ],
                [
                    "last result",
                    when(result.get("ended_at")),
                    page_link("tasks", result.get("task_id")),
                    badge(result.get("status")),
                    result.get("message", ""),
                ],
            ],
        )
        upcoming = table(["next fires (UTC)"], [[when(at)] for at in data["next_fires"]], "none")
        return Markup(head + counts + Markup("<h2>Last</h2>") + last + upcoming)

    return page(f"cron {cron_id}", [_shown(part, render)])


# --- reading the gateway -----------------------------------------------------------------------


async def fetch(gateway: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Part:
    """One call to the gateway; its error, with its code, if it has one."""
    try:
        reply = await gateway.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        return Part(
            error=f"[503.1] the gateway did not answer ({gateway.base_url}): {exc}", status=502
        )
    try:
        data = reply.json()
    except ValueError:
        data = None
    if reply.status_code != 200 or data is None:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        code = error.get("code", reply.status_code)
        message = error.get("message") or reply.text[:200]
        return Part(error=f"[{code}] {message}", status=reply.status_code)
    return Part(data)


def create_app(settings: Settings) -> Starlette:
    gateway = async_client(settings, timeout=10.0)

    def sql(query: str) -> Coroutine[Any, Any, Part]:
        return fetch(gateway, "POST", "/api/v1/audit", json={"sql": query})

    async def overview(request: Request) -> HTMLResponse:
        names = ("agents", "last_hour", "tasks", "queues", "crons", "refusals")
        parts = await asyncio.gather(
            fetch(gateway, "GET", "/api/v1/agents"),
            sql(LAST_HOUR),
            fetch(gateway, "GET", "/api/v1/tasks", params={"limit": 25}),
            fetch(gateway, "GET", "/api/v1/queues", params={"limit": 10}),
            fetch(gateway, "GET", "/api/v1/crons"),
            sql(REFUSALS),
        )
        return HTMLResponse(overview_page(dict(zip(names, parts, strict=True))))

    async def task_detail(request: Request) -> HTMLResponse:
        path = f"/api/v1/tasks/{quote(request.path_params['id'], safe='')}"
        # A page of the output after a cursor; the gateway judges it (400 with its code).
        after = request.query_params.get("after")
        part, output = await asyncio.gather(
            fetch(gateway, "GET", path),
            fetch(gateway, "GET", f"{path}/output", params={"after": after} if after else None),
        )
        shown = output if part.status == 200 else None
        return HTMLResponse(task_page(request.path_params["id"], part, shown), part.status)

    def detail(api: str, render: Callable[[str, Part], str]) -> Endpoint:
        """The page of one task, queue or cron: the gateway's `api/<id>`, with its status."""

        async def endpoint(request: Request) -> HTMLResponse:
            ident = request.path_params["id"]
            part = await fetch(gateway, "GET", f"{api}/{quote(ident, safe='')}")
            return HTMLResponse(render(ident, part), status_code=part.status)

        return endpoint

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "gateway": settings.base_url})

    return Starlette(
        routes=[
            Route("/", overview),
            # `path`: an id may hold a slash (the links quote it; the path arrives unquoted).
            Route("/tasks/{id:path}", task_detail),
            Route("/queues/{id:path}", detail("/api/v1/queues", queue_page)),
            Route("/crons/{id:path}", detail("/api/v1/crons", cron_page)),
            Route("/health", health),
        ],
        lifespan=lifespan,
    )


def run(settings: Settings) -> None:
    import uvicorn

    uvicorn.run(
        create_app(settings),
        host=settings.dashboard_host,
        port=settings.dashboard_port,
        log_level="warning",
    )
