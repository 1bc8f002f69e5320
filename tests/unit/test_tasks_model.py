"""The task fold, without Kafka."""

from __future__ import annotations

import dataclasses

from elves.permissions import Permits
from elves.schemas.events import (
    AgentCronRan,
    DeadlinePassed,
    TaskAccepted,
    TaskDispatched,
    TaskFailed,
    TaskRejected,
    TaskResultReported,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
)
from elves.streams.tasks import model

LIMITS = model.Limits(grace_ms=5000, max_params_bytes=1000)
NOW = 1_700_000_000_000


def submit(**kw: object) -> TaskSubmitted:
    base: dict[str, object] = dict(
        event_id="e1",
        occurred_at=NOW,
        task_id="t1",
        agent_id="a1",
        app="apptest",
        func="helloword",
        params='{"my": "toryzen"}',
        timeout_s=10,
    )
    base.update(kw)
    return TaskSubmitted(**base)  # type: ignore[arg-type]


def result(flag: int, attempt: int = 1, event_id: str = "r1") -> TaskResultReported:
    return TaskResultReported(
        event_id, NOW + 50, "t1", attempt, "a1", "apptest", "helloword", flag, "toryzen", 12
    )


def accepted_state() -> model.TaskState:
    events = model.decide_submit(None, submit(), "up", NOW, LIMITS)
    state = None
    for e in [submit(), *events]:
        state = model.apply(state, e)
    assert state is not None
    return state


def test_submit_to_a_live_agent_is_accepted_and_dispatched_with_a_deadline() -> None:
    events = model.decide_submit(None, submit(), "up", NOW, LIMITS)
    assert [type(e) for e in events] == [TaskAccepted, TaskDispatched]
    dispatched = events[1]
    assert isinstance(dispatched, TaskDispatched)
    assert dispatched.attempt == 1
    assert dispatched.deadline_at == NOW + 10_000 + 5_000
    assert accepted_state().status == "dispatched"


def test_unknown_and_down_agents_are_rejected_with_stable_codes() -> None:
    [unknown] = model.decide_submit(None, submit(), "unknown", NOW, LIMITS)
    [down] = model.decide_submit(None, submit(), "down", NOW, LIMITS)
    assert isinstance(unknown, TaskRejected) and unknown.code == "414.2"
    assert isinstance(down, TaskRejected) and down.code == "414.1"
    assert model.apply(None, down) is not None
    assert model.apply(None, down).status == "rejected"  # type: ignore[union-attr]


def test_an_agent_not_accepted_gets_nothing_414_4() -> None:
    for status in ("pending", "rejected"):
        [refused] = model.decide_submit(None, submit(), status, NOW, LIMITS)
        assert isinstance(refused, TaskRejected) and refused.code == "414.4"
        assert status in refused.reason and "elves agent accept a1" in refused.reason


def test_invalid_submissions_are_rejected_before_dispatch() -> None:
    cases = {
        "403.1": submit(app=""),
        "403.2": submit(timeout_s=0),
        "403.3": submit(params='{"x": "' + "y" * 2000 + '"}'),
        "403.4": submit(params="[1, 2]"),
    }
    for code, cmd in cases.items():
        [event] = model.decide_submit(None, cmd, "up", NOW, LIMITS)
        assert isinstance(event, TaskRejected) and event.code == code


def test_a_repeated_submission_decides_nothing_new() -> None:
    assert model.decide_submit(accepted_state(), submit(), "up", NOW, LIMITS) == []


def test_derived_ids_are_the_same_on_replay() -> None:
    first = model.decide_submit(None, submit(), "up", NOW, LIMITS)
    again = model.decide_submit(None, submit(), "up", NOW, LIMITS)
    assert [e.event_id for e in first] == [e.event_id for e in again]


def test_results_end_the_task_by_worker_flag() -> None:
    state = model.apply(accepted_state(), TaskStarted("s1", NOW + 5, "t1", 1, "a1", 42))
    assert state is not None and state.status == "running"
    [ok] = model.decide_result(state, result(1))
    [bad] = model.decide_result(state, result(0))
    [crash] = model.decide_result(state, result(-1))
    assert isinstance(ok, TaskSucceeded)
    assert isinstance(bad, TaskFailed) and bad.worker_flag == 0
    assert isinstance(crash, TaskFailed) and crash.worker_flag == -1
    final = model.apply(state, ok)
    assert final is not None and final.status == "succeeded" and final.worker_message == "toryzen"


def test_a_late_duplicate_or_stray_result_changes_nothing() -> None:
    state = accepted_state()
    [ok] = model.decide_result(state, result(1))
    done = model.apply(state, ok)
    assert model.decide_result(done, result(1, event_id="r2")) == []
    assert model.decide_result(state, result(1, attempt=2)) == []
    assert model.decide_result(None, result(1)) == []


def test_a_passed_deadline_times_out_an_open_task_once() -> None:
    state = accepted_state()
    assert model.overdue([state], state.deadline_at) == []
    [passed] = model.overdue([state], state.deadline_at + 1)
    assert isinstance(passed, DeadlinePassed)
    [timed_out] = model.decide_deadline(state, passed)
    assert isinstance(timed_out, TaskTimedOut)
    final = model.apply(state, timed_out)
    assert final is not None and final.status == "timed_out" and final.final
    assert model.decide_deadline(final, passed) == [timed_out]  # replayed: see below
    assert model.decide_deadline(final, dataclasses.replace(passed, event_id="p2")) == []
    assert model.decide_result(final, result(1)) == []  # the result came too late


def test_a_replayed_input_derives_the_outcome_that_ended_the_task_again() -> None:
    """A worker killed after the task's row was written, before the outcome's copies to its
    queue or cron were sent, reads the input again: it derives the same outcome (same id), which
    the readers take once and which changes nothing here; any other input derives nothing."""
    state = accepted_state()
    [ok] = model.decide_result(state, result(1))
    done = model.apply(state, ok)
    assert done is not None and done.outcome_id == ok.event_id
    assert model.decide_result(done, result(1)) == [ok]
    assert model.apply(done, ok) == done
    assert model.decide_result(done, result(0, event_id="r2")) == []

    ran = AgentCronRan(
        "ran-1", NOW, "cron-task", "a1", "a1/c1", "config", NOW - 1000, NOW - 900,
        "apptest", "helloword", "{}", "AANP", 1, "toryzen", 12,
    )  # fmt: skip
    [outcome] = model.decide_agent_run(None, ran)
    reported = model.fold([ran, outcome])
    assert reported is not None and reported.status == "succeeded"
    assert model.decide_agent_run(reported, ran) == [outcome]
    assert model.decide_agent_run(reported, dataclasses.replace(ran, event_id="ran-2")) == []


def test_a_result_before_the_deadline_wins_over_the_clock() -> None:
    state = accepted_state()
    [passed] = model.overdue([state], state.deadline_at + 1)
    [ok] = model.decide_result(state, result(1))
    assert model.decide_deadline(model.apply(state, ok), passed) == []


def test_fold_rebuilds_the_state_from_the_lifecycle() -> None:
    events = [submit(), *model.decide_submit(None, submit(), "up", NOW, LIMITS)]
    state = model.fold(events)
    [ok] = model.decide_result(state, result(1))
    final = model.fold([*events, ok])
    assert final is not None and final.status == "succeeded"


def test_a_worker_killed_at_its_timeout_ends_the_task_timed_out() -> None:
    state = accepted_state()
    killed = TaskResultReported(
        "r9",
        NOW + 10_000,
        "t1",
        1,
        "a1",
        "apptest",
        "helloword",
        -1,
        "timeout after 10s",
        10_000,
        timed_out=True,
    )
    [event] = model.decide_result(state, killed)
    assert isinstance(event, TaskTimedOut)
    final = model.apply(state, event)
    assert final is not None and final.status == "timed_out" and final.worker_flag == -1


def test_a_queue_task_carries_its_queue_to_its_outcome() -> None:
    cmd = submit(queue_id="q1")
    state = model.fold([cmd, *model.decide_submit(None, cmd, "up", NOW, LIMITS)])
    assert state is not None and state.queue_id == "q1"
    [ok] = model.decide_result(state, result(1))
    assert isinstance(ok, TaskSucceeded) and ok.queue_id == "q1"
    [rejected] = model.decide_submit(None, submit(queue_id="q1"), "down", NOW, LIMITS)
    assert isinstance(rejected, TaskRejected) and rejected.queue_id == "q1"


def test_a_retry_submits_the_next_attempt_of_a_final_task() -> None:
    state = accepted_state()
    [failed] = model.decide_result(state, result(0))
    state = model.apply(state, failed)
    assert state is not None and state.status == "failed"
    retry = submit(event_id="e2", attempt=2)
    [dispatched] = model.decide_submit(state, retry, "up", NOW + 1000, LIMITS)
    assert isinstance(dispatched, TaskDispatched) and dispatched.attempt == 2
    state = model.apply(state, dispatched)
    assert state is not None and state.status == "dispatched" and state.worker_flag is None
    assert model.decide_submit(state, retry, "up", NOW + 2000, LIMITS) == []  # not while open
    assert model.decide_result(state, result(1, attempt=1)) == []  # the old attempt is over
    [ok] = model.decide_result(state, result(1, attempt=2, event_id="r2"))
    assert isinstance(ok, TaskSucceeded) and ok.attempt == 2


def only_on(agent: str) -> Permits:
    return lambda app, agent_id: agent_id == agent


def test_an_app_not_allowed_on_the_agent_is_rejected_413_5_whoever_sent_it() -> None:
    [rejected] = model.decide_submit(None, submit(), "up", NOW, LIMITS, only_on("a2"))
    assert isinstance(rejected, TaskRejected)
    assert (rejected.code, rejected.reason) == ("413.5", "app apptest may not run on agent a1")
    # The rule is about the agent, up or not: it is judged before liveness.
    [unknown] = model.decide_submit(None, submit(), "unknown", NOW, LIMITS, only_on("a2"))
    assert isinstance(unknown, TaskRejected) and unknown.code == "413.5"
    allowed = model.decide_submit(None, submit(), "up", NOW, LIMITS, only_on("a1"))
    assert [type(e) for e in allowed] == [TaskAccepted, TaskDispatched]


def test_a_retry_is_judged_by_the_rule_that_holds_then() -> None:
    cmd = submit(queue_id="q1")
    state = model.fold([cmd, *model.decide_submit(None, cmd, "up", NOW, LIMITS)])
    state = model.apply(state, TaskFailed("f1", NOW + 1, "t1", 1, "a1", 0, "no", 1))
    [refused] = model.decide_submit(
        state, submit(attempt=2, event_id="e2"), "up", NOW + 2, LIMITS, only_on("a2")
    )
    assert isinstance(refused, TaskRejected) and refused.code == "413.5"
