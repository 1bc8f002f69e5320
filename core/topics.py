"""The topics of Elves, declared in one place, and their explicit creation.

Compaction where a topic is state (the latest heartbeat and liveness of each agent); deletion
with retention where it is history (the audit keeps that in ClickHouse).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from elves.config import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str  # without the prefix
    partitions: int
    compacted: bool = False
    retained: bool = False  # kept forever: a log that is folded from its beginning


CORE_TOPICS = (
    TopicSpec("commands", partitions=4),
    TopicSpec("tasks", partitions=4),
    TopicSpec("results", partitions=4),
    # What tasks print while they run (TaskOutput), keyed by task id: read by the audit, folded by
    # nothing, so that a chatty task costs the task lifecycle nothing.
    TopicSpec("output", partitions=4),
    TopicSpec("queues", partitions=4),
    # What the queue flow folds, keyed by queue id: queue commands (forwarded from `commands`),
    # its tasks' outcomes (copied from `tasks`) and its clock's retry facts. Apart from `queues`
    # (what the flow derives, and its tasks' outcomes for readers), so that the flow does not
    # read its own output back.
    TopicSpec("queue-inputs", partitions=4),
    TopicSpec("crons", partitions=4),
    # App versions (published, activated) and permission rules, keyed by app. The whole log is
    # kept (not compacted, no retention): every agent and streams worker folds it from the
    # beginning to learn the desired versions and where each app may run.
    TopicSpec("apps", partitions=1, retained=True),
    # API keys: created (the secret sealed) and revoked, keyed by key id. Kept whole, as `apps`:
    # the gateway folds it from the beginning, and a revocation must never expire.
    TopicSpec("keys", partitions=1, retained=True),
    # One partition: liveness is decided by one stream instance that sees every agent.
    TopicSpec("heartbeats", partitions=1, compacted=True),
    TopicSpec("agents", partitions=1, compacted=True),
    # Agent enrolment: registered, accepted, rejected, admin tags; keyed by agent id. Kept whole
    # and not compacted: compaction by agent id would let an agent's re-registration erase the
    # operator's decision. The gateway and every streams worker fold it from the beginning.
    TopicSpec("enrolments", partitions=1, retained=True),
    # What agents refused on their dispatch topics (DispatchRefused): history, in the audit.
    TopicSpec("security", partitions=1),
    TopicSpec("dlq", partitions=1),
)
# Table rows, not events (the watcher does not store them), of the folds loop's tables
# (`streams.loop`); made with the others so that the gateway can read the crons' current state
# even before the streams start (same partitions as the table).
TABLE_TOPICS = (
    TopicSpec("streams-crons-changelog", partitions=4, compacted=True),
    TopicSpec("streams-tasks-changelog", partitions=4, compacted=True),
    TopicSpec("streams-folds-positions", partitions=4, compacted=True),
)

DISPATCH_PARTITIONS = 1  # one agent consumes its topic alone; order per agent is kept


def _config(spec: TopicSpec) -> dict[str, str]:
    if spec.compacted:
        return {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    if spec.retained:
        return {"cleanup.policy": "delete", "retention.ms": "-1"}
    return {"cleanup.policy": "delete", "retention.ms": str(7 * 24 * 3600 * 1000)}


def ensure_topics(
    settings: Settings, specs: tuple[TopicSpec, ...] = CORE_TOPICS + TABLE_TOPICS
) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap})
    existing = set(admin.list_topics(timeout=10).topics)
    wanted = [
        NewTopic(
            settings.topic(s.name),
            num_partitions=s.partitions,
            replication_factor=1,
            config=_config(s),
        )
        for s in specs
        if settings.topic(s.name) not in existing
    ]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=10).items():
        try:
            future.result(timeout=60)  # never hang a starting process on a silent broker
            created.append(name)
        except KafkaException as exc:
            # Another process may have created it between our listing and our request.
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
    _wait_visible(admin, {t.topic for t in wanted})
    return created


def _wait_visible(admin: AdminClient, names: set[str], timeout: float = 30.0) -> None:
    """Return once the broker's metadata lists every topic: a created topic is not yet
    in the metadata a moment later, and a consumer that asks then finds nothing."""
    deadline = time.monotonic() + timeout
    while True:
        listed = admin.list_topics(timeout=10).topics
        missing = {n for n in names if n not in listed or listed[n].error is not None}
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"topics still not in the metadata: {sorted(missing)}")
        time.sleep(0.1)


def ensure_dispatch_topic(settings: Settings, agent_id: str) -> None:
    ensure_topics(settings, (TopicSpec(f"dispatch.{agent_id}", DISPATCH_PARTITIONS),))
