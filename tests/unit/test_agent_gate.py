"""The agent's checks on its dispatch topic, without Kafka: wrong agent, expiry, replays."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from elves.agent.gate import Gate, where
from elves.agent.outbox import Outbox
from elves.config import Settings
from elves.errors import DispatchExpired, DispatchReplayed, DispatchWrongAgent
from elves.schemas.codec import CODEC
from elves.schemas.events import DispatchRefused, TaskDispatched
from elves.signing import center_signer

NOW = 1_700_000_000_000


@dataclass
class Msg:
    """What the gate reads of a Kafka message: its place and its timestamp."""

    at: int
    written_at: int = 1_700_000_000_000

    def timestamp(self) -> tuple[int, int]:
        return 1, self.written_at  # TIMESTAMP_CREATE_TIME

    def topic(self) -> str:
        return "p.dispatch.a1"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.at


def place(offset: int) -> Any:
    return Msg(offset)  # stands in for a confluent_kafka Message


def dispatch(agent_id: str = "a1") -> TaskDispatched:
    return TaskDispatched(
        "e1", NOW, "t1", 1, agent_id, "apptest", "helloword", "{}", 10, NOW + 15_000
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path, topic_prefix="p.")


@pytest.fixture
def gate(settings: Settings) -> Iterator[Gate]:
    outbox = Outbox(settings)
    yield Gate(settings, "a1", outbox)
    outbox.close(timeout=0)


def test_one_for_another_agent_or_expired_is_refused(settings: Settings, gate: Gate) -> None:
    signer = center_signer(settings)
    with pytest.raises(DispatchWrongAgent) as other:
        gate.open(signer.seal(dispatch("a2"), NOW), NOW)
    assert other.value.details["task_id"] == "t1"
    assert gate.open(signer.seal(dispatch(), NOW), NOW + 15_000).event == dispatch()
    with pytest.raises(DispatchExpired):
        gate.open(signer.seal(dispatch(), NOW), NOW + 15_001)


def test_the_same_bytes_elsewhere_are_a_replay_at_the_same_place_a_redelivery(
    settings: Settings, gate: Gate
) -> None:
    signer = center_signer(settings)
    data = signer.seal(dispatch(), NOW)
    opened = gate.open(data, NOW)
    first = where(place(5))
    assert gate.delivery(opened, first) == "new"
    assert gate.claim(opened, first)
    assert gate.delivery(opened, first) == "again"  # Kafka read it again after a crash
    with pytest.raises(DispatchReplayed) as replay:
        gate.delivery(gate.open(data, NOW), where(place(9)))
    assert "p.dispatch.a1:0:5" in replay.value.message
    # The same attempt signed again (the center decided twice): other bytes, so no replay,
    # but the attempt's claim keeps it from running twice.
    resent = gate.open(signer.seal(dispatch(), NOW + 1), NOW)
    assert resent.digest != opened.digest
    assert gate.delivery(resent, where(place(12))) == "new"
    assert not gate.claim(resent, where(place(12)))


def test_a_refusal_is_a_security_event_with_the_message_place(
    settings: Settings, gate: Gate
) -> None:
    with pytest.raises(DispatchWrongAgent) as refused:
        gate.open(center_signer(settings).seal(dispatch("a2"), NOW), NOW)
    topic, key, value = gate.refusal(refused.value, place(3), NOW)
    assert (topic, key) == ("p.security", b"a1")
    event = CODEC.decode(value)
    assert isinstance(event, DispatchRefused)
    assert (event.code, event.task_id, event.offset) == ("416.3", "t1", 3)
    again = gate.refusal(refused.value, place(3), NOW + 5)
    assert CODEC.decode(again[2]).event_id == event.event_id  # the same refusal after a crash
    # It sorts by the time the refused record was written (the audit's lookups stay cheap).
    assert uuid.UUID(event.event_id).int >> 80 == place(3).written_at


def test_a_claim_writes_its_rows_with_it_and_only_the_first_time(
    settings: Settings, gate: Gate
) -> None:
    """A dispatch refused for its app claims its attempt and writes the refusal and the failed
    result in the same commit: a redelivery after a crash reports nothing twice."""
    opened = gate.open(center_signer(settings).seal(dispatch(), NOW), NOW)
    rows = [("p.security", b"a1", b"refused"), ("p.results", b"t1", b"failed")]
    assert gate.claim(opened, where(place(5)), *rows, ended=True)
    assert not gate.claim(opened, where(place(5)), *rows, ended=True)
    stored = gate.outbox.query("SELECT topic, key, value FROM outbox ORDER BY seq")
    assert [tuple(row) for row in stored] == rows
