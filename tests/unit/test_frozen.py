"""`evolve` makes what `dataclasses.replace` makes, for the classes it accepts."""

from __future__ import annotations

import dataclasses

import pytest

from elves.frozen import evolve
from elves.streams.queues.state import QueueTask
from elves.streams.tasks.model import TaskState


def _task() -> QueueTask:
    return QueueTask("t1", "a1", "f", "{}", 60, "NP", ("t0",), "all_succeeded", 2, 1, None, "e1")


def test_evolve_equals_replace_and_leaves_the_original() -> None:
    task = _task()
    changes = {"status": "succeeded", "worker_flag": 0, "worker_message": "ok", "cause": ""}
    made = evolve(task, **changes)
    assert made == dataclasses.replace(task, **changes)  # type: ignore[arg-type]
    assert made is not task and task.status == "pending" and task.worker_flag is None
    assert hash(made) == hash(dataclasses.replace(task, **changes))  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.status = "failed"  # type: ignore[misc]
    state = TaskState("t1", "a1", "app", "f", "accepted")
    assert evolve(state, status="running", attempt=1) == dataclasses.replace(
        state, status="running", attempt=1
    )


def test_evolve_refuses_unknown_fields_and_classes_it_cannot_copy() -> None:
    with pytest.raises(TypeError, match="no field stauts"):
        evolve(_task(), stauts="succeeded")

    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int

        def __post_init__(self) -> None:
            if self.n < 0:
                raise ValueError("negative")

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        n: int

    with pytest.raises(TypeError, match="plain dataclasses only"):
        evolve(Checked(1), n=-1)
    with pytest.raises(TypeError, match="has slots"):
        evolve(Slotted(1), n=2)
