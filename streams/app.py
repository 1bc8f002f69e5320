"""The Faust worker: topics and tables declared in one place, the pure folds wired to them.

Two stream agents:
- `task_lifecycle` reads `commands` and `results` (co-partitioned by task id) and folds them
  into the `tasks` table with `streams.tasks.model`; it writes the lifecycle to `tasks` and each
  dispatch to its agent's own topic. It is the one consumer of `commands`: queue and cron
  commands it hands to their flows (`streams.flow`).
- `agent_liveness` reads `heartbeats` and its own `agents` output into the `agents` table.
Two timers are the only clock: one announces passed deadlines (as `DeadlinePassed` on `results`,
so the task fold decides, never the timer), one notices silent agents.
The queue flow (`streams/queues/wiring.py`) and the cron flow (`streams/cron/wiring.py`) sit
beside them in the same worker; outcomes of their tasks are copied to `queues` and `crons`.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiokafka
import faust
from faust.types import TP

from elves.config import Settings
from elves.errors import DecodeError
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentCronRan,
    AgentDown,
    AgentUp,
    DeadlinePassed,
    Event,
    Heartbeat,
    ProcessorResult,
    TaskDispatched,
    TaskResultReported,
    TaskStarted,
    TaskSubmitted,
)
from elves.signing import center_signer
from elves.streams.agents import model as agents
from elves.streams.agents.view import AgentView
from elves.streams.app_rules import AppRules, permits
from elves.streams.cron.wiring import CRON_COMMANDS, wire_crons
from elves.streams.queues.wiring import QUEUE_COMMANDS, wire_queues
from elves.streams.tasks import model as tasks
from elves.topics import ensure_topics

log = logging.getLogger("elves.streams")

CLOCK_TICK_S = 0.2
# aiokafka sends no fetch to a broker while a fetched partition holds records nobody has taken
# yet, for up to this long (its default: 100 ms). Faust keeps the tables' changelog partitions
# assigned after recovery but never takes their records, so after a start each changelog
# partition's first record stalled every input for 100 ms (measured with bench/faust_trickle.py:
# in->decide p99 97-127 ms before, 6-27 ms after). 5 ms bounds that and still backs off.
PREFETCH_BACKOFF_S = 0.005


# faust-streaming hard-codes fetch_max_wait_ms=1500. Under concurrent load events reached the
# task lifecycle in bursts about a second apart (bench/instant.py, 32 clients: 21 tasks/s,
# gateway->dispatch median 1532 ms; with 10 ms: 39 tasks/s, 224 ms).
FETCH_MAX_WAIT_MS = 10


class _Consumer(aiokafka.AIOKafkaConsumer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["fetch_max_wait_ms"] = FETCH_MAX_WAIT_MS
        super().__init__(*args, **kwargs)

    async def start(self) -> None:
        await super().start()
        self._fetcher._prefetch_backoff = PREFETCH_BACKOFF_S  # not a constructor argument


def now_ms() -> int:
    return int(time.time() * 1000)


def _task_state(raw: dict[str, Any] | None) -> tasks.TaskState | None:
    return None if raw is None else tasks.TaskState(**raw)


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
    # A killed worker's partitions go to its successor once its session lapses: seconds, not
    # Faust's default minute.
    "broker_session_timeout": 10.0,
    "broker_heartbeat_interval": 1.0,
    "logging_config": None,
}


def build_app(settings: Settings, agent_view: AgentView, app_rules: AppRules) -> faust.App:
    app = faust.App(
        f"{settings.topic_prefix}streams",
        broker=f"kafka://{settings.bootstrap}",
        datadir=str(settings.state_dir / "streams"),
        **FAUST_OPTIONS,
    )
    limits = tasks.Limits(
        grace_ms=int(settings.task_grace_s * 1000), max_params_bytes=settings.max_params_bytes
    )

    def topic(name: str, partitions: int) -> faust.TopicT:
        return app.topic(
            settings.topic(name), partitions=partitions, key_type=bytes, value_type=bytes
        )

    task_inputs = app.topic(
        settings.topic("commands"), settings.topic("results"), key_type=bytes, value_type=bytes
    )
    liveness_inputs = app.topic(
        settings.topic("heartbeats"), settings.topic("agents"), key_type=bytes, value_type=bytes
    )
    tasks_topic = topic("tasks", 4)
    results_topic = topic("results", 4)
    agents_topic = topic("agents", 1)
    dlq_topic = topic("dlq", 1)
    dispatch_topics: dict[str, faust.TopicT] = {}

    # Table rows are the folds' states as JSON: readable in the changelog, no pickles.
    as_json: Any = faust.Schema(key_serializer="json", value_serializer="json")
    task_table = app.Table("tasks", partitions=4, schema=as_json)
    agent_table = app.Table("agents", partitions=1, schema=as_json)
    # Open attempts by task id -> deadline; the deadline clock scans only these.
    open_deadlines: dict[str, tasks.TaskState] = {}
    announced: set[str] = set()
    noticed_down: set[str] = set()
    index_built = False

    async def dead_letter(event: faust.EventT[bytes], reason: str) -> None:
        msg = event.message
        log.warning("dead letter from %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)
        await dlq_topic.send(
            key=event.key,
            value=event.value,
            headers={
                "reason": reason.encode(),
                "origin": b"streams",
                "topic": msg.topic.encode(),
                "partition": str(msg.partition).encode(),
                "offset": str(msg.offset).encode(),
            },
        )

    # Where each app may run (413.5), on the agents' tags as this worker sees them.
    app_permits = permits(app_rules, agent_view)
    # Everything written to an agent's dispatch topic is signed with the center's key (made
    # here on the first start; agents verify with its public half).
    signer = center_signer(settings)
    queue_flow = wire_queues(app, settings, limits, dead_letter, now_ms, app_permits, signer=signer)
    cron_flow = wire_crons(
        app, settings, dead_letter, now_ms, agent_view, app_permits, signer=signer
    )

    processor_topics: dict[str, faust.TopicT] = {}

    async def to_processor(result: ProcessorResult) -> None:
        """A P-mode outcome to its app's processor topic, made on first use so results wait
        there for a processor that starts later."""
        target = processor_topics.get(result.app)
        if target is None:
            target = app.topic(
                settings.processor_topic(result.app),
                partitions=1,
                key_type=bytes,
                value_type=bytes,
            )
            await target.maybe_declare()
            processor_topics[result.app] = target
        await target.send(key=result.task_id.encode(), value=CODEC.encode(result))

    async def emit(event: Event) -> None:
        data = CODEC.encode(event)
        if isinstance(event, TaskDispatched):
            target = dispatch_topics.get(event.agent_id)
            if target is None:
                target = app.topic(
                    settings.dispatch_topic(event.agent_id), key_type=bytes, value_type=bytes
                )
                dispatch_topics[event.agent_id] = target
            await target.send(key=event.task_id.encode(), value=signer.seal(event, now_ms()))
        elif isinstance(event, AgentUp | AgentDown):
            agent_view.apply(event)
            await agents_topic.send(key=event.agent_id.encode(), value=data)
        else:
            await tasks_topic.send(key=event.task_id.encode(), value=data)  # type: ignore[union-attr]
            queue_id = getattr(event, "queue_id", None)
            if queue_id is not None:
                # A queue task's outcome is its queue's input too, keyed by the queue.
                await queue_flow.topic.send(key=queue_id.encode(), value=data)
            cron_id = getattr(event, "cron_id", None)
            if cron_id is not None:
                # A fire's outcome is its cron's input: overlap policies and the last result.
                await cron_flow.topic.send(key=cron_id.encode(), value=data)

    def recovered() -> bool:
        """Tables restored from their changelogs: before that a clock would act on stale state."""
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        return bool(recovery.completed.is_set())

    async def decode(event: faust.EventT[bytes]) -> Event | None:
        try:
            return CODEC.decode(event.value)
        except DecodeError as exc:
            await dead_letter(event, f"[{exc.code}] {exc.message}")
            return None

    @app.agent(task_inputs, name="task_lifecycle")
    async def task_lifecycle(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            decoded = await decode(event)
            if isinstance(decoded, QUEUE_COMMANDS):
                await queue_flow.on_command(decoded)
                continue
            if isinstance(decoded, CRON_COMMANDS):
                await cron_flow.on_command(decoded)
                continue
            if decoded is None:
                continue
            task_id = getattr(decoded, "task_id", None)
            if task_id is None:
                await dead_letter(event, f"unexpected {type(decoded).__name__} on a task topic")
                continue
            state = _task_state(task_table.get(task_id))
            out: list[Event]
            match decoded:
                case TaskSubmitted():
                    out = tasks.decide_submit(
                        state,
                        decoded,
                        await agent_view.status_now(decoded.agent_id),
                        now_ms(),
                        limits,
                        app_permits,
                    )
                case TaskResultReported():
                    out = tasks.decide_result(state, decoded)
                case DeadlinePassed():
                    out = tasks.decide_deadline(state, decoded)
                case AgentCronRan():
                    out = tasks.decide_agent_run(state, decoded)
                case TaskStarted():
                    out = []
                case _:
                    await dead_letter(event, f"unexpected {type(decoded).__name__} here")
                    continue
            new = state
            for e in [decoded, *out]:
                new = tasks.apply(new, e)
            if new is not None and new != state:
                task_table[task_id] = dataclasses.asdict(new)
                if new.final:
                    open_deadlines.pop(task_id, None)
                else:
                    open_deadlines[task_id] = new
            for e in out:
                await emit(e)
                result = tasks.processor_result(new, e) if new is not None else None
                if result is not None:
                    await to_processor(result)
            yield None

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

    heartbeats_tp = TP(settings.topic("heartbeats"), 0)
    heartbeats_read = [-1]  # the offset of the last heartbeat the liveness fold has read

    def heartbeats_caught_up() -> bool:
        """This worker decides liveness, and silence is only silence once every heartbeat sent
        is read: under load the worker fell seconds behind on `heartbeats` and declared live
        agents down (bench/queues.py: 91 false AgentDowns in one run, tasks refused 414.1)."""
        if heartbeats_tp not in app.assignor.assigned_actives():
            return False  # another worker decides liveness (one partition)
        high = app.consumer.highwater(heartbeats_tp)
        return high is None or heartbeats_read[0] >= high - 1

    @app.timer(CLOCK_TICK_S)  # type: ignore[misc]
    async def deadline_clock() -> None:
        nonlocal index_built
        if not recovered():
            return
        if not index_built:
            # After a restart the index is rebuilt once from the recovered table.
            for key, raw in task_table.items():
                state = _task_state(raw)
                if state is not None and not state.final:
                    open_deadlines[key] = state
            index_built = True
        overdue = tasks.overdue(list(open_deadlines.values()), now_ms())
        for passed in overdue:
            if passed.event_id in announced:
                continue
            announced.add(passed.event_id)
            await results_topic.send(key=passed.task_id.encode(), value=CODEC.encode(passed))
        # Remember only what is still overdue: the rest ended, or its deadline moved on.
        announced.intersection_update(d.event_id for d in overdue)

    @app.timer(CLOCK_TICK_S)  # type: ignore[misc]
    async def liveness_clock() -> None:
        if not recovered() or not heartbeats_caught_up():
            return
        now = now_ms()
        for raw in list(agent_table.values()):
            state = _agent_state(raw)
            if state is None:
                continue
            for down in agents.decide_check(state, now, settings.missed_beats):
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
    app = build_app(settings, agent_view, app_rules)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
