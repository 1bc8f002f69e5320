"""Every streams worker's own view of which agents are up, read from the `agents` topic, of
each agent's tags, read from the `heartbeats` topic (for selector crons), and of each agent's
enrolment, read from the `enrolments` topic (nothing goes to an agent that is not accepted).

The liveness fold runs in one worker (the `agents` table has one partition), but every worker's
task lifecycle must tell an unknown agent from a down or an up one. Faust's tables give a worker
only its own partitions, and its GlobalTable is unreliable across workers (faust-streaming
issue #283), so each worker reads the compacted `agents` topic itself: from the beginning, in
a thread, without a consumer group, like the gateway's listener does. The compacted
`heartbeats` topic (one partition) is read by the same consumer: an agent's tags are those of
its latest heartbeat, overlaid by the operator's (`AgentTagsSet` on `enrolments`).

An operator's accept reaches this view a moment after the gateway's reply. So before a task is
refused because its agent is not accepted, the view first reads `enrolments` up to its end as it
is then (`settled_status`): a refusal is decided on what was written, not on what was read.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from elves.config import Settings
from elves.errors import BadSelector, DecodeError
from elves.kafka import consumer
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentDown, AgentUp, Event, Heartbeat
from elves.selectors import matches, parse_selector
from elves.streams.agents import enrolment
from elves.streams.tasks.model import NOT_ACCEPTED, AgentStatus

log = logging.getLogger("elves.streams.agents")

SETTLE_S = 2.0  # the longest a refusal waits for `enrolments` to be read up to its end


class AgentView:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._up: dict[str, bool] = {}  # agent id -> up; a dict read and written whole
        # agent id -> (latest heartbeat's time, its tags); each value replaced whole
        self._tags: dict[str, tuple[int, Mapping[str, str]]] = {}
        self._enrolments: dict[str, enrolment.Enrolment] = {}  # each value replaced whole
        self._enrolments_next = 0  # the offset of `enrolments` after the last one read
        self._read = threading.Condition()
        self._ends: Consumer | None = None  # asks the topic's end (not the reading thread's)
        self._ends_lock = threading.Lock()
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
        with self._ends_lock:
            if self._ends is not None:
                self._ends.close()

    def status(self, agent_id: str) -> AgentStatus:
        up = self._up.get(agent_id)
        enrolled = self._enrolments.get(agent_id)
        if up is None and enrolled is None:
            return "unknown"
        if enrolled is None or enrolled.status != "accepted":
            # Heard from, or only registered: an operator has not accepted it (yet).
            return "rejected" if enrolled is not None and enrolled.rejected else "pending"
        return "up" if up else "down"

    def accepted(self, agent_id: str) -> bool:
        enrolled = self._enrolments.get(agent_id)
        return enrolled is not None and enrolled.status == "accepted"

    def settled_status(self, agent_id: str, timeout: float = SETTLE_S) -> AgentStatus:
        """`status`, but a "not accepted" only once `enrolments` is read up to its end as it is
        now: an accept the gateway just wrote is then seen. Blocks up to `timeout`, and only for an
        agent not accepted (the folds loop waits that long on such a task, as Faust did)."""
        status = self.status(agent_id)
        if status in NOT_ACCEPTED:
            self.catch_up(timeout)
            status = self.status(agent_id)
        return status

    def catch_up(self, timeout: float) -> bool:
        """Wait until `enrolments` is read up to the end it has now; False at the timeout."""
        deadline = time.monotonic() + timeout
        try:
            end = self._enrolments_end()
        except KafkaException as exc:
            log.warning("enrolments: no end offset, deciding on what was read: %s", exc)
            return False
        with self._read:
            return self._read.wait_for(
                lambda: self._enrolments_next >= end, max(0.0, deadline - time.monotonic())
            )

    def _enrolments_end(self) -> int:
        with self._ends_lock:
            if self._ends is None:
                s = self.settings
                self._ends = consumer(s, f"{s.topic_prefix}agent-view-ends-{uuid.uuid4().hex[:8]}")
            tp = TopicPartition(self.settings.topic("enrolments"), 0)
            _low, high = self._ends.get_watermark_offsets(tp, timeout=5, cached=False)
            return int(high)

    def tags(self, agent_id: str) -> Mapping[str, str]:
        """The agent's tags: its latest heartbeat's, overlaid by the operator's."""
        config = self._tags.get(agent_id, (0, {}))[1]
        return enrolment.effective_tags(config, self._enrolments.get(agent_id))

    def matching(self, selector: str) -> list[str]:
        """The agents that are up, accepted and carry the tags `selector` asks for, sorted."""
        try:
            parsed = parse_selector(selector)
        except BadSelector:
            return []  # checked when the cron was added; an old bad one matches nothing
        up = [a for a, is_up in list(self._up.items()) if is_up and self.accepted(a)]
        return sorted(a for a in up if matches(parsed, self.tags(a)))

    def apply_enrolment(self, event: Event) -> None:
        if isinstance(event, enrolment.ENROLMENT_EVENTS):
            new = enrolment.apply(self._enrolments.get(event.agent_id), event)
            if new is not None:
                self._enrolments[event.agent_id] = new

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
        names = ("agents", "heartbeats", "enrolments")
        behind: dict[str, int] = {}  # topic -> the end it had at start, until read up to it
        starts = []
        for name in names:
            low, high = c.get_watermark_offsets(TopicPartition(s.topic(name), 0), timeout=10)
            if high > low:
                behind[s.topic(name)] = high
            # A number: librdkafka fetches nothing for 0.5 s while it looks OFFSET_BEGINNING up.
            starts.append(TopicPartition(s.topic(name), 0, low))
        c.assign(starts)
        if not behind:
            self._ready.set()
        enrolments = s.topic("enrolments")
        try:
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                topic = msg.topic() or ""
                event: Event | None
                try:
                    event = CODEC.decode(msg.value())
                except DecodeError:
                    event = None  # the liveness flow dead-letters what it cannot read
                if isinstance(event, AgentUp | AgentDown):
                    self.apply(event)
                elif isinstance(event, Heartbeat):
                    self.apply_heartbeat(event)
                elif event is not None:
                    self.apply_enrolment(event)
                if topic == enrolments:
                    with self._read:
                        self._enrolments_next = (msg.offset() or 0) + 1
                        self._read.notify_all()
                # Ready once what each topic held at start is applied, the last message too.
                if topic in behind and (msg.offset() or 0) >= behind[topic] - 1:
                    del behind[topic]
                    if not behind:
                        self._ready.set()
        finally:
            c.close()
