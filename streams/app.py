"""The streams worker: the Faust agents, and the folds loop beside them in the same process.

Faust (`build_app`) runs what DESIGN.md names it for:
- `agent_liveness` reads `heartbeats` and its own `agents` output into the `agents` table; a
  timer notices silent agents;
- the queue flow (`streams/queues/wiring.py`): queue states and dependency resolution.
The folds loop (`streams.loop`, wired in `streams.folds`) runs the hot folds every task and
every fire go through, the task lifecycle and the crons, on a plain confluent-kafka consumer in
a thread of its own: Faust's cost per event capped them (bench/faust_ceiling.py).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, cast

import aiokafka
import faust
from faust.types import TP

from elves.config import Settings
from elves.errors import DecodeError
from elves.kafka import dlq_headers
from elves.permissions import Permits
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentDown,
    AgentUp,
    Event,
    Heartbeat,
)
from elves.signing import Signer, center_signer
from elves.streams.agents import model as agents
from elves.streams.agents.view import AgentView
from elves.streams.app_rules import AppRules, permits
from elves.streams.context import FoldContext
from elves.streams.folds import build_folds
from elves.streams.loop import Folds, Loop
from elves.streams.queues.wiring import wire_queues
from elves.streams.recovery import tables_ready
from elves.streams.tasks import model as tasks
from elves.topics import ensure_topics

log = logging.getLogger("elves.streams")

CLOCK_TICK_S = 0.2
# aiokafka sends no fetch to a broker while a fetched partition holds records nobody has taken
# yet, for up to this long (its default: 100 ms). Faust keeps the tables' changelog partitions
# assigned after recovery but never takes their records, so after a start each changelog
# partition's first record stalled every input for 100 ms (measured with bench/trickle.py:
# in->decide p99 97-127 ms before, 6-27 ms after). 5 ms bounds that and still backs off.
PREFETCH_BACKOFF_S = 0.005


# faust-streaming hard-codes fetch_max_wait_ms=1500, and aiokafka leaves a partition with
# unread records out of the fetch in flight, which then waits out its full time: events came in
# bursts about a second apart (when the task lifecycle ran here: bench/instant.py, 32 clients,
# 21 tasks/s at 1500 ms, 39 at 10 ms). Now that only queues and liveness run on Faust, 50 ms
# bounds that wait and the idle fetches cost less: an idle stack of 8 agents used 1.6 CPU-s of
# the broker's and 0.7 of this worker's every 10 s, against 2.1 and 1.2 at 10 ms; bench/queues.py
# moved by less than its noise (3 interleaved runs each).
FETCH_MAX_WAIT_MS = 50


class _Consumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_MAX_WAIT_MS
        super().__init__(*args, **kwargs)

    async def start(self) -> None:
        await super().start()
        self._fetcher._prefetch_backoff = PREFETCH_BACKOFF_S  # not a constructor argument


def now_ms() -> int:
    return int(time.time() * 1000)


def _agent_state(raw: dict[str, Any] | None) -> agents.AgentState | None:
    return None if raw is None else agents.AgentState(**raw)


# The worker's Faust settings (bench/faust_ceiling.py measures a Faust app with these too).
FAUST_OPTIONS: dict[str, Any] = {
    "key_serializer": "raw",
    "value_serializer": "raw",
    "web_enabled": False,
    "store": "memory://",
    "topic_replication_factor": 1,
    "producer_acks": -1,
    # The instant path is latency-bound: never sit on an event waiting for a batch.
    "stream_wait_empty": False,
    "broker_commit_interval": 0.5,
    # What one event sends (its table row, the events it decides) goes out in one request per
    # partition rather than one each: no path here waits on a queue event within milliseconds.
    "producer_linger": 0.005,
    # A killed worker's partitions go to its successor once its session lapses: seconds, not
    # Faust's default minute.
    "broker_session_timeout": 10.0,
    "broker_heartbeat_interval": 1.0,
    "logging_config": None,
}


def build_app(
    settings: Settings,
    agent_view: AgentView,
    app_permits: Permits,
    limits: tasks.Limits,
    signer: Signer,
) -> faust.App:
    app = faust.App(
        f"{settings.topic_prefix}streams",
        broker=f"kafka://{settings.bootstrap}",
        datadir=str(settings.state_dir / "streams"),
        broker_client_id="elves-streams",  # what the broker's request log names it by
        **FAUST_OPTIONS,
    )

    liveness_inputs = app.topic(
        settings.topic("heartbeats"), settings.topic("agents"), key_type=bytes, value_type=bytes
    )
    agents_topic = app.topic(
        settings.topic("agents"), partitions=1, key_type=bytes, value_type=bytes
    )
    dlq_topic = app.topic(settings.topic("dlq"), partitions=1, key_type=bytes, value_type=bytes)

    # Table rows are the folds' states as JSON: readable in the changelog, no pickles.
    as_json: Any = faust.Schema(key_serializer="json", value_serializer="json")
    agent_table = app.Table("agents", partitions=1, schema=as_json)
    noticed_down: set[str] = set()

    async def dead_letter(event: faust.EventT[bytes], reason: str) -> None:
        msg = event.message
        log.warning("dead letter from %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)
        headers = dlq_headers(reason, "streams", msg.topic, msg.partition, msg.offset)
        # Every value is bytes; confluent-kafka's stubs and Faust's type the dict differently.
        await dlq_topic.send(key=event.key, value=event.value, headers=cast(Any, headers))

    wire_queues(app, settings, limits, dead_letter, now_ms, app_permits, signer=signer)

    async def emit(event: Event) -> None:
        assert isinstance(event, AgentUp | AgentDown)  # what the liveness fold derives
        agent_view.apply(event)
        await agents_topic.send(key=event.agent_id.encode(), value=CODEC.encode(event))

    async def decode(event: faust.EventT[bytes]) -> Event | None:
        try:
            return CODEC.decode(event.value)
        except DecodeError as exc:
            await dead_letter(event, f"[{exc.code}] {exc.message}")
            return None

    heartbeats_tp = TP(settings.topic("heartbeats"), 0)
    heartbeats_read = [-1]  # the offset of the last heartbeat the liveness fold has read
    deciding_since = [0]  # when this worker last became the liveness decider (0: it is not)

    @app.agent(liveness_inputs, name="agent_liveness")
    async def agent_liveness(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            decoded = await decode(event)
            if decoded is None:
                continue
            if not isinstance(decoded, Heartbeat | AgentUp | AgentDown):
                await dead_letter(event, f"unexpected {type(decoded).__name__} on liveness")
                continue
            if event.message.topic == heartbeats_tp.topic:
                heartbeats_read[0] = event.message.offset
            state = _agent_state(agent_table.get(decoded.agent_id))
            out = agents.decide_heartbeat(state, decoded) if isinstance(decoded, Heartbeat) else []
            new = state
            for e in [decoded, *out]:
                new = agents.apply(new, e)
            if new is not None and new != state:
                agent_table[decoded.agent_id] = dataclasses.asdict(new)
            for e in out:
                await emit(e)
            yield None

    def heartbeats_caught_up() -> bool:
        """This worker decides liveness, and silence is only silence once every heartbeat sent
        is read: under load the worker fell seconds behind on `heartbeats` and declared live
        agents down (bench/queues.py: 91 false AgentDowns in one run, tasks refused 414.1)."""
        if heartbeats_tp not in app.assignor.assigned_actives():
            deciding_since[0] = 0
            return False  # another worker decides liveness (one partition)
        if not deciding_since[0]:
            deciding_since[0] = now_ms()
        # No high water yet: nothing fetched since the assignment, so nothing is known read.
        high = app.consumer.highwater(heartbeats_tp)
        return high is not None and heartbeats_read[0] >= high - 1

    @app.timer(CLOCK_TICK_S)  # type: ignore[misc]
    async def liveness_clock() -> None:
        if not tables_ready(app):
            # The flow reads no heartbeat while a rebalance recovers the tables, and the high
            # water it would wait for is the one it had read up to: silence counts again from
            # when it reads. A recovery that stalled 7 s had this worker declare a live agent
            # down (the two-worker cron test; another worker refused its tasks 414.1).
            deciding_since[0] = 0
            return
        if not heartbeats_caught_up():
            return
        now = now_ms()
        for raw in list(agent_table.values()):
            state = _agent_state(raw)
            if state is None:
                continue
            for down in agents.decide_check(
                state, now, settings.missed_beats, watched_since=deciding_since[0]
            ):
                if down.event_id not in noticed_down:
                    noticed_down.add(down.event_id)
                    await emit(down)

    return app


def run(settings: Settings, loglevel: str = "info") -> None:
    """Run the streams worker until it is stopped (SIGINT/SIGTERM).

    `info`, as `elves streams` passes by default: a Faust worker started with `warn` or `error`
    was seen making debug log records on every send (about 6% of its CPU in
    bench/faust_ceiling.py), and with `info` it made none."""
    from faust.worker import Worker

    (settings.state_dir / "streams").mkdir(parents=True, exist_ok=True)
    aiokafka.AIOKafkaConsumer = _Consumer  # Faust builds its consumer by this name
    ensure_topics(settings)
    agent_view = AgentView(settings)
    agent_view.start()  # before any task is decided: it tells known agents from unknown ones
    app_rules = AppRules(settings)
    app_rules.start()  # likewise: every rule read before a task is judged against it
    # Where each app may run (413.5), on the agents' tags as this worker sees them.
    app_permits = permits(app_rules, agent_view)
    limits = tasks.Limits(
        grace_ms=int(settings.task_grace_s * 1000), max_params_bytes=settings.max_params_bytes
    )
    # Everything written to an agent's dispatch topic is signed with the center's key (made
    # here on the first start; agents verify with its public half).
    signer = center_signer(settings)
    app = build_app(settings, agent_view, app_permits, limits, signer)
    loop = Loop(settings, "streams-folds")
    ctx = FoldContext(loop, settings, agent_view, app_permits, signer, now_ms)
    folds = build_folds(ctx, limits)
    thread = threading.Thread(target=_run_folds, args=(loop, folds), name="folds", daemon=True)
    thread.start()
    try:
        Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
    finally:
        loop.stop()
        thread.join(30)


def _run_folds(loop: Loop, folds: Folds) -> None:
    """The folds loop's thread; if it fails, the whole worker stops (a worker without its folds
    would look alive and decide nothing) and its successor reads again from the last commit."""
    try:
        loop.run(folds)
    except BaseException:  # anything: a worker whose folds thread is gone must not go on
        log.exception("the folds loop failed; stopping the streams worker")
        os.kill(os.getpid(), signal.SIGTERM)
