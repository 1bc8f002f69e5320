"""A queue's limits, without Kafka: `max_parallel` (at most that many of its tasks hold a slot at
once), `max_failures` (that many failed tasks stop the rest) and `max_failure_percent` (more than
that share of its tasks failed stops the rest)."""

from __future__ import annotations

import pytest

from elves.api.queues import _limits
from elves.errors import WrongType
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AddQueueTask,
    CreateQueue,
    QueueCreated,
    QueueFinished,
    QueueLimitsSet,
    QueueTaskAdded,
    QueueTaskCancelled,
    SetQueueLimits,
    TaskTimedOut,
)
from elves.streams.queues import model, rows

from .test_queues_model import NOW, Run, add, commit, fail, ok, ready, rejection


def limited(
    limit: int,
    *adds: AddQueueTask,
    max_failures: int = 0,
    percent: int = 0,
    parallel_percent: int = 0,
) -> tuple[Run, list[tuple[str, int]]]:
    """A committed queue with `max_parallel=limit`, and what its commit readied."""
    run = Run()
    limits = (limit, max_failures, percent, parallel_percent)
    create = CreateQueue("create-q1", NOW, "q1", "apptest", "rolling", *limits)
    run.command(create)
    for cmd in adds:
        [added] = run.command(cmd)
        assert isinstance(added, QueueTaskAdded), added
    return run, ready(run.command(commit()))


def busy(run: Run) -> int:
    assert run.state is not None
    return run.state.busy


def test_commit_readies_only_as_many_roots_as_the_limit_in_the_order_added() -> None:
    run, first = limited(2, add("a"), add("b"), add("c"), add("d"))
    assert first == [("a", 1), ("b", 1)]
    assert run.statuses() == {"a": "ready", "b": "ready", "c": "pending", "d": "pending"}
    assert busy(run) == 2


def test_each_end_frees_a_slot_for_the_next_task_and_the_queue_still_ends() -> None:
    run, _ = limited(2, add("a"), add("b"), add("c"), add("d"))
    assert ready(run.outcome(ok("b", NOW + 10))) == [("c", 1)]
    assert ready(run.outcome(fail("a", NOW + 20))) == [("d", 1)]  # failed or not, it ended
    assert ready(run.outcome(ok("c", NOW + 30))) == []
    events = run.outcome(ok("d", NOW + 40))
    assert isinstance(events[-1], QueueFinished) and events[-1].status == "failed"
    assert busy(run) == 0


def test_a_retrying_task_keeps_its_slot_until_it_ends() -> None:
    run, _ = limited(1, add("a", max_attempts=2), add("b"))
    events = run.outcome(fail("a", NOW + 10))
    assert ready(events) == [("a", 2)]  # no backoff: its next attempt at once, in its slot
    assert run.task("b").status == "pending" and busy(run) == 1
    assert ready(run.outcome(ok("a", NOW + 20, attempt=2))) == [("b", 1)]


def test_dependents_wait_for_a_slot_and_skips_take_none() -> None:
    # a and b are roots; c after a; d after a (skipped if a fails); e is a root added last.
    run, first = limited(
        2, add("a"), add("b"), add("c", "a", run_if="all_done"), add("d", "a"), add("e")
    )
    assert first == [("a", 1), ("b", 1)]
    events = run.outcome(fail("a", NOW + 10))
    # d is skipped (no slot); of c and e, c was added first and takes the one free slot.
    assert run.task("d").status == "skipped"
    assert ready(events) == [("c", 1)]
    assert ready(run.outcome(ok("b", NOW + 20))) == [("e", 1)]


def test_without_a_limit_every_root_is_ready_at_once() -> None:
    run, first = limited(0, add("a"), add("b"), add("c"))
    assert first == [("a", 1), ("b", 1), ("c", 1)]
    assert run.state is not None and run.state.free_slots is None


def test_a_limit_out_of_range_is_rejected() -> None:
    run = Run()
    bad: list[dict[str, int]] = [
        {"max_parallel": -1},
        {"max_failures": -1},
        {"max_parallel": 2**31},  # more than its event's Avro int holds
        {"max_failures": 2**63},
        {"max_failure_percent": -1},
        {"max_failure_percent": 100},  # would never stop anything: a mistake, said so
        {"max_parallel_percent": -1},
        {"max_parallel_percent": 101},
    ]
    for limits in bad:
        cmd = CreateQueue("create-q1", NOW, "q1", "apptest", "", **limits)
        assert rejection(run.command(cmd)) == "403.2", limits


def test_the_largest_count_a_limit_may_be_goes_through_the_codec() -> None:
    run = Run()
    most = model.MOST_COUNT
    cmd = CreateQueue("create-q1", NOW, "q1", "apptest", "", max_parallel=most, max_failures=most)
    [created] = run.command(cmd)
    assert isinstance(created, QueueCreated), created
    assert CODEC.decode(CODEC.encode(created)) == created
    [changed] = run.command(set_limits(max_failures=most))
    assert CODEC.decode(CODEC.encode(changed)) == changed


def test_the_gateway_refuses_a_limit_its_events_cannot_carry_before_sending_anything() -> None:
    for body in ({"max_parallel": 2**31}, {"max_failures": 2**63}, {"max_failures": "9"}):
        with pytest.raises(WrongType) as refused:
            _limits(body)
        assert refused.value.code == "403.2"
        assert refused.value.details["field"] == next(iter(body))


def test_a_null_limit_is_no_limit_on_a_new_queue_and_unchanged_in_a_change() -> None:
    assert _limits({"max_parallel": None, "max_failures": 3}) == [0, 3, 0, 0]
    assert _limits({"max_parallel": None, "max_failures": 3}, default=None) == [None, 3, None, None]


def test_the_limit_and_the_slots_survive_the_rows() -> None:
    run, _ = limited(2, add("a"), add("b", max_attempts=2), add("c"))
    run.outcome(fail("b", NOW + 10))  # b retries: still in its slot
    assert run.state is not None
    stored = [rows.header_row(run.state)]
    stored += [rows.task_row("q1", t) for t in run.state.tasks.values()]
    restored = rows.restore(stored)["q1"]
    assert (restored.max_parallel, restored.busy, restored.free_slots) == (2, 2, 0)


def test_the_failure_that_reaches_max_failures_cancels_the_rest_and_fails_the_queue() -> None:
    run, _ = limited(2, add("a"), add("b"), add("c"), add("d", "c"), max_failures=2)
    assert ready(run.outcome(fail("a", NOW + 10))) == [("c", 1)]  # one failure: goes on
    events = run.outcome(fail("b", NOW + 20))
    cancelled = {e.task_id: e.was_running for e in events if isinstance(e, QueueTaskCancelled)}
    assert cancelled == {"c": True, "d": False}  # c runs: it is killed, as by a stop
    assert isinstance(events[-1], QueueFinished) and events[-1].status == "failed"
    assert run.task("d").cause == "queue stopped: 2 failed, its max_failures"
    assert run.state is not None and run.state.failures == 2


def test_skips_and_retries_do_not_count_as_failures() -> None:
    run, _ = limited(0, add("a", max_attempts=2), add("b", "a"), add("c"), max_failures=1)
    timed_out = TaskTimedOut("to-a-1", NOW + 10, "a", 1, "a1", deadline_at=NOW + 10)
    assert ready(run.outcome(timed_out)) == [("a", 2)]  # a retry, not yet a failure
    assert run.state is not None and run.state.failures == 0
    events = run.outcome(fail("a", NOW + 20, attempt=2))  # now it is: c is cancelled
    assert [e.task_id for e in events if isinstance(e, QueueTaskCancelled)] == ["b", "c"]


def test_without_max_failures_a_failure_stops_nothing() -> None:
    run, _ = limited(0, add("a"), add("b"))
    events = run.outcome(fail("a", NOW + 10))
    assert not any(isinstance(e, QueueTaskCancelled) for e in events)
    assert run.task("b").status == "ready"


def test_more_than_max_failure_percent_of_the_tasks_failed_stops_the_rest() -> None:
    # 20% of 10 tasks: the second failure is 20%, not more; the third is 30%, and stops it.
    ids = [f"t{i}" for i in range(10)]
    run, _ = limited(1, *(add(t) for t in ids), percent=20)
    assert ready(run.outcome(fail("t0", NOW + 10))) == [("t1", 1)]
    assert ready(run.outcome(fail("t1", NOW + 20))) == [("t2", 1)]
    events = run.outcome(fail("t2", NOW + 30))
    cancelled = [e.task_id for e in events if isinstance(e, QueueTaskCancelled)]
    assert cancelled == ids[3:]
    assert isinstance(events[-1], QueueFinished) and events[-1].status == "failed"
    cause = "queue stopped: 3 failed, over its max_failure_percent (20% of 10)"
    assert run.task("t9").cause == cause
    assert run.state is not None
    restored = rows.restore(
        [rows.header_row(run.state)] + [rows.task_row("q1", t) for t in run.state.tasks.values()]
    )["q1"]
    assert (restored.max_failure_percent, restored.failed_enough) == (20, True)


def test_either_failure_limit_stops_the_queue_whichever_comes_first() -> None:
    run, _ = limited(0, add("a"), add("b"), add("c"), add("d"), max_failures=3, percent=30)
    run.outcome(fail("a", NOW + 10))  # 25%
    events = run.outcome(fail("b", NOW + 20))  # 50%: over 30, before the count of 3
    assert [e.task_id for e in events if isinstance(e, QueueTaskCancelled)] == ["c", "d"]


def test_max_parallel_percent_is_a_share_of_the_tasks_rounded_down_and_at_least_one() -> None:
    ids = [f"t{i}" for i in range(10)]
    run, first = limited(0, *(add(t) for t in ids), parallel_percent=25)
    assert first == [("t0", 1), ("t1", 1)]  # 25% of 10: 2
    assert ready(run.outcome(ok("t0", NOW + 10))) == [("t2", 1)]
    assert run.state is not None and run.state.parallel_limit == 2
    _, one = limited(0, add("a"), add("b"), add("c"), parallel_percent=10)  # 0.3: still 1
    assert one == [("a", 1)]
    _, lower = limited(3, *(add(t) for t in ids), parallel_percent=50)  # 3 against 5
    assert lower == [("t0", 1), ("t1", 1), ("t2", 1)]
    restored = rows.restore(
        [rows.header_row(run.state)] + [rows.task_row("q1", t) for t in run.state.tasks.values()]
    )["q1"]
    assert (restored.parallel_limit, restored.free_slots) == (2, 0)


def set_limits(event_id: str = "limits-1", **limits: int) -> SetQueueLimits:
    return SetQueueLimits(event_id, NOW + 5, "q1", **limits)


def test_a_higher_limit_readies_the_waiting_tasks_at_once_in_the_order_added() -> None:
    run, first = limited(1, add("a"), add("b"), add("c"), add("d"))
    assert first == [("a", 1)]
    events = run.command(set_limits(max_parallel=3))
    assert isinstance(events[0], QueueLimitsSet) and events[0].max_parallel == 3
    assert ready(events) == [("b", 1), ("c", 1)]  # a holds one of the three slots
    assert busy(run) == 3 and run.task("d").status == "pending"
    assert ready(run.outcome(ok("a", NOW + 10))) == [("d", 1)]  # the new limit goes on


def test_no_limit_any_more_readies_every_task_that_may_run() -> None:
    run, _ = limited(1, add("a"), add("b"), add("c", "a"))
    assert ready(run.command(set_limits(max_parallel=0))) == [("b", 1)]  # c waits for a
    assert run.state is not None and run.state.free_slots is None
    assert ready(run.outcome(ok("a", NOW + 10))) == [("c", 1)]  # as a queue without a limit


def test_a_lower_limit_kills_nothing_and_readies_nothing_until_slots_free() -> None:
    run, first = limited(3, add("a"), add("b"), add("c"), add("d"), add("e"))
    assert first == [("a", 1), ("b", 1), ("c", 1)]
    assert ready(run.command(set_limits(max_parallel=1))) == []
    assert {run.task(t).status for t in "abc"} == {"ready"}  # nothing cancelled
    assert ready(run.outcome(ok("a", NOW + 10))) == []  # two still hold slots: over the limit
    assert ready(run.outcome(ok("b", NOW + 20))) == []
    assert ready(run.outcome(ok("c", NOW + 30))) == [("d", 1)]  # one at a time from now on


def test_only_the_limits_given_change_and_a_percent_counts_the_tasks() -> None:
    run, _ = limited(2, add("a"), add("b"), add("c"), add("d"), max_failures=3)
    run.command(set_limits(max_parallel_percent=75))  # 75% of 4 tasks: 3, the lower is 2
    assert run.state is not None
    assert (run.state.max_parallel, run.state.max_failures) == (2, 3)
    assert run.state.parallel_limit == 2
    assert ready(run.command(set_limits("limits-2", max_parallel=0))) == [("c", 1)]
    assert run.state.parallel_limit == 3


def test_a_failure_limit_already_reached_stops_the_queue_now() -> None:
    run, _ = limited(1, add("a"), add("b"), add("c"))
    run.outcome(fail("a", NOW + 10))  # b takes the slot
    run.outcome(fail("b", NOW + 20))  # c takes it
    events = run.command(set_limits(max_failures=2))
    assert [type(e) for e in events] == [QueueLimitsSet, QueueTaskCancelled, QueueFinished]
    assert isinstance(events[-1], QueueFinished) and events[-1].status == "failed"
    assert run.task("c").cause == "queue stopped: 2 failed, its max_failures"


def test_limits_of_an_open_queue_hold_from_its_commit() -> None:
    run = Run()
    run.command(CreateQueue("create-q1", NOW, "q1", "apptest", ""))
    for cmd in (add("a"), add("b"), add("c")):
        run.command(cmd)
    assert ready(run.command(set_limits(max_parallel=1))) == []
    assert ready(run.command(commit())) == [("a", 1)]


def test_bad_limit_changes_are_rejected_and_a_redelivery_decides_nothing() -> None:
    run, _ = limited(1, add("a"), add("b"))
    assert rejection(run.command(set_limits("bad-1", max_parallel=-1))) == "403.2"
    assert rejection(run.command(set_limits("bad-2", max_failure_percent=100))) == "403.2"
    assert rejection(run.command(set_limits("none"))) == "403.1"
    assert rejection(Run().command(SetQueueLimits("x", NOW, "q9", max_parallel=2))) == "412.1"
    once = run.command(set_limits(max_parallel=2))
    assert ready(once) == [("b", 1)]
    assert run.command(set_limits(max_parallel=2)) == []  # the same command, delivered again
    run.command(commit("c2"))
    run.outcome(ok("a", NOW + 10))
    run.outcome(ok("b", NOW + 20))
    assert run.state is not None and run.state.status == "succeeded"
    assert rejection(run.command(set_limits("late", max_parallel=5))) == "412.2"


def test_changed_limits_survive_the_rows_and_the_as_of_view() -> None:
    run, _ = limited(1, add("a"), add("b"), add("c"))
    run.command(set_limits(max_parallel=2, max_failures=1), now=NOW + 5)
    assert run.state is not None
    stored = [rows.header_row(run.state)]
    stored += [rows.task_row("q1", t) for t in run.state.tasks.values()]
    restored = rows.restore(stored)["q1"]
    assert (restored.max_parallel, restored.max_failures, restored.busy) == (2, 1, 2)
    assert restored.limits_id == run.state.limits_id != ""
    before = model.fold_until(run.log, NOW + 4)  # the change is at NOW + 5
    assert before is not None and before.max_parallel == 1


def test_a_failure_limit_on_a_queue_without_a_parallel_limit_readies_nothing() -> None:
    run, first = limited(0, add("a"), add("b", "a"), add("c", "b", run_if="all_done"))
    assert first == [("a", 1)]
    events = run.command(set_limits(max_failures=1))
    assert [type(e) for e in events] == [QueueLimitsSet]  # b and c still wait for theirs
    assert run.statuses() == {"a": "ready", "b": "pending", "c": "pending"}
