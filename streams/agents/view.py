"""Every streams worker's own view of which agents are up, read from the `agents` topic, and
of each agent's tags, read from the `heartbeats` topic (for selector crons).

The liveness fold runs in one worker (the `agents` table has one partition), but every worker's
task lifecycle must tell an unknown agent from a down or an up one. Faust's tables give a worker
only its own partitions, and its GlobalTable is unreliable across workers (faust-streaming
issue #283), so each worker reads the compacted `agents` topic itself: from the beginning, in
a thread, without a consumer group, like the gateway's listener does. The compacted
`heartbeats` topic (one partition) is read by the same consumer: an agent's tags are those of
its latest heartbeat.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from elves.config import Settings
from elves.errors import BadSelector, DecodeError
from elves.kafka import consumer
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentDown, AgentUp, Heartbeat
from elves.selectors import matches, parse_selector
from elves.streams.tasks.model import AgentStatus

log = logging.getLogger("elves.streams.agents")


class AgentView:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._up: dict[str, bool] = {}  # agent id -> up; a dict read and written whole
        # agent id -> (latest heartbeat's time, its tags); each value replaced whole
        self._tags: dict[str, tuple[int, Mapping[str, str]]] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="agent-view", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start reading, and return once the view has read what the topic held at start: a
        worker that decided tasks before that would call known agents unknown."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the agents topic was not read within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def status(self, agent_id: str) -> AgentStatus:
        up = self._up.get(agent_id)
        if up is None:
            return "unknown"
        return "up" if up else "down"

    def tags(self, agent_id: str) -> Mapping[str, str]:
        return self._tags.get(agent_id, (0, {}))[1]

    def matching(self, selector: str) -> list[str]:
        """The agents that are up and carry the tags `selector` asks for, sorted."""
        try:
            parsed = parse_selector(selector)
        except BadSelector:
            return []  # checked when the cron was added; an old bad one matches nothing
        up = [agent_id for agent_id, is_up in list(self._up.items()) if is_up]
        return sorted(a for a in up if matches(parsed, self.tags(a)))

    def apply_heartbeat(self, beat: Heartbeat) -> None:
        seen_at, _ = self._tags.get(beat.agent_id, (0, {}))
        if beat.occurred_at >= seen_at:
            self._tags[beat.agent_id] = (beat.occurred_at, dict(beat.tags))

    def apply(self, event: AgentUp | AgentDown) -> None:
        """Also called by the liveness fold's own worker, so that it need not wait for the
        topic to tell it what it just decided."""
        self._up[event.agent_id] = isinstance(event, AgentUp)

    def _run(self) -> None:
        s = self.settings
        c = consumer(s, f"{s.topic_prefix}agent-view-{uuid.uuid4().hex[:8]}")
        parts = [TopicPartition(s.topic(n), 0, OFFSET_BEGINNING) for n in ("agents", "heartbeats")]
        c.assign(parts)
        behind: dict[str, int] = {}  # topic -> the end it had at start, until read up to it
        for tp in parts:
            low, high = c.get_watermark_offsets(tp, timeout=10)
            if high > low:
                behind[tp.topic] = high
        if not behind:
            self._ready.set()
        try:
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                topic = msg.topic() or ""
                if topic in behind and (msg.offset() or 0) >= behind[topic] - 1:
                    del behind[topic]
                    if not behind:
                        self._ready.set()
                try:
                    event = CODEC.decode(msg.value())
                except DecodeError:
                    continue  # the liveness flow dead-letters what it cannot read
                if isinstance(event, AgentUp | AgentDown):
                    self.apply(event)
                elif isinstance(event, Heartbeat):
                    self.apply_heartbeat(event)
        finally:
            c.close()
