"""A result made while the broker is down reaches Kafka once it is back (the agent's outbox).

This test has a broker of its own, since it stops it: the session's broker stays up for others.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.agent.daemon import Agent
from elves.config import Settings
from elves.kafka import consumer, producer
from elves.local import free_broker_port, wait_for
from elves.schemas.codec import CODEC
from elves.schemas.events import TaskDispatched, TaskResultReported, TaskStarted
from elves.signing import sign_dispatch
from elves.topics import ensure_topics

ROOT = Path(__file__).resolve().parents[2]


def kafka(command: str, bootstrap: str, state: Path) -> None:
    env = {**os.environ, "ELVES_KAFKA": bootstrap, "ELVES_STATE_DIR": str(state)}
    subprocess.run(["bash", str(ROOT / "infra" / "kafka.sh"), command], check=True, env=env)


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[str]:
    port = free_broker_port()
    bootstrap = f"127.0.0.1:{port}"
    kafka("start", bootstrap, tmp_path / "broker")
    try:
        yield bootstrap
    finally:
        kafka("stop", bootstrap, tmp_path / "broker")


def test_a_result_made_while_the_broker_is_stopped_arrives_after_it_restarts(
    own_broker: str, tmp_path: Path
) -> None:
    settings = Settings(
        bootstrap=own_broker,
        topic_prefix="outage.",
        state_dir=tmp_path / "agent",
        agent_id="outage-agent",
        apps_dir=ROOT / "apps" / "samples",
        heartbeat_s=1.0,
    )
    ensure_topics(settings)
    agent = Agent(settings, workers=1)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    results = consumer(settings, f"outage-{uuid.uuid4().hex[:6]}")
    results.subscribe([settings.topic("results")])
    try:
        assert agent.ready.wait(30)
        now = int(time.time() * 1000)
        task_id = uuid.uuid4().hex[:16]
        dispatch = TaskDispatched(
            event_id=str(uuid.uuid4()),
            occurred_at=now,
            task_id=task_id,
            attempt=1,
            agent_id="outage-agent",
            app="sleeper",
            func="sleep",
            params=json.dumps({"seconds": 3}),
            timeout_s=60,
            deadline_at=now + 120_000,
        )
        prod = producer(settings)
        prod.produce(
            settings.dispatch_topic("outage-agent"),
            key=task_id.encode(),
            value=sign_dispatch(settings, dispatch),
        )
        prod.flush(10)

        def seen(kind: type) -> object:
            msg = results.poll(0.5)
            if msg is None or msg.error():
                return None
            event = CODEC.decode(msg.value())
            return event if isinstance(event, kind) and event.task_id == task_id else None

        wait_for("the task to start", lambda: seen(TaskStarted), 30)
        kafka("stop", own_broker, tmp_path / "broker")
        # the worker goes on without Kafka; its result waits in the durable outbox
        wait_for("the result in the outbox", lambda: agent.outbox.pending() >= 1, 30)
        kafka("start", own_broker, tmp_path / "broker")
        result = wait_for("the result after the restart", lambda: seen(TaskResultReported), 60)
        assert isinstance(result, TaskResultReported)
        assert result.worker_flag == 1 and result.worker_message == "slept 3s"
        wait_for("the outbox to drain", lambda: agent.outbox.pending() == 0, 30)
    finally:
        results.close()
        stop.set()
        thread.join(timeout=60)
