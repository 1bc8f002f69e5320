"""Running an ended queue again (`streams.queues.rerun`), without Kafka."""

from __future__ import annotations

from elves.streams.queues.rerun import new_task_id, plan

from .test_queues_model import NOW, add, diamond, fail, ok, queue, stop

NEW = "5e6f7a8b-0000-4000-8000-000000000000"


def test_unsuccessful_reruns_what_failed_or_was_skipped_and_drops_met_dependencies() -> None:
    run = diamond()  # a; b and c after a; d after b and c
    run.outcome(ok("a", NOW + 10))
    run.outcome(ok("b", NOW + 20))
    run.outcome(fail("c", NOW + 30))  # d is skipped
    assert run.state is not None and run.state.status == "failed"
    again = plan(run.state, "unsuccessful", NEW)
    assert [(r.task.task_id, r.task_id, r.depends_on) for r in again] == [
        ("c", "c~5e6f7a8b", ()),  # a succeeded: met
        ("d", "d~5e6f7a8b", ("c~5e6f7a8b",)),  # b succeeded: met; c runs again
    ]


def test_all_reruns_every_task_with_its_dependencies_renamed_and_its_settings_kept() -> None:
    run = queue(add("a", max_attempts=3, backoff_s=5), add("b", "a", run_if="all_done"))
    run.outcome(ok("a", NOW + 10))
    run.outcome(ok("b", NOW + 20))
    assert run.state is not None and run.state.status == "succeeded"
    again = plan(run.state, "all", NEW)
    assert [(r.task_id, r.depends_on) for r in again] == [
        ("a~5e6f7a8b", ()),
        ("b~5e6f7a8b", ("a~5e6f7a8b",)),
    ]
    assert again[0].task.max_attempts == 3 and again[0].task.backoff_s == 5
    assert again[1].task.run_if == "all_done"
    assert plan(run.state, "unsuccessful", NEW) == []  # nothing left to do


def test_a_stopped_queue_reruns_what_the_stop_cancelled() -> None:
    run = queue(add("a"), add("b", "a"))
    run.command(stop())
    assert run.state is not None and run.state.status == "stopped"
    assert [r.task_id for r in plan(run.state, "unsuccessful", NEW)] == ["a~5e6f7a8b", "b~5e6f7a8b"]


def test_a_rerun_id_replaces_the_suffix_of_an_earlier_rerun() -> None:
    assert new_task_id("build", "5e6f7a8b") == "build~5e6f7a8b"
    assert new_task_id("build~1a2b3c4d", "5e6f7a8b") == "build~5e6f7a8b"
    # Only a suffix this module could have made is replaced.
    assert new_task_id("web~blue", "5e6f7a8b") == "web~blue~5e6f7a8b"
    assert new_task_id("~1a2b3c4d", "5e6f7a8b") == "~1a2b3c4d~5e6f7a8b"
    assert new_task_id("web@agent-1", "5e6f7a8b") == "web@agent-1~5e6f7a8b"
