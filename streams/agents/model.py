"""The agent liveness fold: heartbeats in, `AgentUp` and `AgentDown` out.

An agent is up from its first heartbeat (or the first after being down) and down once it has
missed `missed_beats` of its own announced intervals. Pure: `now` is an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from elves.schemas.events import AgentDown, AgentUp, Event, Heartbeat, derived_id


@dataclass(frozen=True)
class AgentState:
    agent_id: str
    up: bool
    last_seen_at: int
    interval_s: float
    hostname: str = ""
    started_at: int = 0
    apps: Mapping[str, str] = field(default_factory=dict)
    load1: float = 0.0
    tags: Mapping[str, str] = field(default_factory=dict)  # from the latest heartbeat
    install_errors: Mapping[str, str] = field(default_factory=dict)  # app -> why not installed


def decide_heartbeat(state: AgentState | None, beat: Heartbeat) -> list[Event]:
    if state is not None and state.up:
        return []
    return [
        AgentUp(
            event_id=derived_id(beat.event_id, "up"),
            occurred_at=beat.occurred_at,
            agent_id=beat.agent_id,
            last_seen_at=beat.occurred_at,
        )
    ]


def silent_for(state: AgentState, now: int) -> int:
    """How many whole heartbeat intervals have passed without a beat."""
    interval_ms = max(1, int(state.interval_s * 1000))
    return max(0, (now - state.last_seen_at) // interval_ms)


def decide_check(
    state: AgentState, now: int, missed_beats: int, watched_since: int = 0
) -> list[Event]:
    """`AgentDown` once the agent has missed `missed_beats` intervals while someone listened.

    `watched_since` is when the deciding worker began to read heartbeats as their decider: a
    worker that takes liveness over from another has not heard the beats the other read last,
    so silence before it took over is not counted (a hand-over once declared a live agent down).
    """
    missed = silent_for(state, now)
    heard_from = replace(state, last_seen_at=max(state.last_seen_at, watched_since))
    if not state.up or silent_for(heard_from, now) < missed_beats:
        return []
    return [
        AgentDown(
            # One id per silence: the clock may notice it on several ticks, the log keeps one.
            event_id=derived_id(
                f"{state.agent_id}:{state.last_seen_at}", "down", at=state.last_seen_at
            ),
            occurred_at=now,
            agent_id=state.agent_id,
            last_seen_at=state.last_seen_at,
            missed=missed,
        )
    ]


def apply(state: AgentState | None, event: Event) -> AgentState | None:
    match event:
        case Heartbeat():
            if state is not None and event.occurred_at < state.last_seen_at:
                return state  # an older beat delivered late says nothing new
            base = state or AgentState(event.agent_id, False, event.occurred_at, event.interval_s)
            return replace(
                base,
                last_seen_at=event.occurred_at,
                interval_s=event.interval_s,
                hostname=event.hostname,
                started_at=event.started_at,
                apps=dict(event.apps),
                load1=event.load1,
                tags=dict(event.tags),
                install_errors=dict(event.install_errors),
            )
        case AgentUp():
            base = state or AgentState(event.agent_id, True, event.last_seen_at, 60.0)
            return replace(base, up=True)
        case AgentDown() if state is not None:
            if state.last_seen_at > event.last_seen_at:
                return state  # a beat came after the silence that was noticed: still up
            return replace(state, up=False)
    return state


def fold(events: Iterable[Event]) -> dict[str, AgentState]:
    agents: dict[str, AgentState] = {}
    for event in events:
        agent_id = getattr(event, "agent_id", None)
        if agent_id is None:
            continue
        new = apply(agents.get(agent_id), event)
        if new is not None:
            agents[agent_id] = new
    return agents
