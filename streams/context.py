"""What every fold on the folds loop is given: the loop to send through, and what it judges by."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from elves.config import Settings
from elves.permissions import Permits
from elves.signing import Signer
from elves.streams.agents.view import AgentView
from elves.streams.loop import Loop
from elves.topics import ensure_dispatch_topic


@dataclass
class FoldContext:
    loop: Loop
    settings: Settings
    agent_view: AgentView
    permits: Permits
    signer: Signer
    now_ms: Callable[[], int]
    _dispatch_topics: set[str] = field(default_factory=set)

    def dispatch_topic(self, agent_id: str) -> str:
        """An agent's dispatch topic, made on first use (the broker makes no topic itself)."""
        topic = self.settings.dispatch_topic(agent_id)
        if topic not in self._dispatch_topics:
            ensure_dispatch_topic(self.settings, agent_id)
            self._dispatch_topics.add(topic)
        return topic
