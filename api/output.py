"""A task's output: what its attempts printed while they ran (`TaskOutput`, which agents stream
as it comes, `agent/output.py`), read from the audit.

    GET /api/v1/tasks/{task_id}/output?after=OFFSET      the parts after a cursor, as JSON
    GET /api/v1/tasks/{task_id}/output?follow=true       NDJSON: each part as it reaches the
                                                          audit, then a line with the task's end

A part's `offset` (on the output topic) is the cursor: all of a task's parts share one partition.
A follow ends once the task has ended and the audit has had `SETTLE_S` more to store the parts
its agent sent before the result (they come first, on another topic, so the watcher may store
them a batch later). It ends at the task's end: every task has a deadline.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from elves.api.access import task_events
from elves.api.audit import OutputRow
from elves.api.gateway import Gateway, events_of, gateway
from elves.errors import TaskNotFound, WrongType
from elves.streams.tasks import model as tasks

POLL_S = 0.5  # how often a follow asks the audit
SETTLE_S = 1.5  # after the end is in the audit: three of the watcher's flushes (0.5 s each)
PAGE = 1000  # parts a query


async def task_output(request: Request) -> Response:
    task_id = request.path_params["task_id"]
    rows = await task_events(request, task_id)  # the guard read them already
    if not rows:
        raise TaskNotFound(f"no task with id {task_id}", task_id=task_id)
    after = _after(request)
    follow = request.query_params.get("follow", "false").lower()
    if follow not in ("true", "false", "1", "0"):
        raise WrongType("follow is true or false", field="follow")
    gw = gateway(request)
    if follow in ("true", "1"):
        return StreamingResponse(_follow(gw, task_id, after), media_type="application/x-ndjson")
    parts = await asyncio.to_thread(gw.store.task_output, task_id, after, PAGE)
    return JSONResponse(
        {
            **_end(task_id, rows),
            "parts": [asdict(p) for p in parts],
            "next": parts[-1].offset if parts else after,  # the `after` of the next call
            "more": len(parts) == PAGE,
        }
    )


def _after(request: Request) -> int:
    raw = request.query_params.get("after", "-1")
    try:
        return int(raw)
    except ValueError:
        raise WrongType("after is an offset (a whole number) from a reply", field="after") from None


def _end(task_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The task's status, and whether it has ended, from its audit rows."""
    state = tasks.fold(events_of(rows))
    status = state.status if state is not None else None
    return {"task_id": task_id, "status": status, "ended": status in tasks.FINAL}


async def _follow(gw: Gateway, task_id: str, after: int) -> AsyncIterator[bytes]:
    ended_at: float | None = None
    end: dict[str, Any] = {}  # the task's end, once the audit has it (an end does not change)
    while True:
        parts: list[OutputRow] = await asyncio.to_thread(gw.store.task_output, task_id, after, PAGE)
        for part in parts:
            yield _line(asdict(part))
            after = part.offset
        if len(parts) == PAGE:
            continue  # more waits already
        if ended_at is not None and time.monotonic() >= ended_at + SETTLE_S:
            yield _line({**end, "next": after})
            return
        if ended_at is None:
            end = _end(task_id, await asyncio.to_thread(gw.store.task_events, task_id))
            if end["ended"]:
                ended_at = time.monotonic()
        await asyncio.sleep(POLL_S)


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
