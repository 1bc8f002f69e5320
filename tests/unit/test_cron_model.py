"""The cron fold without Kafka: commands, fires, misfires, overlaps and outcomes."""

from __future__ import annotations

from dataclasses import replace

from elves.schemas.events import (
    AddCron,
    CronAdded,
    CronCommandRejected,
    CronFired,
    CronFireQueued,
    CronFireSkipped,
    CronFiresMissed,
    CronPaused,
    CronResumed,
    CronUpdated,
    DeleteCron,
    Event,
    PauseCron,
    ResumeCron,
    TaskFailed,
    TaskRejected,
    TaskSucceeded,
    UpdateCron,
)
from elves.streams.cron import model

T0 = 1_800_000_000_000  # a whole minute (divisible by 60 000)
S = 1000


def add(**changes: object) -> AddCron:
    base = AddCron(
        event_id="cmd-1",
        occurred_at=T0,
        cron_id="c1",
        agent_id="a1",
        app="apptest",
        func="helloword",
        params="{}",
        timeout_s=10,
        rule="* * * * * *",  # every second (seconds first)
    )
    return replace(base, **changes)  # type: ignore[arg-type]


class Run:
    """Feeds inputs through decide + apply, as the wiring does; keeps every derived event."""

    def __init__(self, cmd: AddCron | None = None) -> None:
        self.state: model.CronState | None = None
        self.log: list[Event] = []
        if cmd is not None:
            self.command(cmd)

    def _fold(self, input_: Event, out: list[Event]) -> list[Event]:
        for e in [input_, *out]:
            self.state = model.apply(self.state, e)
        self.log += out
        return out

    def command(self, cmd: model.Command) -> list[Event]:
        return self._fold(cmd, model.decide(self.state, cmd))

    def tick(self, now: int, targets: tuple[str, ...] = ()) -> list[Event]:
        out = model.decide_due(self.state, now, targets)
        for e in out:
            self.state = model.apply(self.state, e)
        self.log += out
        return out

    def outcome(
        self, outcome: TaskSucceeded | TaskFailed | TaskRejected, targets: tuple[str, ...] = ()
    ) -> list[Event]:
        return self._fold(outcome, model.decide_outcome(self.state, outcome, targets))


def succeeded(task_id: str, at: int) -> TaskSucceeded:
    return TaskSucceeded(f"ok-{task_id}", at, task_id, 1, "a1", 1, "done", 5, cron_id="c1")


def fired(events: list[Event]) -> list[CronFired]:
    return [e for e in events if isinstance(e, CronFired)]


def test_add_schedules_the_first_fire_after_the_add() -> None:
    run = Run(add())
    assert isinstance(run.log[0], CronAdded)
    assert run.state is not None
    assert run.state.status == "active"
    assert run.state.next_at == T0 + S


def test_a_bad_add_is_rejected_with_its_code_and_nothing_else() -> None:
    cases = {
        "403.6": add(rule="not a rule"),
        "403.7": add(timezone="Mars/Olympus"),
        "403.1": add(app=""),
        "403.2": add(mode="XYZ"),
        "403.4": add(params="[1]"),
    }
    for code, cmd in cases.items():
        run = Run(cmd)
        assert [type(e) for e in run.log] == [CronCommandRejected], code
        assert isinstance(run.log[0], CronCommandRejected)
        assert run.log[0].code == code
        assert run.state is None


def test_an_agent_cron_needs_an_accepted_agent() -> None:
    cmd = add(mode="AANP")
    assert model.agent_not_accepted(cmd, "up") == model.agent_not_accepted(cmd, "down") == []
    for status, code in (("unknown", "414.2"), ("pending", "414.4"), ("rejected", "414.4")):
        [refused] = model.agent_not_accepted(cmd, status)
        assert isinstance(refused, CronCommandRejected)
        assert (refused.code, refused.cron_id, refused.command) == (code, cmd.cron_id, "AddCron")
        assert "needs an accepted agent" in refused.reason


def test_the_same_cron_id_twice_is_refused() -> None:
    run = Run(add())
    out = run.command(add(event_id="cmd-2"))
    assert isinstance(out[0], CronCommandRejected)
    assert out[0].code == "411.3"


def test_orders_for_an_unknown_cron_are_411_1() -> None:
    for cls in (PauseCron, ResumeCron, DeleteCron):
        out = Run().command(cls("cmd-x", T0, "nope"))
        assert isinstance(out[0], CronCommandRejected)
        assert out[0].code == "411.1"


def test_each_scheduled_time_fires_once_with_its_own_task_id() -> None:
    run = Run(add())
    first = fired(run.tick(T0 + S + 10))
    assert [(f.scheduled_at, f.catch_up) for f in first] == [(T0 + S, False)]
    assert run.tick(T0 + S + 20) == []  # a repeated tick: nothing left to decide
    run.outcome(succeeded(first[0].task_id, T0 + S + 500))
    second = fired(run.tick(T0 + 2 * S + 5))
    assert [f.scheduled_at for f in second] == [T0 + 2 * S]
    assert first[0].task_id != second[0].task_id
    assert first[0].task_id == model.fire_task_id("c1", T0 + S)


def test_a_replayed_decision_derives_the_same_fire() -> None:
    a, b = Run(add()), Run(add())
    assert a.tick(T0 + S + 10) == b.tick(T0 + S + 10)


def test_run_once_after_an_outage_is_one_catch_up_run() -> None:
    run = Run(add())  # misfire run_once by default
    out = run.tick(T0 + 10 * S + 100)  # down from T0: times T0+1s .. T0+10s are due
    assert [(f.scheduled_at, f.catch_up) for f in fired(out)] == [(T0 + 10 * S, True)]
    missed = [e for e in out if isinstance(e, CronFiresMissed)]
    assert len(missed) == 1
    assert (missed[0].first_at, missed[0].last_at, missed[0].count) == (T0 + S, T0 + 9 * S, 9)
    assert missed[0].policy == "run_once"


def test_skip_runs_only_the_current_fire() -> None:
    run = Run(add(misfire="skip", overlap="parallel"))
    out = run.tick(T0 + 10 * S + 100)
    assert [(f.scheduled_at, f.catch_up) for f in fired(out)] == [(T0 + 10 * S, False)]
    missed = [e for e in out if isinstance(e, CronFiresMissed)]
    assert missed[0].count == 9
    assert missed[0].policy == "skip"


def test_run_all_runs_every_missed_time_when_overlap_allows() -> None:
    run = Run(add(misfire="run_all", overlap="parallel"))
    out = run.tick(T0 + 10 * S + 100)
    assert [f.scheduled_at for f in fired(out)] == [T0 + i * S for i in range(1, 11)]
    assert sum(f.catch_up for f in fired(out)) == 9
    assert not [e for e in out if isinstance(e, CronFiresMissed)]


def test_a_late_daily_fire_runs_once_as_catch_up_unless_skip() -> None:
    daily = add(rule="0 3 * * *")
    three = T0 - T0 % (24 * 3600 * S) + 3 * 3600 * S + 24 * 3600 * S  # 03:00 UTC, day after T0
    late = three + 10 * 60 * S
    out = Run(daily).tick(late)
    assert [(f.scheduled_at, f.catch_up) for f in fired(out)] == [(three, True)]
    out = Run(replace(daily, misfire="skip")).tick(late)
    assert fired(out) == []
    assert [type(e) for e in out] == [CronFiresMissed]


def test_overlap_skip_records_the_fire_not_run() -> None:
    run = Run(add())
    first = fired(run.tick(T0 + S + 10))[0]
    out = run.tick(T0 + 2 * S + 10)  # the first run still goes
    assert [type(e) for e in out] == [CronFireSkipped]
    assert isinstance(out[0], CronFireSkipped)
    assert out[0].running_task_id == first.task_id
    assert run.state is not None and run.state.skipped == 1


def test_overlap_queue_fires_the_held_time_when_the_run_ends() -> None:
    run = Run(add(overlap="queue"))
    first = fired(run.tick(T0 + S + 10))[0]
    out = run.tick(T0 + 2 * S + 10)
    assert [type(e) for e in out] == [CronFireQueued]
    after = run.outcome(succeeded(first.task_id, T0 + 2 * S + 500))
    assert [(f.scheduled_at, f.catch_up) for f in fired(after)] == [(T0 + 2 * S, False)]
    assert run.state is not None and run.state.queued == ()
    assert run.state.running == (after[0].task_id,)  # type: ignore[union-attr]


def test_overlap_parallel_fires_anyway() -> None:
    run = Run(add(overlap="parallel"))
    run.tick(T0 + S + 10)
    assert len(fired(run.tick(T0 + 2 * S + 10))) == 1
    assert run.state is not None and len(run.state.running) == 2


def test_outcomes_count_and_keep_the_last_result() -> None:
    run = Run(add())
    first = fired(run.tick(T0 + S + 10))[0]
    run.outcome(succeeded(first.task_id, T0 + S + 400))
    second = fired(run.tick(T0 + 2 * S + 10))[0]
    run.outcome(
        TaskFailed("f", T0 + 2 * S + 400, second.task_id, 1, "a1", 0, "boom", 3, cron_id="c1")
    )
    state = run.state
    assert state is not None
    assert (state.fires, state.succeeded, state.failed) == (2, 1, 1)
    assert (state.last_task_id, state.last_status, state.last_message) == (
        second.task_id,
        "failed",
        "boom",
    )
    assert state.running == ()


def test_a_rejected_fire_ends_the_run_so_the_cron_goes_on() -> None:
    run = Run(add())
    first = fired(run.tick(T0 + S + 10))[0]
    run.outcome(TaskRejected("r", T0 + S + 20, first.task_id, "a1", "414.2", "unknown agent: a1"))
    assert run.state is not None and run.state.running == ()
    assert run.state.last_status == "rejected"
    assert len(fired(run.tick(T0 + 2 * S + 10))) == 1


def test_pause_stops_fires_and_resume_schedules_from_then_without_misfires() -> None:
    run = Run(add())
    run.command(PauseCron("p", T0 + 500, "c1"))
    assert isinstance(run.log[-1], CronPaused)
    assert run.tick(T0 + 5 * S) == []
    run.command(ResumeCron("r", T0 + 5 * S + 300, "c1"))
    assert isinstance(run.log[-1], CronResumed)
    out = run.tick(T0 + 6 * S + 10)
    assert [(f.scheduled_at, f.catch_up) for f in fired(out)] == [(T0 + 6 * S, False)]
    assert not [e for e in out if isinstance(e, CronFiresMissed)]


def test_delete_stops_further_fires() -> None:
    run = Run(add())
    run.command(DeleteCron("d", T0 + 500, "c1"))
    assert run.state is not None and run.state.status == "deleted"
    assert run.tick(T0 + 5 * S) == []
    out = run.command(PauseCron("p", T0 + 6 * S, "c1"))
    assert isinstance(out[0], CronCommandRejected)


def test_agent_crons_never_fire_from_the_center() -> None:
    run = Run(add(mode="AANP"))
    assert run.state is not None and run.state.next_at == 0
    assert run.tick(T0 + 5 * S) == []


def test_answer_ids_name_the_answer_and_the_refusal() -> None:
    cmd = add()
    out = Run(cmd).log
    assert out[0].event_id in model.answer_ids(cmd)
    refused = Run().command(PauseCron("p", T0, "nope"))
    assert refused[0].event_id in model.answer_ids(PauseCron("p", T0, "nope"))


def test_the_state_survives_its_json_row() -> None:
    run = Run(add(overlap="queue"))
    run.tick(T0 + S + 10)
    run.tick(T0 + 2 * S + 10)
    assert run.state is not None
    assert model.CronState.from_dict(run.state.to_dict()) == run.state


# --- selector crons: one task per matching live agent at each fire ---

WEB = ("w1", "w2", "w3")


def by_selector(**changes: object) -> AddCron:
    return add(**{"agent_id": "", "selector": "role=web", **changes})


def test_a_selector_fire_is_one_event_with_a_task_per_agent() -> None:
    run = Run(by_selector())
    assert run.state is not None and run.state.selector == "role=web"
    [fire] = fired(run.tick(T0 + S + 10, ("w3", "w1", "w2")))
    assert fire.agent_ids == WEB  # sorted
    assert fire.task_ids == tuple(model.selector_task_id("c1", T0 + S, a) for a in WEB)
    assert len(set(fire.task_ids)) == 3
    assert run.state.running == fire.task_ids
    assert run.state.last_task_ids == fire.task_ids
    commands = model.submissions(run.state, fire)
    assert [(c.task_id, c.agent_id, c.cron_id) for c in commands] == [
        (t, a, "c1") for t, a in zip(fire.task_ids, WEB, strict=True)
    ]
    assert len({c.event_id for c in commands}) == 3
    # Each time is decided once: a repeated tick, even with other agents, decides nothing.
    assert run.tick(T0 + S + 20, ("w4",)) == []
    assert run.state.fires == 1


def test_a_single_agent_fire_still_submits_one_task() -> None:
    run = Run(add())
    [fire] = fired(run.tick(T0 + S + 10, ("ignored",)))
    assert run.state is not None
    [command] = model.submissions(run.state, fire)
    assert (command.task_id, command.agent_id) == (model.fire_task_id("c1", T0 + S), "a1")


def test_a_selector_fire_runs_until_its_last_task_ends() -> None:
    run = Run(by_selector())  # overlap skip
    [fire] = fired(run.tick(T0 + S + 10, WEB))
    run.outcome(succeeded(fire.task_ids[0], T0 + S + 300))
    run.outcome(succeeded(fire.task_ids[1], T0 + S + 400))
    out = run.tick(T0 + 2 * S + 10, WEB)  # the third still runs: the fire runs
    assert [type(e) for e in out] == [CronFireSkipped]
    assert isinstance(out[0], CronFireSkipped)
    assert out[0].running_task_id == fire.task_ids[2]
    run.outcome(succeeded(fire.task_ids[2], T0 + 2 * S + 500))
    assert run.state is not None and run.state.running == ()
    assert run.state.succeeded == 3
    assert len(fired(run.tick(T0 + 3 * S + 10, WEB))) == 1


def test_a_selector_fire_with_no_live_match_is_recorded_as_skipped() -> None:
    run = Run(by_selector())
    out = run.tick(T0 + S + 10, ())
    assert [type(e) for e in out] == [CronFireSkipped]
    assert isinstance(out[0], CronFireSkipped)
    assert out[0].running_task_id == ""
    assert "role=web" in out[0].reason
    assert run.state is not None and run.state.skipped == 1
    assert run.tick(T0 + S + 20, WEB) == []  # that time was decided
    assert len(fired(run.tick(T0 + 2 * S + 10, WEB))) == 1


def test_a_queued_selector_fire_goes_to_the_agents_matching_when_it_goes() -> None:
    run = Run(by_selector(overlap="queue"))
    [fire] = fired(run.tick(T0 + S + 10, ("w1",)))
    assert [type(e) for e in run.tick(T0 + 2 * S + 10, ("w1",))] == [CronFireQueued]
    [held] = fired(run.outcome(succeeded(fire.task_ids[0], T0 + 2 * S + 500), ("w1", "w2")))
    assert (held.scheduled_at, held.agent_ids) == (T0 + 2 * S, ("w1", "w2"))
    assert run.state is not None and run.state.queued == ()


def test_queued_selector_fires_with_no_match_are_skipped_not_held_forever() -> None:
    run = Run(by_selector(overlap="queue"))
    [fire] = fired(run.tick(T0 + S + 10, ("w1",)))
    run.tick(T0 + 2 * S + 10, ("w1",))
    run.tick(T0 + 3 * S + 10, ("w1",))
    out = run.outcome(succeeded(fire.task_ids[0], T0 + 3 * S + 500), ())
    assert [type(e) for e in out] == [CronFireSkipped, CronFireSkipped]
    assert run.state is not None and run.state.queued == () and run.state.skipped == 2


def test_a_bad_selector_cron_is_rejected_with_its_code() -> None:
    cases = {
        "403.8": by_selector(selector="role"),
        "403.1": add(agent_id=""),
        "403.2": add(selector="role=web"),  # agent and selector both
    }
    cases_mode = by_selector(mode="AANP")  # an agent cron runs on one agent
    for code, cmd in [*cases.items(), ("403.2", cases_mode)]:
        run = Run(cmd)
        assert [type(e) for e in run.log] == [CronCommandRejected], code
        assert isinstance(run.log[0], CronCommandRejected)
        assert run.log[0].code == code


def test_a_selector_state_survives_its_json_row() -> None:
    run = Run(by_selector(overlap="parallel"))
    run.tick(T0 + S + 10, WEB)
    assert run.state is not None
    assert model.CronState.from_dict(run.state.to_dict()) == run.state
    old_row = {
        k: v for k, v in run.state.to_dict().items() if k not in ("selector", "last_task_ids")
    }
    assert model.CronState.from_dict(old_row).last_task_ids == ()


def test_params_past_the_setting_are_refused_by_the_fold_too() -> None:
    big = add(params='{"a": "' + "x" * 100 + '"}')
    [refused] = model.decide(None, big, max_params_bytes=50)
    assert isinstance(refused, CronCommandRejected)
    assert refused.code == "403.3"
    assert isinstance(model.decide(None, big, max_params_bytes=500)[0], CronAdded)


def test_a_cron_for_an_agent_its_app_may_not_run_on_is_refused_413_5() -> None:
    def only_a2(app: str, agent_id: str) -> bool:
        return agent_id == "a2"

    [refused] = model.decide(None, add(), permits=only_a2)
    assert isinstance(refused, CronCommandRejected) and refused.code == "413.5"
    assert refused.reason == "app apptest may not run on agent a1"
    [added] = model.decide(None, add(agent_id="a2"), permits=only_a2)
    assert not isinstance(added, CronCommandRejected)
    # A selector cron is judged at each fire, on the agents that match then (the wiring's).
    [by_tags] = model.decide(None, by_selector(), permits=only_a2)
    assert not isinstance(by_tags, CronCommandRejected)


def test_an_update_runs_by_the_new_rule_from_then_and_keeps_the_cron_s_history() -> None:
    run = Run(add(overlap="parallel"))  # every second, whether the last run ended or not
    for at in (T0 + S, T0 + 2 * S):
        assert [f.scheduled_at for f in fired(run.tick(at + 10))] == [at]
    out = run.command(UpdateCron("u", T0 + 2 * S + 300, "c1", rule="*/5 * * * * *", name="slow"))
    assert isinstance(out[0], CronUpdated) and out[0].event_id in model.answer_ids(
        UpdateCron("u", T0, "c1")
    )
    assert run.state is not None
    assert (run.state.rule, run.state.name, run.state.fires) == ("*/5 * * * * *", "slow", 2)
    assert run.state.next_at == T0 + 5 * S
    out = [e for at in range(3, 12) for e in run.tick(T0 + at * S + 10)]  # a tick a second
    assert [(f.scheduled_at, f.catch_up) for f in fired(out)] == [
        (T0 + 5 * S, False),
        (T0 + 10 * S, False),
    ]  # the new rule's times only, on time
    assert not [e for e in out if isinstance(e, CronFiresMissed)]
    assert (run.state.params, run.state.timeout_s) == ("{}", 10)  # not given: unchanged


def test_a_new_rule_s_past_times_are_not_misfires() -> None:
    run = Run(add(rule="0 0 1 1 *"))  # once a year: nothing decided for months
    run.command(UpdateCron("u", T0 + 90 * S + 500, "c1", rule="* * * * * *"))
    assert run.state is not None and run.state.next_at == T0 + 91 * S
    out = run.tick(T0 + 91 * S + 10)
    assert [(f.scheduled_at, f.catch_up) for f in fired(out)] == [(T0 + 91 * S, False)]
    assert not [e for e in out if isinstance(e, CronFiresMissed)]


def test_updates_are_checked_as_adds_and_what_runs_where_stays() -> None:
    run = Run(add())
    bad = [
        UpdateCron("u1", T0, "c1", rule="not a rule"),
        UpdateCron("u2", T0, "c1", timezone="Mars/Olympus"),
        UpdateCron("u3", T0, "c1", timeout_s=0),
        UpdateCron("u4", T0, "c1", misfire="sometimes"),
        UpdateCron("u5", T0, "c1", params="[1]"),
    ]
    for cmd in bad:
        [refused] = run.command(cmd)
        assert isinstance(refused, CronCommandRejected) and refused.code.startswith("403"), cmd
    [empty] = run.command(UpdateCron("u6", T0, "c1"))
    assert isinstance(empty, CronCommandRejected) and empty.code == "403.1"
    [missing] = Run().command(UpdateCron("u7", T0, "nope", rule="* * * * *"))
    assert isinstance(missing, CronCommandRejected) and missing.code == "411.1"
    assert run.state is not None and run.state.rule == "* * * * * *"  # nothing changed


def test_a_paused_cron_updated_stays_paused_and_a_deleted_one_is_gone() -> None:
    run = Run(add())
    run.command(PauseCron("p", T0 + 500, "c1"))
    run.command(UpdateCron("u", T0 + S, "c1", rule="*/2 * * * * *"))
    assert run.state is not None and (run.state.status, run.state.next_at) == ("paused", 0)
    run.command(ResumeCron("r", T0 + 3 * S + 100, "c1"))
    assert run.state.next_at == T0 + 4 * S  # the new rule's next time after the resume
    run.command(DeleteCron("d", T0 + 5 * S, "c1"))
    [gone] = run.command(UpdateCron("u2", T0 + 6 * S, "c1", rule="* * * * *"))
    assert isinstance(gone, CronCommandRejected) and gone.code == "411.1"


def test_an_updated_state_survives_its_json_row() -> None:
    run = Run(add(mode="AANP"))
    run.command(UpdateCron("u", T0 + S, "c1", params='{"n":1}', timeout_s=30, overlap="queue"))
    assert run.state is not None
    again = model.CronState.from_dict(run.state.to_dict())
    assert again == run.state and (again.params, again.timeout_s) == ('{"n":1}', 30)
    assert again.next_at == 0  # an agent cron still fires from its agent only
