"""The outbox's durability and dedupe, without a broker (delivery is in the integration tests)."""

from __future__ import annotations

from pathlib import Path

from elves.agent.identity import agent_id, new_agent_id
from elves.agent.outbox import Outbox, Unended
from elves.config import Settings


def test_rows_and_claims_survive_a_reopen(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    box = Outbox(settings)
    box.put("t", b"k", b"v1")
    assert box.claim("task-1", 1, ("t", b"k", b"started"))
    assert box.close(timeout=0) == 2  # never started: nothing delivered
    again = Outbox(settings)
    try:
        assert again.pending() == 2
        assert again.has_run("task-1", 1)
        assert not again.claim("task-1", 1, ("t", b"k", b"twice"))
        assert again.pending() == 2  # the refused claim wrote nothing
        assert again.claim("task-1", 2)  # a retry is a new attempt
    finally:
        again.close(timeout=0)


def test_a_row_put_without_fsync_is_kept_in_order_and_the_next_stays_durable(
    tmp_path: Path,
) -> None:
    settings = Settings(state_dir=tmp_path)
    box = Outbox(settings)
    box.put("t", b"k", b"started", durable=False)
    box.put("t", b"k", b"result")
    assert box.query("PRAGMA synchronous") == [(2,)]  # FULL again after the light commit
    box.close(timeout=0)
    again = Outbox(settings)
    try:
        assert again.query("SELECT value FROM outbox ORDER BY seq") == [(b"started",), (b"result",)]
    finally:
        again.close(timeout=0)


def test_agent_id_is_made_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    first = agent_id(settings)
    assert first == agent_id(settings)
    assert (tmp_path / "agent" / "agent_id").read_text().strip() == first
    assert agent_id(Settings(state_dir=tmp_path, agent_id="given")) == "given"


def test_new_agent_ids_are_topic_safe() -> None:
    made = new_agent_id("web 01.example/com")
    assert made.startswith("web-01-example-com-")
    assert len(made.rsplit("-", 1)[1]) == 6


def test_an_attempt_not_ended_is_listed_with_its_dispatch(tmp_path: Path) -> None:
    """What the agent's next start needs to report it lost."""
    box = Outbox(Settings(state_dir=tmp_path))
    try:
        with box.transaction() as txn:
            assert txn.claim("t1", 1, dispatch_id="d1", app="sleeper", func="sleep")
            assert txn.claim("t2", 1, dispatch_id="d2", app="noop", func="noop")
            assert txn.claim("t3", 1, dispatch_id="d3", app="noop", func="noop", ended=True)
        with box.transaction() as txn:
            txn.ended("t2", 1)
        assert box.unended() == [Unended("t1", 1, "d1", "sleeper", "sleep")]
    finally:
        box.close(timeout=0)
