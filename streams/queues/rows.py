"""A queue's state as table rows: one header row per queue, one row per task.

An event touches a task or two, so only their rows are written again (and the header's, if it
changed): never the whole queue, whose size would make every event cost as much as the queue.
Rows are JSON objects; what `QueueState.restore` derives is not stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any

from elves.schemas.events import Event
from elves.streams.queues.state import QueueState, QueueTask

Row = dict[str, Any]

HEADER_FIELDS = (
    "queue_id",
    "app",
    "name",
    "created_id",
    "status",
    "committed_id",
    "finished_id",
    "max_parallel",
    "max_failures",
    "max_failure_percent",
    "max_parallel_percent",
    "limits_id",
)
TASK_FIELDS = tuple(f.name for f in fields(QueueTask) if f.name not in ("waiting", "dependents"))


def key(queue_id: str, task_id: str | None = None) -> str:
    """A row's key. The length prefix keeps every key apart whatever the ids hold ("/" too)."""
    head = f"{len(queue_id)}:{queue_id}"
    return head if task_id is None else f"{head}/{task_id}"


def header_row(state: QueueState) -> Row:
    return {name: getattr(state, name) for name in HEADER_FIELDS}


def task_row(queue_id: str, task: QueueTask) -> Row:
    row = {name: getattr(task, name) for name in TASK_FIELDS}
    row["queue_id"] = queue_id  # so that a task row alone says which queue it is of
    return row


def changed(
    old: QueueState | None, new: QueueState | None, events: Iterable[Event]
) -> dict[str, Row]:
    """The rows to write once `events` took the state from `old` to `new`, by key.

    Only the tasks the events name can have changed in what is stored (a task's derived
    `waiting` and `dependents` move with others' events, but are not stored)."""
    if new is None:
        return {}
    rows: dict[str, Row] = {}
    if old is None or header_row(old) != header_row(new):
        rows[key(new.queue_id)] = header_row(new)
    for task_id in {str(getattr(e, "task_id", "")) for e in events}:
        task = new.tasks.get(task_id)
        if task is not None and (old is None or old.tasks.get(task_id) is not task):
            rows[key(new.queue_id, task_id)] = task_row(new.queue_id, task)
    return rows


def restore(rows: Iterable[Mapping[str, Any]]) -> dict[str, QueueState]:
    """Every queue that the rows hold, by queue id (the rows in any order)."""
    headers: dict[str, QueueState] = {}
    tasks: dict[str, list[QueueTask]] = {}
    for row in rows:
        if "task_id" in row:
            # A field a newer version added is absent from older rows: its default stands.
            stored = {name: row[name] for name in TASK_FIELDS if name in row}
            stored["depends_on"] = tuple(row["depends_on"])  # a JSON list
            tasks.setdefault(row["queue_id"], []).append(QueueTask(**stored))
        else:
            headers[row["queue_id"]] = QueueState(**row)
    return {q: QueueState.restore(h, tasks.get(q, ())) for q, h in headers.items()}
