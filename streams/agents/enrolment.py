"""Agent enrolment, as salt-key does it: a pure fold over the `enrolments` topic.

An agent registers its public key (`AgentRegistered`, signed with that key) and is pending until
an operator accepts it. `AgentAccepted` names the key it accepts, so the agent is accepted only
while it is registered with that key: a new key (a reinstalled or an impostor host under the same
id) makes it pending again. `AgentRejected` holds whatever key the agent registers next, until an
operator accepts it again. `AgentTagsSet` are the operator's tags, laid over the heartbeats'.

The gateway folds the topic to list agents and to decide an accept or a reject before it writes;
every streams worker folds it to refuse tasks for agents that are not accepted (414.4). No Kafka,
no clock: times and ids arrive on the events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from elves.errors import UnknownAgent
from elves.schemas.events import (
    AgentAccepted,
    AgentRegistered,
    AgentRejected,
    AgentTagsSet,
    Event,
)
from elves.signing import registration_valid, short_id

Status = Literal["unregistered", "pending", "accepted", "rejected"]
ENROLMENT_EVENTS = (AgentRegistered, AgentAccepted, AgentRejected, AgentTagsSet)


@dataclass(frozen=True)
class Enrolment:
    agent_id: str
    public_key: str = ""  # hex; the key of the newest valid registration ("" none yet)
    hostname: str = ""
    registered_at: int = 0
    accepted_key: str = ""  # the key an operator accepted ("" none)
    rejected: bool = False
    decided_at: int = 0  # the operator's last accept or reject
    decided_by: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)  # the operator's (admin) tags

    @property
    def status(self) -> Status:
        if self.rejected:
            return "rejected"
        if not self.public_key:
            return "unregistered"  # only an operator's word so far (tags, an early accept)
        return "accepted" if self.public_key == self.accepted_key else "pending"


def effective_tags(config: Mapping[str, str], enrolment: Enrolment | None) -> dict[str, str]:
    """What selectors match: the heartbeat's (config) tags, overlaid by the operator's."""
    return {**config, **(enrolment.tags if enrolment is not None else {})}


def apply(state: Enrolment | None, event: Event) -> Enrolment | None:
    match event:
        case AgentRegistered():
            if not registration_valid(event):
                return state  # no proof that the sender holds the key: not a registration
            if state is not None and event.occurred_at < state.registered_at:
                return state  # an older registration read late says nothing new
            return replace(
                state or Enrolment(event.agent_id),
                public_key=event.public_key,
                hostname=event.hostname,
                registered_at=event.occurred_at,
            )
        case AgentAccepted():
            return replace(
                state or Enrolment(event.agent_id),
                accepted_key=event.public_key,
                rejected=False,
                decided_at=event.occurred_at,
                decided_by=event.accepted_by,
            )
        case AgentRejected():
            return replace(
                state or Enrolment(event.agent_id),
                accepted_key="",
                rejected=True,
                decided_at=event.occurred_at,
                decided_by=event.rejected_by,
            )
        case AgentTagsSet():
            return replace(state or Enrolment(event.agent_id), tags=dict(event.tags))
    return state


def fold(
    events: Iterable[Event], known: Mapping[str, Enrolment] | None = None
) -> dict[str, Enrolment]:
    out = dict(known or {})
    for event in events:
        if isinstance(event, ENROLMENT_EVENTS):
            new = apply(out.get(event.agent_id), event)
            if new is not None:
                out[event.agent_id] = new
    return out


def decide_accept(state: Enrolment | None, event_id: str, now: int, by: str | None) -> list[Event]:
    """Accept the key the agent is registered with now; [] if it is accepted already."""
    if state is None or not state.public_key:
        agent = state.agent_id if state is not None else "that agent"
        raise UnknownAgent(f"{agent} has not registered: there is no key to accept")
    if state.status == "accepted":
        return []
    return [AgentAccepted(event_id, now, state.agent_id, state.public_key, accepted_by=by)]


def decide_reject(
    state: Enrolment | None, agent_id: str, event_id: str, now: int, by: str | None, reason: str
) -> list[Event]:
    """Reject an agent that registered or is heard from; [] if it is rejected already."""
    if state is not None and state.status == "rejected":
        return []
    key = state.public_key if state is not None else ""
    return [AgentRejected(event_id, now, agent_id, key, reason=reason, rejected_by=by)]


def to_json(state: Enrolment | None) -> dict[str, object]:
    """The enrolment part of an agent's listing."""
    if state is None:
        return {"enrolment": "unregistered", "key_id": "", "admin_tags": {}}
    return {
        "enrolment": state.status,
        "key_id": short_id(state.public_key),
        "accepted_key_id": short_id(state.accepted_key),
        "registered_at": state.registered_at or None,
        "decided_at": state.decided_at or None,
        "decided_by": state.decided_by,
        "admin_tags": dict(state.tags),
    }
