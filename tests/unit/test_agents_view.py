"""The streams' agent view without Kafka: which live, accepted agents a selector matches, and
what the task fold is told of an agent."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.config import Settings
from elves.schemas.events import AgentAccepted, AgentDown, AgentTagsSet, AgentUp, Heartbeat
from elves.signing import registration
from elves.streams.agents.view import AgentView

T0 = 1_700_000_000_000


def beat(agent_id: str, at: int, **tags: str) -> Heartbeat:
    return Heartbeat(f"{agent_id}-{at}", at, agent_id, "host", 1.0, T0, tags=tags)


def enrol(view: AgentView, agent_id: str, accept: bool = True) -> None:
    registered = registration(Ed25519PrivateKey.generate(), agent_id, "host", f"r-{agent_id}", T0)
    view.apply_enrolment(registered)
    if accept:
        view.apply_enrolment(AgentAccepted(f"a-{agent_id}", T0, agent_id, registered.public_key))


def test_matching_names_the_live_accepted_agents_with_the_tags() -> None:
    view = AgentView(Settings())  # not started: fed by hand
    for agent_id, role in (("w2", "web"), ("w1", "web"), ("d1", "db"), ("w3", "web")):
        enrol(view, agent_id)
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


def test_a_pending_agent_matches_nothing_and_is_pending_to_the_task_fold() -> None:
    view = AgentView(Settings())
    enrol(view, "p1", accept=False)
    view.apply_heartbeat(beat("p1", T0, role="web"))
    view.apply(AgentUp("up-p1", T0, "p1", T0))
    assert view.matching("role=web") == []
    assert view.status("p1") == "pending"
    enrol(view, "p1")  # a new key, accepted
    assert view.matching("role=web") == ["p1"]
    assert view.status("p1") == "up"


def test_statuses_for_the_task_fold() -> None:
    view = AgentView(Settings())
    assert view.status("nobody") == "unknown"
    view.apply_heartbeat(beat("old", T0))  # heard from, never registered
    view.apply(AgentUp("up-old", T0, "old", T0))
    assert view.status("old") == "pending"
    enrol(view, "quiet")  # accepted, never heard from
    assert view.status("quiet") == "down"


def test_admin_tags_are_laid_over_the_heartbeats() -> None:
    view = AgentView(Settings())
    enrol(view, "a1")
    view.apply_heartbeat(beat("a1", T0, role="db", dc="bj"))
    view.apply(AgentUp("up-a1", T0, "a1", T0))
    view.apply_enrolment(AgentTagsSet("t1", T0, "a1", {"role": "web", "rack": "r7"}))
    assert view.tags("a1") == {"role": "web", "dc": "bj", "rack": "r7"}
    assert view.matching("role=web,rack=r7") == ["a1"]
    view.apply_enrolment(AgentTagsSet("t2", T0 + 1, "a1", {}))  # cleared
    assert view.matching("role=db") == ["a1"]
