"""Running an ended queue again, as a new queue: which tasks, under which ids, after which.

Pure: the gateway folds the old queue, asks `plan` what to add to the new one, and sends the
adds (`api/queues.py`). The old queue is not touched: its log stays what happened.

- `only="all"` runs every task again; `only="unsuccessful"` the tasks that did not succeed
  (failed, timed out, skipped, cancelled): what a failure or a stop left undone.
- A task keeps its agent, function, parameters, timeout, mode, condition and retries. The parts of
  a selector task run again on the agents they ran on, each as a task of its own.
- A dependency on a task that runs again points at its new id. One on a task that does not (it
  succeeded) is met already, and dropped.
- Task ids are unique across queues, so each gets a new one: `<old id>~<the new queue's first 8
  characters>`. A task that ran again before keeps its first name (`build~1a2b3c4d`, not
  `build~1a2b3c4d~5e6f7a8b`), so the ids stay readable over many runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from elves.streams.queues.state import QueueState, QueueTask

Only = Literal["all", "unsuccessful"]
ONLY: tuple[str, ...] = get_args(Only)
SUFFIX_LENGTH = 8
_HEX = frozenset("0123456789abcdef")


@dataclass(frozen=True)
class Rerun:
    """One task of the new queue: the old task it repeats, its new id and dependencies."""

    task: QueueTask
    task_id: str
    depends_on: tuple[str, ...]


def plan(state: QueueState, only: Only, new_queue_id: str) -> list[Rerun]:
    """The tasks of `state` to run again in the queue `new_queue_id`, in the order they were
    added (so each comes after what it depends on); empty when there is none."""
    suffix = new_queue_id[:SUFFIX_LENGTH]
    chosen = [t for t in state.tasks.values() if only == "all" or t.status != "succeeded"]
    ids = {t.task_id: new_task_id(t.task_id, suffix) for t in chosen}
    return [
        Rerun(t, ids[t.task_id], tuple(ids[d] for d in t.depends_on if d in ids)) for t in chosen
    ]


def new_task_id(old: str, suffix: str) -> str:
    """`old` with the new queue's suffix, in place of a suffix an earlier run gave it."""
    base, sep, tail = old.rpartition("~")
    if sep and base and len(tail) == SUFFIX_LENGTH and set(tail) <= _HEX:
        old = base
    return f"{old}~{suffix}"
