"""A queue stored as rows: only what changed is written, and the rows give the state back."""

from __future__ import annotations

import json
from typing import Any

from elves.schemas.events import AddQueueTask, Event, QueueTaskReady
from elves.streams.queues import model, rows

from .test_queues_model import NOW, Run, add, commit, create, fail, ok, started, stop


class Table:
    """The queue's rows as the table keeps them: through JSON, written only when changed."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.writes: list[str] = []

    def follow(self, run: Run, step: Any) -> list[Event]:
        """Run one step of `run` and write the rows it changed."""
        before = run.state
        start = len(run.log)
        derived: list[Event] = step() or []
        changed = rows.changed(before, run.state, run.log[start:])
        self.writes = sorted(changed)
        self.rows.update(json.loads(json.dumps(changed)))
        return derived

    def state(self) -> model.QueueState:
        [state] = rows.restore(self.rows.values()).values()
        return state


def tracked(*adds: AddQueueTask) -> tuple[Run, Table]:
    """A queue built step by step with its rows written along."""
    run, table = Run(), Table()
    table.follow(run, lambda: run.command(create()))
    for cmd in adds:
        table.follow(run, lambda cmd=cmd: run.command(cmd))
    return run, table


def test_the_rows_give_back_the_state_after_every_step() -> None:
    run, table = tracked(
        add("a"), add("b", "a"), add("c", "a"), add("d", "b", "c", run_if="all_done")
    )
    assert table.state() == run.state
    for step in (
        lambda: run.command(commit()),
        lambda: run.event(started("a", NOW + 1)),
        lambda: run.outcome(ok("a", NOW + 10)),
        lambda: run.outcome(fail("b", NOW + 20)),
        lambda: run.outcome(ok("c", NOW + 30)),
        lambda: run.outcome(ok("d", NOW + 40)),
    ):
        table.follow(run, step)
        # Equal with its tasks, and so with what is derived though it is not stored.
        assert table.state() == run.state
    assert table.state().status == "failed"


def test_a_stopped_queue_comes_back_stopped() -> None:
    run, table = tracked(add("a"), add("b", "a"))
    table.follow(run, lambda: run.command(commit()))
    table.follow(run, lambda: run.command(stop()))
    assert table.state() == run.state
    assert table.state().status == "stopped"


def test_an_outcome_writes_the_rows_of_the_tasks_it_touches_only() -> None:
    children = [f"t{i}" for i in range(5)]
    run, table = tracked(add("root"), *(add(t, "root") for t in children), add("last", *children))
    table.follow(run, lambda: run.command(commit()))
    table.follow(run, lambda: run.outcome(ok("root", NOW + 1)))
    assert table.writes == sorted(
        [rows.key("q1"), rows.key("q1", "root"), *(rows.key("q1", t) for t in children)]
    )
    table.follow(run, lambda: run.outcome(ok("t0", NOW + 2)))
    assert table.writes == [rows.key("q1", "t0")]  # "last" waits for one fewer: not stored
    table.follow(run, lambda: run.outcome(ok("t0", NOW + 2)))  # a duplicate
    assert table.writes == []


def test_tasks_come_back_in_the_order_they_were_added() -> None:
    run, table = tracked(add("z"), add("y"), add("x"))
    assert list(table.state().tasks) == ["z", "y", "x"]
    derived = table.follow(run, lambda: run.command(commit()))
    assert [e.task_id for e in derived if isinstance(e, QueueTaskReady)] == ["z", "y", "x"]


def test_keys_keep_queues_and_tasks_apart_whatever_the_ids_hold() -> None:
    keys = {rows.key("a/b"), rows.key("a/b", "c"), rows.key("a", "b/c"), rows.key("a")}
    assert len(keys) == 4
