"""When a follow of a task's output may end: the parts its results say went, against the audit's."""

from __future__ import annotations

from elves.api.output import all_in, parts_sent
from elves.schemas.events import AgentCronRan, Event, TaskResultReported, TaskTimedOut


def result(attempt: int, output_parts: int | None) -> TaskResultReported:
    return TaskResultReported(
        f"r{attempt}", 1, "t", attempt, "a", "app", "f", 1, "ok", 2, output_parts=output_parts
    )


def test_each_attempt_s_count_comes_from_its_result() -> None:
    events: list[Event] = [result(1, 3), result(2, 0)]
    assert parts_sent(events, 2) == {1: 3, 2: 0}
    assert parts_sent([result(1, 5), result(1, 5)], 1) == {1: 5}  # a result delivered twice


def test_an_attempt_without_a_counted_result_leaves_it_unknown() -> None:
    # The center timed the first attempt out and its agent never answered.
    timed_out = TaskTimedOut("x", 1, "t", 1, "a", deadline_at=1)
    assert parts_sent([timed_out, result(2, 1)], 2) is None
    assert parts_sent([result(1, None)], 1) is None  # an agent too old to count
    assert parts_sent([result(1, 2)], 2) is None  # the last attempt's result is not in yet


def test_an_agent_s_cron_run_is_one_attempt_reported_whole() -> None:
    def ran(output_parts: int | None) -> AgentCronRan:
        return AgentCronRan(
            "e", 1, "t", "a", "c", "config", 1, 1, "app", "f", "{}", "AANP", 1, "ok", 2,
            output_parts=output_parts,
        )  # fmt: skip

    assert parts_sent([ran(4)], 1) == {1: 4}
    assert parts_sent([ran(None)], 1) is None  # lost in a crash, or an older agent


def test_a_task_that_never_ran_sent_nothing() -> None:
    assert parts_sent([], 0) == {}  # rejected before its first attempt
    assert all_in({}, {})


def test_the_follow_may_end_once_the_audit_holds_every_part_of_every_attempt() -> None:
    sent = {1: 2, 2: 3}
    assert not all_in(sent, {1: 2})
    assert not all_in(sent, {1: 2, 2: 2})
    assert all_in(sent, {1: 2, 2: 3})
    assert all_in({1: 0}, {})  # a task that printed only its result
