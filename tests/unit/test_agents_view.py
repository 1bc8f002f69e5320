"""The streams' agent view without Kafka: which live agents a selector matches."""

from __future__ import annotations

from elves.config import Settings
from elves.schemas.events import AgentDown, AgentUp, Heartbeat
from elves.streams.agents.view import AgentView

T0 = 1_700_000_000_000


def beat(agent_id: str, at: int, **tags: str) -> Heartbeat:
    return Heartbeat(f"{agent_id}-{at}", at, agent_id, "host", 1.0, T0, tags=tags)


def test_matching_names_the_live_agents_with_the_tags() -> None:
    view = AgentView(Settings())  # not started: fed by hand
    for agent_id, role in (("w2", "web"), ("w1", "web"), ("d1", "db"), ("w3", "web")):
        view.apply_heartbeat(beat(agent_id, T0, role=role, dc="bj"))
        view.apply(AgentUp(f"up-{agent_id}", T0, agent_id, T0))
    view.apply(AgentDown("down-w3", T0 + 5000, "w3", T0, 3))
    assert view.matching("role=web") == ["w1", "w2"]  # sorted; w3 is down
    assert view.matching("role=web,dc!=bj") == []
    assert view.matching("dc=bj,role!=web") == ["d1"]
    view.apply_heartbeat(beat("w1", T0 + 1000, role="db"))  # retagged
    view.apply_heartbeat(beat("w1", T0 + 500, role="web"))  # late, older: ignored
    assert view.matching("role=web") == ["w2"]
    assert view.matching("not a selector") == []
