"""A task's output: what its attempts printed while they ran (`TaskOutput`, which agents stream
as it comes, `agent/output.py`), read from the audit.

    GET /api/v1/tasks/{task_id}/output?after=OFFSET      the parts after a cursor, as JSON
    GET /api/v1/tasks/{task_id}/output?follow=true       NDJSON: each part as it reaches the
                                                          audit, then a line with the task's end

A part's `offset` (on the output topic) is the cursor: all of a task's parts share one partition.
A follow ends once the task has ended and the audit holds every part its agent sent before the
result: the parts come first, but on another topic, so the watcher may store them a batch later,
and the result says how many there were (`output_parts`). When a result does not say (an
attempt that the center timed out, whose agent never answered, or an older agent), the follow
gives the audit `SETTLE_S` instead. Either way it ends: every task has a deadline. It looks at
the audit after each of the watcher's inserts, not on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from elves.api.access import task_events
from elves.api.audit import OutputRow
from elves.api.gateway import Gateway, events_of, gateway
from elves.errors import TaskNotFound, WrongType
from elves.schemas.events import AgentCronRan, Event, TaskResultReported
from elves.streams.tasks import model as tasks

POLL_S = 0.5  # the longest a follow waits for the watcher's next insert before it looks anyway
SETTLE_S = 1.5  # after an end whose parts are not counted: three of the watcher's flushes
HURRY_FIRST_S = 2.0  # a follow's first seconds, when the watcher is asked to hurry
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
            "after": after,  # the cursor asked from (-1: the start)
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
    return _end_of(task_id, tasks.fold(events_of(rows)))


def _end_of(task_id: str, state: tasks.TaskState | None) -> dict[str, Any]:
    status = state.status if state is not None else None
    return {"task_id": task_id, "status": status, "ended": status in tasks.FINAL}


def parts_sent(events: Sequence[Event], last_attempt: int) -> dict[int, int] | None:
    """How many output parts each attempt of an ended task sent, by attempt, from its agents'
    results (an agent's cron run is one attempt, reported whole); None when an attempt's count
    is not known (no result, or one that does not say)."""
    sent: dict[int, int] = {}
    for e in events:
        if isinstance(e, TaskResultReported) and e.output_parts is not None:
            sent[e.attempt] = e.output_parts
        elif isinstance(e, AgentCronRan) and e.output_parts is not None:
            sent[1] = e.output_parts
    attempts = range(1, last_attempt + 1)  # none for a task rejected before its first attempt
    if any(a not in sent for a in attempts):
        return None
    return {a: sent[a] for a in attempts}


def all_in(sent: Mapping[int, int], stored: Mapping[int, int]) -> bool:
    """Whether the audit (`stored`: parts by attempt) holds every part the attempts sent."""
    return all(stored.get(attempt, 0) >= n for attempt, n in sent.items())


async def _follow(gw: Gateway, task_id: str, after: int) -> AsyncIterator[bytes]:
    began = time.monotonic()
    ended_at: float | None = None
    end: dict[str, Any] = {}  # the task's end, once the audit has it (an end does not change)
    sent: dict[int, int] | None = None  # what its attempts sent, once ended, if known
    while True:
        inserted = gw.inserts.next()
        # Counted before the parts are read: what was counted is then read too.
        complete = sent is not None and all_in(
            sent, await asyncio.to_thread(gw.store.output_counts, task_id)
        )
        parts: list[OutputRow] = await asyncio.to_thread(gw.store.task_output, task_id, after, PAGE)
        for part in parts:
            yield _line(asdict(part))
            after = part.offset
        if len(parts) == PAGE:
            continue  # more waits already
        if ended_at is not None and (complete or time.monotonic() >= ended_at + SETTLE_S):
            yield _line({**end, "next": after})
            return
        if ended_at is None:
            events = events_of(await asyncio.to_thread(gw.store.task_events, task_id))
            state = tasks.fold(events)
            end = _end_of(task_id, state)
            if state is not None and state.final:
                ended_at = time.monotonic()
                sent = parts_sent(events, state.attempt)
                if sent is not None:
                    continue  # its parts may all be in already
        if ended_at is not None or time.monotonic() - began < HURRY_FIRST_S:
            # What it waits for has happened (or it has just begun, as `elves exec --output`
            # does once its task ended): the watcher hurries. A long follow of a running
            # task's output does not keep the watcher's inserts small.
            gw.watcher.hurry()
        with contextlib.suppress(TimeoutError):  # then it looks anyway
            await asyncio.wait_for(inserted.wait(), POLL_S)


def _line(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"
