"""What the gateway hears from Kafka: outcomes for waiting instant calls, and the agents view.

One consumer thread, assigned (no group) to every partition of `tasks`, `results`, `queues` and
`crons` at their end (only outcomes and answers from now on matter) and of `heartbeats`, `agents`
and the crons table's changelog from their beginning (all compacted: the latest word on every
agent and every cron), and `apps` and `enrolments` from their beginning (whole logs, folded:
every app's versions and the active one; every agent's enrolment and admin tags). An agent's
tags here are its heartbeat's overlaid by the operator's. Instant calls register a future
*before* the command is produced, so no outcome can slip past.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace

from confluent_kafka import Consumer, TopicPartition

from elves import app_versions
from elves.config import Settings
from elves.errors import DecodeError
from elves.kafka import consumer
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentDown,
    AgentUp,
    CronAdded,
    CronDeleted,
    CronPaused,
    CronResumed,
    CronUpdated,
    Event,
    Heartbeat,
    QueueCreated,
    TaskAccepted,
    TaskRejected,
    TaskResultReported,
    TaskStarted,
    TaskTimedOut,
)
from elves.selectors import Selector, matches
from elves.streams.agents import enrolment
from elves.streams.agents import model as agent_model
from elves.streams.agents.enrolment import Enrolment
from elves.streams.cron import model as cron_model

log = logging.getLogger("elves.api")

OUTCOMES = (TaskRejected, TaskResultReported, TaskTimedOut)
CRON_EVENTS = (CronAdded, CronPaused, CronResumed, CronDeleted, CronUpdated)
AGENT_EVENTS = (Heartbeat, AgentUp, AgentDown)
# What the views fold: decoded whatever else is waited for.
FOLDED = frozenset(
    t.__name__
    for t in (
        QueueCreated,
        *CRON_EVENTS,
        *app_versions.APP_EVENTS,
        *enrolment.ENROLMENT_EVENTS,
        *AGENT_EVENTS,
    )
)
RECENT_QUEUES = 100_000  # about 10 MB of ids at most


@dataclass
class Pending:
    future: asyncio.Future[Event]
    loop: asyncio.AbstractEventLoop
    seen: dict[str, int] = field(default_factory=dict)  # event type -> occurred_at, for timings


class Listener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: dict[str, Pending] = {}
        self._answers: dict[str, Pending] = {}  # event id -> a command waiting for it
        self._agents: dict[str, agent_model.AgentState] = {}
        self._enrolments: dict[str, Enrolment] = {}
        self._crons: dict[str, cron_model.CronState] = {}
        self._cron_rows: dict[str, bytes] = {}  # rows not parsed yet, by cron id
        self._apps: dict[str, app_versions.AppState] = {}
        # Queue -> app of the queues made lately: the API key check of a queue id needs its app
        # at once, before the audit has the queue. Older queues are looked up in the audit.
        self._queue_apps: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gateway-listener", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the gateway's Kafka listener did not get its partitions")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def expect(self, task_id: str) -> Pending:
        loop = asyncio.get_running_loop()
        pending = Pending(loop.create_future(), loop)
        with self._lock:
            self._pending[task_id] = pending
        return pending

    def expect_any(self, event_ids: frozenset[str]) -> Pending:
        """A future for the first of these events to arrive (the answer to a command)."""
        loop = asyncio.get_running_loop()
        pending = Pending(loop.create_future(), loop)
        with self._lock:
            for event_id in event_ids:
                self._answers[event_id] = pending
        return pending

    def forget_answers(self, event_ids: frozenset[str]) -> None:
        with self._lock:
            for event_id in event_ids:
                self._answers.pop(event_id, None)

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._pending.pop(task_id, None)

    def agents(self) -> list[agent_model.AgentState]:
        """Every agent heard from, with its effective tags (heartbeat and operator's)."""
        with self._lock:
            return sorted(
                (self._effective(a) for a in self._agents.values()), key=lambda a: a.agent_id
            )

    def agent(self, agent_id: str) -> agent_model.AgentState | None:
        with self._lock:
            state = self._agents.get(agent_id)
            return None if state is None else self._effective(state)

    def _effective(self, state: agent_model.AgentState) -> agent_model.AgentState:
        tags = enrolment.effective_tags(state.tags, self._enrolments.get(state.agent_id))
        return state if tags == state.tags else replace(state, tags=tags)

    def config_tags(self, agent_id: str) -> dict[str, str]:
        """The tags the agent's own heartbeat announces (its ELVES_AGENT_TAGS)."""
        with self._lock:
            state = self._agents.get(agent_id)
            return dict(state.tags) if state is not None else {}

    def enrolment(self, agent_id: str) -> Enrolment | None:
        with self._lock:
            return self._enrolments.get(agent_id)

    def enrolments(self) -> dict[str, Enrolment]:
        with self._lock:
            return dict(self._enrolments)

    def matching(self, selector: Selector) -> list[str]:
        """The agents that are up, accepted and carry the selector's tags (effective ones)."""
        with self._lock:
            agents = [self._effective(a) for a in self._agents.values()]
            accepted = {a for a, e in self._enrolments.items() if e.status == "accepted"}
        return sorted(
            a.agent_id
            for a in agents
            if a.up and a.agent_id in accepted and matches(selector, a.tags)
        )

    def crons(self) -> list[cron_model.CronState]:
        with self._lock:
            for cron_id in list(self._cron_rows):
                self._parsed_cron(cron_id)
            return sorted(self._crons.values(), key=lambda c: c.created_at)

    def cron(self, cron_id: str) -> cron_model.CronState | None:
        with self._lock:
            return self._parsed_cron(cron_id)

    def _parsed_cron(self, cron_id: str) -> cron_model.CronState | None:
        """A cron's state, its latest row parsed now if there is one (under the lock): every
        fire changes its cron's row, and parsing each as it came cost the gateway a fifth of
        a core at 1,000 fires/s (bench/cron.py)."""
        row = self._cron_rows.pop(cron_id, None)
        if row is not None:
            try:
                self._crons[cron_id] = cron_model.CronState.from_dict(json.loads(row))
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("unreadable crons table row for %s: %s", cron_id, exc)
        return self._crons.get(cron_id)

    def apps(self) -> list[app_versions.AppState]:
        with self._lock:
            return sorted(self._apps.values(), key=lambda a: a.app)

    def app(self, app: str) -> app_versions.AppState | None:
        with self._lock:
            return self._apps.get(app)

    def queue_app(self, queue_id: str) -> str | None:
        with self._lock:
            return self._queue_apps.get(queue_id)

    def _assignments(self, c: Consumer) -> list[TopicPartition]:
        """Outcome topics from their current end (asked now, so nothing later is missed);
        the compacted ones from their beginning."""
        s = self.settings
        from_end = [s.topic(n) for n in ("tasks", "results", "queues", "crons")]
        whole = [s.topic(n) for n in ("heartbeats", "agents", "apps", "enrolments")]
        whole.append(s.changelog_topic("crons"))
        deadline = time.monotonic() + 30
        meta = c.list_topics(timeout=10).topics
        while any(n not in meta for n in from_end + whole) and time.monotonic() < deadline:
            time.sleep(0.2)  # topics made a moment ago may not be in the metadata yet
            meta = c.list_topics(timeout=10).topics
        parts = []
        for topic in from_end + whole:
            for p in meta[topic].partitions:
                low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                # Numbers, not OFFSET_END or OFFSET_BEGINNING: librdkafka fetches nothing for
                # 0.5 s while it looks those up.
                parts.append(TopicPartition(topic, p, high if topic in from_end else low))
        return parts

    def _run(self) -> None:
        s = self.settings
        c = consumer(s, f"{s.topic_prefix}gateway-{uuid.uuid4().hex[:8]}")
        c.assign(self._assignments(c))
        self._ready.set()
        try:
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                if msg.topic() == s.changelog_topic("crons"):
                    self._on_cron_row(msg.key(), msg.value())
                    continue
                if not self._wanted(CODEC.name_of(msg.value()), msg.key()):
                    continue
                try:
                    event = CODEC.decode(msg.value())
                except DecodeError:
                    continue  # the streams put bad messages in the DLQ; the gateway only listens
                self._on_event(event)
        finally:
            c.close()

    def _on_cron_row(self, key: bytes | None, value: bytes | None) -> None:
        """A row of the streams' crons table: the whole current state of one cron, kept as it
        came until it is read (`_parsed_cron`)."""
        try:
            cron_id = str(json.loads(key or b'""'))
        except ValueError as exc:
            log.warning("unreadable crons table key %r: %s", key, exc)
            return
        with self._lock:
            if value is None:
                self._cron_rows.pop(cron_id, None)
                self._crons.pop(cron_id, None)
            else:
                self._cron_rows[cron_id] = value

    def _wanted(self, name: str | None, key: bytes | None) -> bool:
        """Is a message worth decoding? What the views fold always is. Anything else matters
        only as the answer to a command that waits (any event may be one: its id is in the
        body) or as news of an instant task that waits (keyed by its task id, on `tasks` and
        `results`). A queue's run was some seven messages a task here, none of them waited
        for: decoding them all was most of what the gateway did then."""
        if name is None or name in FOLDED:
            return True  # None: not ours; `decode` says why
        with self._lock:
            if self._answers:
                return True
            return key is not None and key.decode(errors="replace") in self._pending

    def _on_event(self, event: Event) -> None:
        with self._lock:
            answered = self._answers.get(event.event_id)
        if isinstance(event, QueueCreated):  # before the answer: the next call checks it
            with self._lock:
                self._queue_apps[event.queue_id] = event.app
                if len(self._queue_apps) > RECENT_QUEUES:
                    self._queue_apps.popitem(last=False)
        if isinstance(event, CRON_EVENTS):
            # The answer is applied at once, so a read right after the write sees it; the
            # table's row, a moment later, is the same state.
            with self._lock:
                cron = cron_model.apply(self._parsed_cron(event.cron_id), event)
                if cron is not None:
                    self._crons[event.cron_id] = cron
        if isinstance(event, app_versions.APP_EVENTS):  # versions and permission rules
            # Before the answer: the publish or activate call reads the state right after.
            with self._lock:
                app = app_versions.apply(self._apps.get(event.app), event)
                if app is not None:
                    self._apps[event.app] = app
        if isinstance(event, enrolment.ENROLMENT_EVENTS):
            # Before the answer: an accept, reject or tags call reads the state right after.
            with self._lock:
                enrolled = enrolment.apply(self._enrolments.get(event.agent_id), event)
                if enrolled is not None:
                    self._enrolments[event.agent_id] = enrolled
        if answered is not None:
            answered.loop.call_soon_threadsafe(_resolve, answered.future, event)
        if isinstance(event, AGENT_EVENTS):
            with self._lock:
                new = agent_model.apply(self._agents.get(event.agent_id), event)
                if new is not None:
                    self._agents[event.agent_id] = new
            return
        task_id = getattr(event, "task_id", None)
        if task_id is None:
            return
        with self._lock:
            pending = self._pending.get(task_id)
        if pending is None:
            return
        pending.seen[type(event).__name__] = event.occurred_at
        if isinstance(event, TaskAccepted | TaskStarted):
            return
        if isinstance(event, OUTCOMES):
            pending.seen["replied"] = int(time.time() * 1000)
            pending.loop.call_soon_threadsafe(_resolve, pending.future, event)


def _resolve(future: asyncio.Future[Event], event: Event) -> None:
    if not future.done():
        future.set_result(event)
