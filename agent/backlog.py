"""The dispatches an agent has read while every worker was busy, and which read position it may
store. Pure: no Kafka, no threads (the daemon's consumer thread is its only user).

Why read while busy at all: a cancel comes on the same topic as the dispatches, and it must reach
a task that runs now even when every worker is taken, not once one is free. So a busy agent goes
on reading: it acts on cancels and cron changes at once and keeps the dispatches here, in order,
to start as workers free up. A kept dispatch is not claimed yet, so no read position past it is
stored: after a crash Kafka delivers it again (and what came after it, which the agent
recognises as delivered before).
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

Item = TypeVar("Item")
Position = TypeVar("Position")


class Backlog(Generic[Item, Position]):
    """Kept dispatches (`Item`s) with their read positions, and the newest position handled."""

    def __init__(self, most: int) -> None:
        self.most = most  # beyond this many kept, the agent stops reading (pauses) instead
        self._kept: deque[tuple[Item, Position]] = deque()
        self._newest: Position | None = None  # handled while something older was kept

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def full(self) -> bool:
        return len(self._kept) >= self.most

    def keep(self, item: Item, position: Position) -> None:
        self._kept.append((item, position))

    def first(self) -> Item | None:
        """The oldest kept dispatch, the next to start; None when nothing is kept."""
        return self._kept[0][0] if self._kept else None

    def kept(self) -> list[Item]:
        return [item for item, _ in self._kept]

    def handled(self, position: Position) -> Position | None:
        """A message read after every kept one was acted on: the position to store now, or
        None while an older dispatch is kept (its position comes with the last one's start)."""
        if not self._kept:
            return position
        self._newest = position
        return None

    def started(self) -> Position | None:
        """The oldest kept dispatch was acted on (started, refused or ignored): drop it; the
        position to store now (the newest handled once nothing is kept), or None."""
        _, position = self._kept.popleft()
        if self._kept:
            return None
        newest, self._newest = self._newest, None
        return newest if newest is not None else position
