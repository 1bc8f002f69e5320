"""What the list endpoints share (`GET /api/v1/queues`, `GET /api/v1/tasks`): a time in the
query, the page asked for, and the apps and agents a list may show the caller.

A list filters by the key's scopes inside its audit statement, so a page is never cut short by
rows the key may not see.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass

from starlette.requests import Request

from elves.api import agents
from elves.api.access import Target, allowed, caller
from elves.api.gateway import gateway
from elves.errors import WrongType
from elves.scopes import ANY

LIST_DEFAULT, LIST_MOST = 50, 500
LIST_SINCE_MS = 24 * 3600 * 1000  # by default, what was made in the last day


def time_param(request: Request, name: str) -> int | None:
    """A time in the query (Unix ms or ISO, UTC unless it says otherwise), or None."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if raw.isdigit():
        return int(raw)
    try:
        when = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise WrongType(f"{name} is Unix milliseconds or an ISO time", field=name) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class Page:
    since: int  # Unix ms: what was made at or after it
    limit: int
    status: str | None


def page(request: Request, statuses: Sequence[str]) -> Page:
    """`?since=&limit=&status=` checked (400, 403.2, naming the field), defaults filled in."""
    query = request.query_params
    since = time_param(request, "since")
    if since is None:
        since = int(time.time() * 1000) - LIST_SINCE_MS
    raw_limit = query.get("limit", str(LIST_DEFAULT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= LIST_MOST:
        raise WrongType(f"limit is a whole number from 1 to {LIST_MOST}", field="limit")
    status = query.get("status")
    if status is not None and status not in statuses:
        raise WrongType(f"status is one of {', '.join(statuses)}", field="status")
    return Page(since, int(raw_limit), status)


def apps_shown(request: Request) -> list[str] | None:
    """The apps a list may show: `?app=` within the key's apps. None: any; []: none."""
    scopes = caller(request).scopes
    apps = None if ANY in scopes.apps else list(scopes.apps)
    if (app := request.query_params.get("app")) is not None:
        apps = [app] if apps is None or app in apps else []
    return apps


def agents_shown(request: Request) -> list[str] | None:
    """The agents a list may show: `?agent=` within the key's agents. None: any; []: none.

    A key's agents may be selectors (`role=web`): they are matched against the agents the
    gateway knows now, as the agents list does, and its plain ids count whether known or not
    (a task for an unknown agent is refused, and still the key's to see)."""
    scopes = caller(request).scopes
    shown: list[str] | None = None
    if ANY not in scopes.agents:
        ids = {a for a in scopes.agents if "=" not in a}
        gw = gateway(request)
        ids.update(a for a in agents.known(gw) if allowed(request, Target(agent=a)))
        shown = sorted(ids)
    if (agent := request.query_params.get("agent")) is not None:
        shown = [agent] if shown is None or agent in shown else []
    return shown
