"""The enrolment fold, without Kafka: salt-key's pending, accepted and rejected."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.errors import UnknownAgent
from elves.schemas.events import (
    AgentAccepted,
    AgentRegistered,
    AgentRejected,
    AgentTagsSet,
    Event,
)
from elves.signing import registration
from elves.streams.agents import enrolment
from elves.streams.agents.enrolment import Enrolment

T0 = 1_700_000_000_000


def register(
    agent_id: str = "a1", at: int = T0, key: Ed25519PrivateKey | None = None
) -> AgentRegistered:
    key = key or Ed25519PrivateKey.generate()
    return registration(key, agent_id, "host-1", f"reg-{at}", at)


def fold(*events: Event) -> Enrolment | None:
    return enrolment.fold(events).get("a1")


def accept(state: Enrolment | None, at: int = T0 + 10) -> AgentAccepted:
    [accepted] = enrolment.decide_accept(state, f"acc-{at}", at, "ops")
    assert isinstance(accepted, AgentAccepted)
    return accepted


def test_a_registered_agent_is_pending_until_accepted() -> None:
    registered = register()
    state = fold(registered)
    assert state is not None and state.status == "pending"
    assert (state.public_key, state.hostname) == (registered.public_key, "host-1")
    accepted = accept(state)
    assert accepted.public_key == registered.public_key  # the key accepted is named
    after = fold(registered, accepted)
    assert after is not None and after.status == "accepted"
    assert after.decided_by == "ops"
    assert enrolment.decide_accept(after, "again", T0 + 20, None) == []  # already: nothing new


def test_the_same_key_registered_again_stays_accepted_a_new_key_is_pending_again() -> None:
    key = Ed25519PrivateKey.generate()
    first = register(key=key)
    accepted = accept(fold(first))
    restarted = register(at=T0 + 100, key=key)
    assert fold(first, accepted, restarted).status == "accepted"  # type: ignore[union-attr]
    new_key = register(at=T0 + 200)
    state = fold(first, accepted, restarted, new_key)
    assert state is not None and state.status == "pending"
    assert state.accepted_key == first.public_key  # the old acceptance does not cover it


def test_an_accept_of_an_older_key_does_not_accept_the_new_one() -> None:
    first = register()
    decided_on = fold(first)
    second = register(at=T0 + 5)  # re-registered between the operator's look and the accept
    state = fold(first, second, accept(decided_on))
    assert state is not None and state.status == "pending"


def test_rejected_stays_rejected_whatever_key_until_accepted_again() -> None:
    first = register()
    [rejected] = enrolment.decide_reject(fold(first), "a1", "rej", T0 + 10, "ops", "unknown host")
    assert isinstance(rejected, AgentRejected) and rejected.reason == "unknown host"
    again = register(at=T0 + 20)
    state = fold(first, rejected, again)
    assert state is not None and state.status == "rejected"
    assert enrolment.decide_reject(state, "a1", "x", T0 + 30, None, "") == []
    state = fold(first, rejected, again, accept(state, T0 + 40))
    assert state is not None and state.status == "accepted"


def test_a_registration_without_proof_is_ignored() -> None:
    registered = register()
    forged = dataclasses.replace(registered, public_key=register().public_key)  # not its key
    assert fold(forged) is None
    accepted = accept(fold(registered))
    late_forgery = dataclasses.replace(forged, occurred_at=T0 + 50)
    state = fold(registered, accepted, late_forgery)
    assert state is not None and state.status == "accepted"


def test_an_older_registration_read_late_changes_nothing() -> None:
    new, old = register(at=T0 + 10), register(at=T0)
    state = fold(new, old)
    assert state is not None and state.public_key == new.public_key


def test_nothing_to_accept_before_a_registration() -> None:
    with pytest.raises(UnknownAgent):
        enrolment.decide_accept(None, "x", T0, None)
    tags_only = fold(AgentTagsSet("t", T0, "a1", {"role": "web"}))
    assert tags_only is not None and tags_only.status == "unregistered"
    with pytest.raises(UnknownAgent):
        enrolment.decide_accept(tags_only, "x", T0, None)


def test_admin_tags_overlay_config_tags_and_replace_each_other() -> None:
    state = fold(register(), AgentTagsSet("t1", T0, "a1", {"role": "web", "rack": "r1"}))
    assert enrolment.effective_tags({"role": "db", "dc": "bj"}, state) == {
        "role": "web",
        "dc": "bj",
        "rack": "r1",
    }
    cleared = enrolment.apply(state, AgentTagsSet("t2", T0 + 1, "a1", {}))
    assert enrolment.effective_tags({"role": "db"}, cleared) == {"role": "db"}
    assert enrolment.effective_tags({"role": "db"}, None) == {"role": "db"}


def test_the_listing_names_the_status_and_key() -> None:
    registered = register()
    shown = enrolment.to_json(fold(registered))
    assert shown["enrolment"] == "pending" and len(str(shown["key_id"])) == 16
    assert enrolment.to_json(None)["enrolment"] == "unregistered"
