"""Every streams worker's view of where each app may run, read from the `apps` topic.

The task lifecycle refuses a submission whose app may not run on its agent (413.5) whoever
produced it, the queue flow refuses such adds, and the cron flow fires a selector cron only on
the agents its app may run on. Each worker decides for whatever partitions it owns, so each
needs every rule: it reads `apps` itself, from the beginning, in a thread, without a consumer
group, like `AgentView`. A rule is in force here once this view has read it, a moment after the
gateway's reply; the gateway checks the same rule before it sends anything.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping

from confluent_kafka import Consumer, KafkaException, TopicPartition

from elves.config import Settings
from elves.errors import DecodeError
from elves.kafka import QUIET_FETCH_WAIT_MS, consumer
from elves.permissions import Permits, Rule, allowed, rule_of
from elves.schemas.codec import CODEC
from elves.schemas.events import AppPermissionSet
from elves.streams.agents.view import AgentView

log = logging.getLogger("elves.streams.apps")
RETRY_S = 0.5


class AppRules:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.default = settings.default_rule  # for an app with no rule (ELVES_APP_DEFAULT)
        self._rules: dict[str, Rule] = {}  # app -> its rule; values replaced whole
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="app-rules", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        """Start reading, and return once every rule the topic held at start is read: a worker
        that decided before that would run apps where they may no longer run."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"the apps topic was not read within {timeout:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def rule(self, app: str) -> Rule:
        return self._rules.get(app, self.default)

    def allows(self, app: str, agent_id: str, tags: Mapping[str, str]) -> bool:
        return allowed(self.rule(app), agent_id, tags)

    def apply(self, event: AppPermissionSet) -> None:
        self._rules[event.app] = rule_of(event)

    def _run(self) -> None:
        s = self.settings
        c = consumer(
            s,
            f"{s.topic_prefix}app-rules-{uuid.uuid4().hex[:8]}",
            **{"fetch.wait.max.ms": QUIET_FETCH_WAIT_MS},
        )
        tp = TopicPartition(s.topic("apps"), 0)
        try:
            low, high = self._ends(c, tp)
            c.assign([TopicPartition(tp.topic, 0, low)])  # a number: OFFSET_BEGINNING waits 0.5 s
            if high <= low:
                self._ready.set()
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is None or msg.error():
                    continue
                self._read(msg.value())
                if (msg.offset() or 0) >= high - 1:
                    self._ready.set()  # after the last rule there was is applied
        finally:
            c.close()

    def _ends(self, c: Consumer, tp: TopicPartition) -> tuple[int, int]:
        """The partition's offsets now. A topic made a moment ago may have no leader yet (a
        fresh broker): asked again until it answers, or the view is stopped."""
        while True:
            try:
                low, high = c.get_watermark_offsets(tp, timeout=10)
            except KafkaException as exc:
                if self._stop.wait(RETRY_S):
                    raise
                log.info("apps not readable yet, asking again: %s", exc)
                continue
            return int(low), int(high)

    def _read(self, data: bytes | None) -> None:
        # Versions are most of `apps` and none of this view's business: not decoded.
        if CODEC.name_of(data) != AppPermissionSet.__name__:
            return
        try:
            event = CODEC.decode(data)
        except DecodeError as exc:
            log.warning("undecodable permission rule on apps: %s", exc.message)
            return
        if isinstance(event, AppPermissionSet):
            self.apply(event)


def permits(rules: AppRules, agents: AgentView) -> Permits:
    """(app, agent id) -> may the app run there, on the agent's tags as this worker sees them
    (an unknown agent has none: only a rule naming its id lets an app run on it)."""

    def check(app: str, agent_id: str) -> bool:
        return rules.allows(app, agent_id, agents.tags(agent_id))

    return check
