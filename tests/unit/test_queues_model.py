"""The queue fold, without Kafka."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    QueueCommandRejected,
    QueueCommitted,
    QueueCreated,
    QueueFinished,
    QueueTaskAdded,
    QueueTaskCancelled,
    QueueTaskReady,
    QueueTaskRetryScheduled,
    QueueTaskRunning,
    QueueTaskSkipped,
    RetryDue,
    StopQueue,
    TaskFailed,
    TaskRejected,
    TaskStarted,
    TaskSucceeded,
    TaskTimedOut,
)
from elves.streams.queues import model, rows
from elves.streams.queues import state as state_module
from elves.streams.tasks.model import Limits

LIMITS = Limits(grace_ms=5000, max_params_bytes=1000)
NOW = 1_700_000_000_000


def create(queue_id: str = "q1") -> CreateQueue:
    return CreateQueue(f"create-{queue_id}", NOW, queue_id, "apptest", "nightly")


def add(task_id: str, *deps: str, **kw: object) -> AddQueueTask:
    base: dict[str, object] = dict(
        event_id=f"add-{task_id}",
        occurred_at=NOW,
        queue_id="q1",
        task_id=task_id,
        agent_id="a1",
        func="helloword",
        params='{"my": "toryzen"}',
        timeout_s=10,
        depends_on=deps,
    )
    base.update(kw)
    return AddQueueTask(**base)  # type: ignore[arg-type]


def commit(event_id: str = "commit-1") -> CommitQueue:
    return CommitQueue(event_id, NOW, "q1")


def stop(event_id: str = "stop-1") -> StopQueue:
    return StopQueue(event_id, NOW, "q1")


def ok(task_id: str, at: int, attempt: int = 1) -> TaskSucceeded:
    return TaskSucceeded(f"ok-{task_id}-{attempt}", at, task_id, attempt, "a1", 1, "done", 12)


def fail(task_id: str, at: int, attempt: int = 1) -> TaskFailed:
    return TaskFailed(f"fail-{task_id}-{attempt}", at, task_id, attempt, "a1", 0, "nope", 7)


def started(task_id: str, at: int, attempt: int = 1) -> TaskStarted:
    return TaskStarted(f"start-{task_id}-{attempt}", at, task_id, attempt, "a1", 4242)


class Run:
    """The wiring in miniature: decide on an input, then fold the input and what it derived."""

    def __init__(self) -> None:
        self.state: model.QueueState | None = None
        self.log: list[Event] = []

    def _take(self, source: Event, derived: list[Event]) -> list[Event]:
        for event in [source, *derived]:
            self.state = model.apply(self.state, event)
            self.log.append(event)
        return derived

    def command(self, cmd: model.Command, now: int = NOW, **kw: object) -> list[Event]:
        return self._take(cmd, model.decide(self.state, cmd, now, limits=LIMITS, **kw))  # type: ignore[arg-type]

    def outcome(self, outcome: model.Outcome) -> list[Event]:
        return self._take(outcome, model.decide_outcome(self.state, outcome))

    def fact(self, fact: RetryDue) -> list[Event]:
        return self._take(fact, model.retry_due(self.state, fact))

    def start(self, started: TaskStarted) -> list[Event]:
        return self._take(started, model.running(self.state, started))

    def event(self, event: Event) -> None:
        self._take(event, [])

    def task(self, task_id: str) -> model.QueueTask:
        assert self.state is not None
        return self.state.tasks[task_id]

    def statuses(self) -> dict[str, str]:
        assert self.state is not None
        return {t.task_id: t.status for t in self.state.tasks.values()}


def queue(*adds: AddQueueTask, committed: bool = True) -> Run:
    run = Run()
    run.command(create())
    for cmd in adds:
        [added] = run.command(cmd)
        assert isinstance(added, QueueTaskAdded), added
    if committed:
        run.command(commit())
    return run


def diamond(**d_kw: object) -> Run:
    return queue(add("a"), add("b", "a"), add("c", "a"), add("d", "b", "c", **d_kw))


def ready(events: list[Event]) -> list[tuple[str, int]]:
    return [(e.task_id, e.attempt) for e in events if isinstance(e, QueueTaskReady)]


def rejection(events: list[Event]) -> str:
    [event] = events
    assert isinstance(event, QueueCommandRejected), event
    return event.code


def test_commit_readies_every_root_at_once() -> None:
    run = queue(add("a"), add("b"), add("c", "a"), committed=False)
    events = run.command(commit())
    assert isinstance(events[0], QueueCommitted)
    assert ready(events) == [("a", 1), ("b", 1)]
    assert run.statuses() == {"a": "ready", "b": "ready", "c": "pending"}
    assert run.state is not None and run.state.status == "committed"
    run.event(started("a", NOW + 1))
    assert run.state.status == "running" and run.task("a").status == "running"


def test_a_ready_task_that_started_is_running_in_the_queues_own_log() -> None:
    run = queue(add("a"), add("b", "a"))
    [event] = run.start(started("a", NOW + 600))
    assert isinstance(event, QueueTaskRunning)
    assert (event.queue_id, event.task_id, event.attempt) == ("q1", "a", 1)
    assert event.occurred_at == NOW + 600  # when its agent saw it run
    assert run.statuses() == {"a": "running", "b": "pending"}
    # The queue's own event alone (what the audit's view folds) says the same.
    view = model.fold(e for e in run.log if not isinstance(e, TaskStarted))
    assert view is not None and view.tasks["a"].status == "running"


def test_a_start_that_does_not_fit_says_nothing() -> None:
    run = queue(add("a"), add("b", "a"))
    assert run.start(started("a", NOW + 600)) != []
    assert run.start(started("a", NOW + 601)) == []  # said once: a runs already
    assert run.start(started("a", NOW + 602, attempt=2)) == []  # not its attempt
    assert run.start(started("b", NOW + 603)) == []  # b is pending, never dispatched
    assert run.start(started("z", NOW + 604)) == []  # not this queue's
    run.outcome(ok("a", NOW + 700))
    run.outcome(ok("b", NOW + 800))
    assert run.start(started("b", NOW + 900)) == []  # the queue has ended


def test_diamond_runs_b_and_c_together_after_a_and_d_after_both() -> None:
    run = diamond()
    assert run.statuses() == {"a": "ready", "b": "pending", "c": "pending", "d": "pending"}
    assert ready(run.outcome(ok("a", NOW + 10))) == [("b", 1), ("c", 1)]
    assert run.outcome(ok("b", NOW + 20)) == []  # d still waits for c
    assert ready(run.outcome(ok("c", NOW + 30))) == [("d", 1)]
    [finished] = run.outcome(ok("d", NOW + 40))
    assert isinstance(finished, QueueFinished) and finished.status == "succeeded"
    assert run.state is not None and run.state.status == "succeeded"
    assert set(run.statuses().values()) == {"succeeded"}
    assert run.task("d").worker_message == "done" and run.task("d").worker_costtime == 12


def test_a_failing_skips_b_c_and_d_with_the_cause_and_the_queue_fails() -> None:
    run = diamond()
    events = run.outcome(fail("a", NOW + 10))
    skipped = {e.task_id: e.cause for e in events if isinstance(e, QueueTaskSkipped)}
    assert skipped == {
        "b": "dependency a failed",
        "c": "dependency a failed",
        "d": "dependency b was skipped",
    }
    assert isinstance(events[-1], QueueFinished) and events[-1].status == "failed"
    assert run.statuses() == {"a": "failed", "b": "skipped", "c": "skipped", "d": "skipped"}
    assert run.task("d").cause == "dependency b was skipped"
    assert run.state is not None and run.state.status == "failed"


def test_a_dependent_is_skipped_as_soon_as_one_dependency_fails() -> None:
    run = diamond()
    run.outcome(ok("a", NOW + 10))
    [skipped] = run.outcome(fail("b", NOW + 20))  # c still runs: d can no longer run anyway
    assert isinstance(skipped, QueueTaskSkipped) and skipped.task_id == "d"
    [finished] = run.outcome(ok("c", NOW + 30))
    assert isinstance(finished, QueueFinished) and finished.status == "failed"


def test_run_if_all_done_runs_d_anyway_once_every_dependency_ended() -> None:
    run = diamond(run_if="all_done")
    events = run.outcome(fail("a", NOW + 10))
    assert ready(events) == [("d", 1)]
    assert run.statuses() == {"a": "failed", "b": "skipped", "c": "skipped", "d": "ready"}
    [finished] = run.outcome(ok("d", NOW + 20))
    assert isinstance(finished, QueueFinished) and finished.status == "failed"

    waits = diamond(run_if="all_done")
    waits.outcome(ok("a", NOW + 10))
    assert waits.outcome(fail("b", NOW + 20)) == []  # c has not ended yet
    assert ready(waits.outcome(ok("c", NOW + 30))) == [("d", 1)]


def test_a_task_that_fails_once_is_retried_after_its_backoff_and_then_succeeds() -> None:
    run = queue(add("a", max_attempts=3, backoff_s=10), add("b", "a"))
    run.event(started("a", NOW + 5))
    failed_at = NOW + 100
    [scheduled] = run.outcome(fail("a", failed_at))
    assert isinstance(scheduled, QueueTaskRetryScheduled)
    assert (scheduled.attempt, scheduled.due_at) == (2, failed_at + 10_000)
    assert run.task("a").status == "retrying" and run.task("a").cause == "attempt 1 failed"
    assert model.due_retries(run.state, failed_at + 9_999) == []
    [due] = model.due_retries(run.state, failed_at + 10_000)
    assert due.attempt == 2
    assert model.due_retries(run.state, failed_at + 10_000) == [due]  # same fact, same id
    assert ready(run.fact(due)) == [("a", 2)]
    assert model.retry_due(run.state, due) == []  # the clock said it twice
    assert run.outcome(ok("a", NOW + 200, attempt=1)) == []  # the old attempt's late result
    assert ready(run.outcome(ok("a", failed_at + 10_500, attempt=2))) == [("b", 1)]
    assert run.task("a").status == "succeeded" and run.task("a").attempt == 2


def test_backoff_doubles_with_each_attempt() -> None:
    run = queue(add("a", max_attempts=3, backoff_s=10))
    run.outcome(fail("a", NOW + 100))
    [due] = model.due_retries(run.state, NOW + 10_100)
    run.fact(due)
    [scheduled] = run.outcome(fail("a", NOW + 20_000, attempt=2))
    assert isinstance(scheduled, QueueTaskRetryScheduled)
    assert (scheduled.attempt, scheduled.due_at) == (3, NOW + 20_000 + 20_000)


def test_without_backoff_the_retry_is_ready_at_once() -> None:
    run = queue(add("a", max_attempts=2))
    scheduled, again = run.outcome(fail("a", NOW + 100))
    assert isinstance(scheduled, QueueTaskRetryScheduled) and scheduled.due_at == NOW + 100
    assert ready([again]) == [("a", 2)]
    assert model.due_retries(run.state, NOW + 10_000) == []


def test_the_last_attempt_timing_out_ends_the_task_and_skips_its_dependents() -> None:
    run = queue(add("a", max_attempts=2), add("b", "a"))
    run.outcome(TaskTimedOut("to-1", NOW + 100, "a", 1, "a1", NOW + 99))
    events = run.outcome(TaskTimedOut("to-2", NOW + 200, "a", 2, "a1", NOW + 199))
    assert [type(e) for e in events] == [QueueTaskSkipped, QueueFinished]
    assert run.statuses() == {"a": "timed_out", "b": "skipped"}
    assert run.task("b").cause == "dependency a timed out"
    assert run.task("a").cause == "attempt 2 timed out"


def test_a_task_the_task_side_refuses_fails_instead_of_waiting_forever() -> None:
    run = queue(add("a"), add("b", "a"))
    refused = TaskRejected("rj", NOW + 1, "a", "a1", "414.1", "agent offline: a1")
    events = run.outcome(refused)
    assert [type(e) for e in events] == [QueueTaskSkipped, QueueFinished]
    assert run.task("a").status == "failed"
    assert run.task("a").cause == "attempt 1 refused: [414.1] agent offline: a1"


def test_a_cycle_is_rejected() -> None:
    run = queue(add("a"), committed=False)
    assert rejection(run.command(add("b", "a", "b"))) == "412.5"
    # A cycle through other tasks needs an edge to a task not yet added: that is unknown.
    assert rejection(run.command(add("c", "d"))) == "412.4"
    assert run.statuses() == {"a": "pending"}


def test_an_unknown_dependency_is_rejected_before_any_task_is_added() -> None:
    run = queue(add("a"), committed=False)
    [event] = run.command(add("b", "a", "zz"))
    assert isinstance(event, QueueCommandRejected)
    assert (event.code, event.command, event.command_id) == ("412.4", "AddQueueTask", "add-b")
    assert "zz" in event.reason
    assert "b" not in run.statuses()


def test_tasks_of_another_queue_are_rejected() -> None:
    run = queue(add("a"), committed=False)
    elsewhere = {"x": "q2", "a": "q1"}
    assert rejection(run.command(add("b", "a", "x"), task_queues=elsewhere)) == "412.6"
    assert rejection(run.command(add("x"), task_queues=elsewhere)) == "412.6"
    [added] = run.command(add("b", "a"), task_queues=elsewhere)
    assert isinstance(added, QueueTaskAdded)


def test_adding_after_commit_and_committing_twice_are_rejected() -> None:
    run = queue(add("a"))
    assert rejection(run.command(add("b"))) == "412.2"
    assert rejection(run.command(commit("commit-2"))) == "412.2"


def test_an_empty_queue_cannot_commit() -> None:
    run = queue(committed=False)
    assert rejection(run.command(commit())) == "412.7"
    assert run.state is not None and run.state.status == "open"


def test_commands_for_an_unknown_queue_are_rejected() -> None:
    for cmd in (add("a"), commit(), stop()):
        assert rejection(model.decide(None, cmd, NOW, limits=LIMITS)) == "412.1"


def test_duplicate_ids_and_a_second_create_are_rejected() -> None:
    run = queue(add("a"), committed=False)
    assert rejection(run.command(add("a", event_id="add-a-again"))) == "412.8"
    assert rejection(run.command(CreateQueue("create-again", NOW, "q1", "apptest"))) == "412.2"


def test_bad_fields_are_rejected_with_stable_codes() -> None:
    run = queue(committed=False)
    cases = {
        "403.1": add("a", func=""),
        "403.2": add("a", timeout_s=0),
        "403.3": add("a", params='{"x": "' + "y" * 2000 + '"}'),
        "403.4": add("a", params="[1, 2]"),
    }
    for code, cmd in cases.items():
        assert rejection(run.command(cmd)) == code
    for bad in ({"mode": "X"}, {"run_if": "any"}, {"max_attempts": 0}, {"backoff_s": -1}):
        assert rejection(run.command(add("a", **bad))) == "403.2", bad
    assert rejection(run.command(add("b", "a", "a"))) == "403.2"
    assert rejection(model.decide(None, CreateQueue("c2", NOW, "q2", ""), NOW, limits=LIMITS))
    assert run.statuses() == {}


def test_stop_cancels_pending_tasks_and_kills_live_ones() -> None:
    run = queue(add("a"), add("b"), add("c", "a"))
    run.event(started("a", NOW + 5))  # a runs; b was dispatched, not started; c waits
    events = run.command(stop(), now=NOW + 10)
    cancelled = {e.task_id: e.was_running for e in events if isinstance(e, QueueTaskCancelled)}
    assert cancelled == {"a": True, "b": True, "c": False}
    assert isinstance(events[-1], QueueFinished) and events[-1].status == "stopped"
    assert set(run.statuses().values()) == {"cancelled"}
    assert run.state is not None and run.state.status == "stopped"
    assert run.outcome(fail("a", NOW + 20)) == []  # the killed worker's report changes nothing
    assert rejection(run.command(stop("stop-2"))) == "412.2"


def test_stop_of_an_open_queue_cancels_everything() -> None:
    run = queue(add("a"), committed=False)
    events = run.command(stop())
    assert [type(e) for e in events] == [QueueTaskCancelled, QueueFinished]
    assert rejection(run.command(commit())) == "412.2"


def test_a_redelivered_command_decides_nothing_new() -> None:
    run = queue(add("a"), committed=False)
    assert run.command(create()) == []
    assert run.command(add("a")) == []
    run.command(commit())
    assert run.command(add("a")) == []
    assert run.command(commit()) == []
    run.command(stop())
    assert run.command(stop()) == []


def test_duplicate_and_late_events_change_nothing() -> None:
    run = diamond()
    run.event(started("a", NOW + 5))
    run.outcome(ok("a", NOW + 10))
    once = run.state
    assert run.outcome(ok("a", NOW + 10)) == []
    assert run.outcome(fail("a", NOW + 11)) == []  # a conflicting report of the same attempt
    assert run.outcome(ok("zz", NOW + 12)) == []  # not a task of this queue
    run.event(started("a", NOW + 5))
    run.event(QueueTaskReady("stray", NOW + 13, "q1", "d", 2))  # d never had an attempt 1
    assert run.state == once
    twice = model.fold(e for e in run.log for _ in range(2))
    assert twice == run.state


def test_fold_reproduces_the_state_and_replays_derive_the_same_events() -> None:
    def scenario() -> Run:
        run = diamond()
        run.outcome(ok("a", NOW + 10))
        run.outcome(fail("b", NOW + 20))
        run.outcome(ok("c", NOW + 30))
        return run

    first, again = scenario(), scenario()
    assert first.log == again.log
    assert len({e.event_id for e in first.log}) == len(first.log)
    assert model.fold(first.log) == first.state
    assert first.state is not None and first.state.status == "failed"


def test_fold_until_shows_the_queue_as_of_a_time() -> None:
    run = diamond()
    snapshots = {NOW: run.state}
    for outcome in (ok("a", NOW + 10), ok("b", NOW + 20), ok("c", NOW + 30), ok("d", NOW + 40)):
        run.outcome(outcome)
        snapshots[outcome.occurred_at] = run.state
    for as_of, expected in snapshots.items():
        assert model.fold_until(run.log, as_of) == expected
    assert model.fold_until(run.log, NOW + 25) == snapshots[NOW + 20]
    assert model.fold_until(run.log, NOW - 1) is None


def test_the_state_counts_what_each_task_waits_for_and_what_has_not_ended() -> None:
    run = diamond()
    assert run.task("a").dependents == ("b", "c")
    assert [run.task(t).waiting for t in "abcd"] == [0, 1, 1, 2]
    run.outcome(ok("a", NOW + 10))
    run.outcome(fail("b", NOW + 20))  # skips d
    assert run.state is not None
    assert [run.task(t).waiting for t in "abcd"] == [0, 0, 0, 1]
    assert (run.state.unfinished, run.state.unsucceeded) == (1, 2)
    run.outcome(ok("c", NOW + 30))
    assert (run.state.unfinished, run.state.unsucceeded) == (0, 2)
    assert run.state.status == "failed"


def test_a_wide_fan_in_readies_the_last_task_once_every_other_ended() -> None:
    children = [f"t{i:03d}" for i in range(200)]
    run = queue(add("root"), *(add(t, "root") for t in children), add("last", *children))
    assert ready(run.outcome(ok("root", NOW + 1))) == [(t, 1) for t in children]
    for t in children[:-1]:
        assert run.outcome(ok(t, NOW + 2)) == []
    assert ready(run.outcome(ok(children[-1], NOW + 3))) == [("last", 1)]


def test_events_of_an_unknown_queue_fold_to_nothing() -> None:
    assert model.fold([ok("a", NOW), QueueFinished("f", NOW, "q1", "failed")]) is None
    created = model.apply(None, QueueCreated("c", NOW, "q1", "apptest"))
    assert created is not None and created.status == "open" and created.name == ""


def by_selector(task_id: str, *agents: str, deps: tuple[str, ...] = ()) -> AddQueueTask:
    return add(task_id, *deps, agent_id="", selector="role=web", agent_ids=agents)


def test_a_selector_task_is_one_task_per_matched_agent_grouped_under_its_id() -> None:
    run = Run()
    run.command(create())
    events = run.command(by_selector("g", "a1", "a2", "a3"))
    added = [e for e in events if isinstance(e, QueueTaskAdded)]
    assert [(e.task_id, e.agent_id, e.group) for e in added] == [
        ("g@a1", "a1", "g"),
        ("g@a2", "a2", "g"),
        ("g@a3", "a3", "g"),
    ]
    assert run.state is not None and run.state.groups == {"g": ("g@a1", "g@a2", "g@a3")}
    # The gateway waits for any answer to its command: a member's addition is one.
    assert {e.event_id for e in added} <= model.answer_ids(by_selector("g", "a1", "a2", "a3"))


def test_a_dependency_on_a_selector_task_waits_for_every_agents_part() -> None:
    run = Run()
    run.command(create())
    run.command(by_selector("g", "a1", "a2"))
    [after] = run.command(add("after", "g"))
    assert isinstance(after, QueueTaskAdded) and after.depends_on == ("g@a1", "g@a2")
    events = run.command(commit())
    assert ready(events) == [("g@a1", 1), ("g@a2", 1)]
    assert run.outcome(ok("g@a1", NOW + 10)) == []
    assert ready(run.outcome(ok("g@a2", NOW + 20))) == [("after", 1)]


def test_one_agents_part_failing_skips_what_depends_on_the_group() -> None:
    run = Run()
    run.command(create())
    run.command(by_selector("g", "a1", "a2"))
    run.command(add("after", "g"))
    run.command(commit())
    run.outcome(ok("g@a1", NOW + 10))
    events = run.outcome(fail("g@a2", NOW + 20))
    assert [e.task_id for e in events if isinstance(e, QueueTaskSkipped)] == ["after"]
    assert run.state is not None and run.state.status == "failed"


def test_a_selector_task_that_matched_no_agent_or_clashes_is_rejected() -> None:
    run = Run()
    run.command(create())
    assert rejection(run.command(by_selector("g"))) == "414.3"
    both = add("g", agent_id="a1", selector="role=web", agent_ids=("a1",))
    assert rejection(run.command(both)) == "403.2"
    run.command(add("t"))
    assert rejection(run.command(by_selector("t", "a1"))) == "412.8"  # a task's id
    run.command(by_selector("g", "a1"))
    assert rejection(run.command(add("g"))) == "412.8"  # a group's id
    assert run.command(by_selector("g", "a1")) == []  # the same command again: nothing new


def test_a_selector_task_survives_its_rows() -> None:
    run = Run()
    run.command(create())
    run.command(by_selector("g", "a1", "a2"))
    run.command(add("after", "g"))
    stored = rows.changed(None, run.state, run.log)
    [state] = rows.restore(stored.values()).values()
    assert state == run.state


def test_an_add_for_an_agent_the_queues_app_may_not_run_on_is_refused_413_5() -> None:
    def only_a1(app: str, agent_id: str) -> bool:
        return app == "apptest" and agent_id == "a1"

    run = queue(committed=False)
    refused = run.command(add("x", agent_id="a2"), permits=only_a1)
    assert rejection(refused) == "413.5"
    assert isinstance(refused[0], QueueCommandRejected)
    assert refused[0].reason == "app apptest may not run on agent a2"
    # A selector add is refused whole when one agent it matched is not allowed.
    assert rejection(run.command(by_selector("g", "a1", "a2"), permits=only_a1)) == "413.5"
    [added] = run.command(add("y"), permits=only_a1)
    assert isinstance(added, QueueTaskAdded)
    assert set(run.statuses()) == {"y"}


# --- The task map: copied once a fold, and never changed once handed out ---


def _fan_out(n: int) -> Run:
    return queue(add("root"), *(add(f"t{i}", "root") for i in range(n)))


def _statuses(state: model.QueueState | None) -> dict[str, str]:
    assert state is not None
    return {t.task_id: t.status for t in state.tasks.values()}


def test_a_state_handed_out_is_never_changed_by_later_folds() -> None:
    before = _fan_out(3).state
    assert before is not None
    pending = {"root": "ready", "t0": "pending", "t1": "pending", "t2": "pending"}
    assert _statuses(before) == pending
    derived = model.decide_outcome(before, ok("root", NOW + 1))  # looks ahead on its own copy
    after = model.fold([ok("root", NOW + 1), *derived], before)
    again = model.apply(after, ok("t0", NOW + 2))
    assert _statuses(before) == pending
    assert _statuses(after) == {"root": "succeeded", "t0": "ready", "t1": "ready", "t2": "ready"}
    assert _statuses(again)["t0"] == "succeeded"

    # A state restored from its rows is handed out too.
    assert after is not None
    stored = [rows.header_row(after), *(rows.task_row("q1", t) for t in after.tasks.values())]
    restored = rows.restore(stored)["q1"]
    model.fold([ok("t1", NOW + 3)], restored)
    assert _statuses(restored) == _statuses(after)


def test_a_fan_out_copies_the_task_map_once_per_fold() -> None:
    """1,000 ready tasks from one outcome: the look-ahead and the fold copy the map once each.
    Copying it for every event they apply made a fan-out of n tasks cost 2n copies of n."""
    copies = 0
    real = state_module._Draft

    class Counting(real):  # type: ignore[misc, valid-type]
        __slots__ = ()

        def __init__(self, tasks: Mapping[str, model.QueueTask]) -> None:
            nonlocal copies
            copies += 1
            super().__init__(tasks)

    run = _fan_out(1000)
    assert run.state is not None
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_module, "_Draft", Counting)
        derived = model.decide_outcome(run.state, ok("root", NOW + 1))
        after = model.fold([ok("root", NOW + 1), *derived], run.state)
    assert len(ready(derived)) == 1000
    assert _statuses(after)["t999"] == "ready"
    assert copies == 2
