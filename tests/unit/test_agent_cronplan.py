"""The agent cron's pure decisions: due times and misfires, overlaps, deterministic ids."""

from __future__ import annotations

import json

import pytest

from elves.agent import cronplan
from elves.agent.cronfile import CronDef, parse_cron_file
from elves.agent.runner import RunResult

T0 = 1_800_000_000_000  # a whole minute


def cron(misfire: str = "run_once", rule: str = "*/10 * * * * *") -> CronDef:
    entry = {"name": "c", "app": "a", "func": "f", "rule": rule, "misfire": misfire}
    [parsed] = parse_cron_file(json.dumps([entry]), "ag").crons
    return parsed


def test_an_on_time_fire_runs_and_nothing_is_missed() -> None:
    due = cronplan.decide_due(cron(), T0, T0 + 10_500)
    assert due.run == ((T0 + 10_000, False),)
    assert due.missed is None and due.handled_until == T0 + 10_000


def test_nothing_is_due_before_the_next_time() -> None:
    due = cronplan.decide_due(cron(), T0, T0 + 9_999)
    assert due == cronplan.Due((), None, T0)
    assert cronplan.next_due(cron(), T0) == T0 + 10_000


@pytest.mark.parametrize(
    ("policy", "runs", "missed"),
    [
        ("run_once", [(T0 + 60_000, True)], (T0 + 10_000, T0 + 50_000, 5)),
        ("skip", [], (T0 + 10_000, T0 + 60_000, 6)),
        ("run_all", [(T0 + s * 10_000, True) for s in range(1, 7)], None),
    ],
)
def test_times_missed_while_the_agent_was_down_follow_the_misfire_policy(
    policy: str, runs: list[tuple[int, bool]], missed: tuple[int, int, int] | None
) -> None:
    due = cronplan.decide_due(cron(policy), T0, T0 + 65_000)  # 6 times, the newest 5 s late
    assert list(due.run) == runs
    assert due.handled_until == T0 + 60_000
    if missed is None:
        assert due.missed is None
    else:
        assert due.missed is not None
        event = due.missed
        assert (event.first_at, event.last_at, event.count) == missed
        assert (event.cron_id, event.policy, event.occurred_at) == ("ag/c", policy, T0 + 65_000)


def test_run_once_collapses_an_outage_into_one_run_of_the_newest_time() -> None:
    due = cronplan.decide_due(cron(), T0, T0 + 61_500)
    assert due.run == ((T0 + 60_000, True),)
    assert due.missed is not None and due.missed.count == 5


def test_a_long_outage_names_its_first_missed_time() -> None:
    due = cronplan.decide_due(cron("skip", "* * * * * *"), T0, T0 + 86_400_000)
    assert due.missed is not None
    assert due.missed.first_at == T0 + 1000
    # Counted up to the cap (the newest of the capped times is on time, so it runs).
    assert due.missed.count == cronplan.MAX_MISSED_COUNTED - 1
    assert due.run == ((T0 + 86_400_000, False),)
    assert due.handled_until == T0 + 86_400_000


@pytest.mark.parametrize(
    ("policy", "running", "queued", "action"),
    [
        ("skip", 0, 0, "run"),
        ("skip", 1, 0, "skip"),
        ("queue", 0, 0, "run"),
        ("queue", 1, 0, "queue"),
        ("queue", 1, cronplan.MAX_QUEUED - 1, "queue"),
        ("queue", 1, cronplan.MAX_QUEUED, "skip"),
        ("parallel", 3, 0, "run"),
    ],
)
def test_overlap(policy: str, running: int, queued: int, action: str) -> None:
    assert cronplan.decide_overlap(policy, running, queued) == action


def test_a_run_is_the_same_task_and_report_however_often_it_is_made() -> None:
    c = cron()
    a = cronplan.ran("ag", c, T0, T0 + 5, T0 + 9, RunResult(1, "toryzen", 4))
    b = cronplan.ran("ag", c, T0, T0 + 6, T0 + 99, RunResult(1, "toryzen", 93))
    assert a.task_id == b.task_id == cronplan.run_task_id("ag", "ag/c", T0)
    assert a.event_id == b.event_id
    assert cronplan.run_task_id("ag", "ag/c", T0 + 10_000) != a.task_id
    assert cronplan.run_task_id("other", "ag/c", T0) != a.task_id
    assert (a.scheduled_at, a.started_at, a.occurred_at) == (T0, T0 + 5, T0 + 9)
    assert (a.source, a.mode, a.worker_flag, a.worker_message) == ("config", "AANP", 1, "toryzen")


def test_a_run_killed_at_its_timeout_is_reported_timed_out() -> None:
    result = RunResult(-1, "timeout after 2s", 2001, truncated=True, timed_out=True)
    report = cronplan.ran("ag", cron(), T0, T0, T0 + 2001, result)
    assert (report.worker_flag, report.timed_out, report.truncated) == (-1, True, True)
