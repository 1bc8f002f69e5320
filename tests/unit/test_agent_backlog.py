"""The agent's backlog: dispatches read while every worker is busy, and the read position it
may store (never past a dispatch still to start)."""

from __future__ import annotations

from elves.agent.backlog import Backlog


def test_with_nothing_kept_each_message_handled_is_stored_at_once() -> None:
    backlog: Backlog[str, int] = Backlog(most=3)
    assert backlog.first() is None
    assert backlog.handled(7) == 7


def test_nothing_past_a_kept_dispatch_is_stored_until_the_last_one_starts() -> None:
    backlog: Backlog[str, int] = Backlog(most=3)
    backlog.keep("dispatch-a", 1)
    backlog.keep("dispatch-b", 2)
    assert backlog.handled(3) is None  # a cancel read behind them: acted on, not stored
    assert backlog.first() == "dispatch-a" and backlog.kept() == ["dispatch-a", "dispatch-b"]
    assert backlog.started() is None  # b still waits, before the cancel's position
    assert backlog.first() == "dispatch-b"
    assert backlog.started() == 3  # all read so far is acted on: the newest position
    assert backlog.first() is None and backlog.handled(4) == 4


def test_the_last_kept_dispatch_stores_its_own_position_when_nothing_came_after() -> None:
    backlog: Backlog[str, int] = Backlog(most=3)
    backlog.keep("dispatch-a", 5)
    assert backlog.started() == 5


def test_a_full_backlog_says_so() -> None:
    backlog: Backlog[str, int] = Backlog(most=2)
    backlog.keep("a", 1)
    assert not backlog.full
    backlog.keep("b", 2)
    assert backlog.full and len(backlog) == 2
