"""Agents that share a state dir (several on one host) each send only their own results."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from elves.agent.daemon import Agent
from elves.config import Settings
from elves.kafka import producer
from elves.schemas.events import TaskResultReported, TaskStarted
from elves.signing import sign_dispatch
from elves.topics import ensure_topics

from .test_agent_daemon import Reader, dispatch

SAMPLES = Path(__file__).resolve().parents[2] / "apps" / "samples"


def test_two_agents_with_one_state_dir_report_each_result_once(settings: Settings) -> None:
    ensure_topics(settings)
    agents, stop, threads = [], threading.Event(), []
    for name in ("shared-1", "shared-2"):
        own = Settings(
            bootstrap=settings.bootstrap,
            topic_prefix=settings.topic_prefix,
            state_dir=settings.state_dir,  # the same dir for both
            agent_id=name,
            apps_dir=SAMPLES,
            heartbeat_s=0.5,
        )
        agent = Agent(own, workers=2)
        agents.append(agent)
        threads.append(threading.Thread(target=agent.run, args=(stop,)))
    assert agents[0].outbox.path != agents[1].outbox.path
    results = Reader(settings, settings.topic("results"))
    try:
        for t in threads:
            t.start()
        assert all(a.ready.wait(30) for a in agents)
        prod = producer(settings)
        sent = []
        for agent in agents:
            for i in range(5):
                d = dispatch(agent.agent_id, "apptest", "helloword", {"my": str(i)})
                sent.append(d.task_id)
                prod.produce(
                    settings.dispatch_topic(agent.agent_id),
                    key=d.task_id.encode(),
                    value=sign_dispatch(settings, d),
                )
        prod.flush(10)

        def all_reported(events: list[object]) -> bool:
            done = {e.task_id for e in events if isinstance(e, TaskResultReported)}
            return done >= set(sent)

        results.until(all_reported, 60)
        # Drain what else may come (a copy sent by the other agent would arrive by now).
        assert agents[0].outbox.wait_empty(10) and agents[1].outbox.wait_empty(10)
        results.until(lambda events: True, 1)
        messages = Counter(
            (type(e).__name__, e.task_id)
            for e in results.events
            if isinstance(e, TaskStarted | TaskResultReported)
        )
        # Short tasks: each start comes inside its result, and there is no TaskStarted.
        assert messages == Counter(("TaskResultReported", t) for t in sent), messages
        assert all(
            e.started_at and e.pid for e in results.events if isinstance(e, TaskResultReported)
        )
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
        results.consumer.close()
