"""Agent liveness, without Kafka."""

from __future__ import annotations

from elves.schemas.events import AgentDown, AgentUp, Heartbeat
from elves.streams.agents import model

T0 = 1_700_000_000_000


def beat(at: int, event_id: str = "") -> Heartbeat:
    return Heartbeat(event_id or f"hb{at}", at, "a1", "host", 1.0, T0, {"apptest": "1.0"})


def run(*events: object) -> model.AgentState | None:
    state = None
    for e in events:
        state = model.apply(state, e)  # type: ignore[arg-type]
    return state


def test_first_heartbeat_brings_the_agent_up_once() -> None:
    [up] = model.decide_heartbeat(None, beat(T0))
    assert isinstance(up, AgentUp)
    state = run(beat(T0), up)
    assert state is not None and state.up and state.apps == {"apptest": "1.0"}
    assert model.decide_heartbeat(state, beat(T0 + 1000)) == []


def test_an_agent_is_down_after_the_configured_missed_beats_only() -> None:
    [up] = model.decide_heartbeat(None, beat(T0))
    state = run(beat(T0), up)
    assert state is not None
    assert model.decide_check(state, T0 + 2999, missed_beats=3) == []
    [down] = model.decide_check(state, T0 + 3000, missed_beats=3)
    assert isinstance(down, AgentDown) and down.missed == 3
    # the clock may notice the same silence twice: the same event id, so the log keeps one
    [again] = model.decide_check(state, T0 + 3500, missed_beats=3)
    assert again.event_id == down.event_id
    state = model.apply(state, down)
    assert state is not None and not state.up
    assert model.decide_check(state, T0 + 9000, missed_beats=3) == []


def test_a_worker_that_takes_liveness_over_counts_silence_from_the_take_over() -> None:
    [up] = model.decide_heartbeat(None, beat(T0))
    state = run(beat(T0), up)
    assert state is not None
    # Restored from the changelog at T0 + 5000: the beats since T0 went to the former decider.
    taken_over = T0 + 5000
    assert model.decide_check(state, T0 + 7999, 3, watched_since=taken_over) == []
    [down] = model.decide_check(state, T0 + 8000, 3, watched_since=taken_over)
    # The event still says how long the agent was silent, and is the same silence's id.
    assert down.missed == 8
    assert down.event_id == model.decide_check(state, T0 + 3000, 3)[0].event_id


def test_a_down_agent_comes_back_up_with_its_next_heartbeat() -> None:
    [up] = model.decide_heartbeat(None, beat(T0))
    state = run(beat(T0), up)
    [down] = model.decide_check(state, T0 + 5000, 3)  # type: ignore[arg-type]
    state = model.apply(state, down)
    [back] = model.decide_heartbeat(state, beat(T0 + 6000))
    assert isinstance(back, AgentUp)
    state = model.apply(model.apply(state, beat(T0 + 6000)), back)
    assert state is not None and state.up


def test_a_down_noticed_before_a_fresh_beat_is_ignored() -> None:
    [up] = model.decide_heartbeat(None, beat(T0))
    state = run(beat(T0), up)
    [down] = model.decide_check(state, T0 + 5000, 3)  # type: ignore[arg-type]
    state = model.apply(state, beat(T0 + 5100))
    assert model.apply(state, down).up  # type: ignore[union-attr]


def test_fold_builds_every_agent() -> None:
    [up] = model.decide_heartbeat(None, beat(T0))
    agents = model.fold([beat(T0), up])
    assert list(agents) == ["a1"] and agents["a1"].up


def test_an_agent_has_the_tags_of_its_latest_heartbeat() -> None:
    tagged = Heartbeat("t1", T0 + 1000, "a1", "host", 1.0, T0, tags={"role": "web"})
    retagged = Heartbeat("t2", T0 + 2000, "a1", "host", 1.0, T0, tags={"role": "db"})
    state = run(beat(T0), tagged)
    assert state is not None and state.tags == {"role": "web"}
    state = run(beat(T0), tagged, retagged, tagged)  # a late, older beat changes nothing
    assert state is not None and state.tags == {"role": "db"}
