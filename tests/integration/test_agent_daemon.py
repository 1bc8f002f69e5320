"""The agent daemon on the real broker: signed dispatch in, started and result out, refusals,
beats."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.agent.daemon import START_REPORT_S, Agent
from elves.config import Settings
from elves.kafka import consumer, producer
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    DispatchRefused,
    Event,
    Heartbeat,
    TaskDispatched,
    TaskResultReported,
    TaskStarted,
)
from elves.signing import sign_dispatch
from elves.topics import ensure_topics

SAMPLES = Path(__file__).resolve().parents[2] / "apps" / "samples"
AGENT = "it-agent"


@pytest.fixture
def agent(settings: Settings, request: pytest.FixtureRequest) -> Iterator[Agent]:
    settings = Settings(
        bootstrap=settings.bootstrap,
        topic_prefix=settings.topic_prefix,
        state_dir=settings.state_dir,
        agent_id=AGENT,
        apps_dir=SAMPLES,
        heartbeat_s=0.5,
    )
    ensure_topics(settings)
    agent = Agent(settings, workers=getattr(request, "param", 2))
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive()


def dispatch(
    agent_id: str, app: str, func: str, params: object, attempt: int = 1
) -> TaskDispatched:
    now = int(time.time() * 1000)
    return TaskDispatched(
        event_id=str(uuid.uuid4()),
        occurred_at=now,
        task_id=uuid.uuid4().hex[:16],
        attempt=1,
        agent_id=agent_id,
        app=app,
        func=func,
        params=json.dumps(params),
        timeout_s=30,
        deadline_at=now + 60_000,
    )


class Reader:
    """Reads a topic from the start and decodes it; `until` waits for a condition on all read."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = consumer(settings, f"test-{uuid.uuid4().hex}")
        self.consumer.subscribe([topic])
        self.events: list[Event] = []

    def until(self, done: object, timeout: float = 30) -> list[Event]:
        end = time.monotonic() + timeout
        while not done(self.events):  # type: ignore[operator]
            assert time.monotonic() < end, f"gave up; read {self.events}"
            msg = self.consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                self.events.append(CODEC.decode(msg.value()))
        return self.events


def results_for(events: list[Event], task_id: str) -> list[TaskResultReported]:
    return [e for e in events if isinstance(e, TaskResultReported) and e.task_id == task_id]


def refusals(settings: Settings, count: int) -> list[DispatchRefused]:
    """The first `count` refusals the agent reported on `security`."""
    events = Reader(settings, settings.topic("security")).until(lambda evs: len(evs) >= count)
    return [e for e in events if isinstance(e, DispatchRefused)][:count]


def test_a_signed_dispatch_is_run_and_reported_once_and_the_rest_refused(agent: Agent) -> None:
    settings = agent.settings
    prod = producer(settings)
    first = dispatch(AGENT, "apptest", "helloword", {"my": "toryzen"})
    topic = settings.dispatch_topic(AGENT)
    signed = sign_dispatch(settings, first)
    prod.produce(topic, key=first.task_id.encode(), value=signed)
    prod.produce(topic, key=first.task_id.encode(), value=signed)  # the same bytes: a replay
    prod.produce(topic, key=b"junk", value=b"not avro")
    other = dispatch("someone-else", "apptest", "helloword", {})
    prod.produce(topic, key=b"other", value=sign_dispatch(settings, other))
    last = dispatch(AGENT, "noop", "noop", {})  # after the repeats: when it is in, they were read
    prod.produce(topic, key=last.task_id.encode(), value=sign_dispatch(settings, last))
    prod.flush(10)

    results = Reader(settings, settings.topic("results"))
    # Two workers: the two tasks may end in either order.
    events = results.until(
        lambda evs: results_for(evs, last.task_id) and results_for(evs, first.task_id)
    )
    [reported] = results_for(events, first.task_id)
    assert (reported.worker_flag, reported.worker_message) == (1, "toryzen")
    assert reported.agent_id == AGENT
    # A short task: its start is reported inside its result, with no TaskStarted of its own.
    assert not [e for e in events if isinstance(e, TaskStarted) and e.task_id == first.task_id]
    assert reported.pid and reported.pid > 0
    assert reported.started_at and reported.started_at <= reported.occurred_at

    replayed, junk, wrong = refusals(settings, 3)
    assert (replayed.code, replayed.task_id, replayed.offset) == ("416.5", first.task_id, 1)
    assert (junk.code, junk.task_id, junk.offset) == ("416.1", None, 2)
    assert (wrong.code, wrong.task_id) == ("416.3", other.task_id)
    assert {r.agent_id for r in (replayed, junk, wrong)} == {AGENT}
    assert "someone-else" in wrong.reason


def test_heartbeats_carry_the_apps_and_their_versions(agent: Agent) -> None:
    beats = Reader(agent.settings, agent.settings.topic("heartbeats"))
    events = beats.until(lambda evs: len(evs) >= 2)
    beat = events[0]
    assert isinstance(beat, Heartbeat)
    assert beat.agent_id == AGENT
    assert beat.apps["apptest"] == "1.0.0"
    assert beat.interval_s == 0.5


@pytest.mark.parametrize("agent", [1], indirect=True)
def test_one_worker_runs_every_task_in_turn(agent: Agent) -> None:
    settings = agent.settings
    prod = producer(settings)
    tasks = [dispatch(AGENT, "sleeper", "sleep", {"seconds": 0.2}) for _ in range(4)]
    for task in tasks:
        prod.produce(settings.dispatch_topic(AGENT), value=sign_dispatch(settings, task))
    prod.flush(10)
    results = Reader(settings, settings.topic("results"))
    events = results.until(lambda evs: all(results_for(evs, t.task_id) for t in tasks))
    # By when each ran, not by when it was read: results are keyed over several partitions.
    reported = sorted(
        (e for e in events if isinstance(e, TaskResultReported)), key=lambda r: r.started_at or 0
    )
    assert [r.task_id for r in reported] == [t.task_id for t in tasks]  # in order
    assert all(
        later.started_at is not None and later.started_at >= earlier.occurred_at
        for earlier, later in zip(reported, reported[1:], strict=False)
    )  # one at a time: each started once the one before had ended
    assert all(r.worker_flag == 1 for r in reported)


def test_a_task_still_running_has_its_start_reported_before_it_ends(agent: Agent) -> None:
    """A short task's start comes with its result (above); a longer one's once it has run
    `START_REPORT_S`, while it still runs, with the time it started."""
    settings = agent.settings
    prod = producer(settings)
    task = dispatch(AGENT, "sleeper", "sleep", {"seconds": START_REPORT_S + 3})
    prod.produce(settings.dispatch_topic(AGENT), value=sign_dispatch(settings, task))
    prod.flush(10)
    results = Reader(settings, settings.topic("results"))

    def started(events: list[Event]) -> list[TaskStarted]:
        return [e for e in events if isinstance(e, TaskStarted) and e.task_id == task.task_id]

    [start] = started(results.until(started))
    seen_at = time.time() * 1000
    assert seen_at < start.occurred_at + (START_REPORT_S + 3) * 1000  # it still ran
    end = results.until(lambda evs: results_for(evs, task.task_id))
    [reported] = results_for(end, task.task_id)
    assert reported.worker_flag == 1 and len(started(end)) == 1
    assert reported.occurred_at - start.occurred_at >= (START_REPORT_S + 3) * 1000 - 50
    assert (reported.started_at, reported.pid) == (start.occurred_at, start.pid)
