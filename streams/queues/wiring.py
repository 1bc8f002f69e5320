"""The queue stream: `streams.queues.model` wired to Faust.

`queue_flow` reads the queue commands on `commands` and, on `queues`, the task outcomes the task
lifecycle copies there (keyed by queue id) and the clock's `RetryDue` facts; it folds them into
the `queue_rows` table and writes the derived events to `queues`. A ready task becomes a
`TaskSubmitted` on `commands`, so queue tasks run through the same lifecycle as instant tasks.

The table holds a queue as rows (`streams.queues.rows`), and only the rows an event changed are
written. The rules read the states folded from those rows, kept in memory: an event costs what it
changes, not a parse of its whole queue.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import faust

from elves.config import Settings
from elves.errors import DecodeError
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AddQueueTask,
    CommitQueue,
    CreateQueue,
    Event,
    QueueTaskAdded,
    QueueTaskCancelled,
    QueueTaskReady,
    RetryDue,
    StopQueue,
    TaskCancelRequested,
    TaskFailed,
    TaskRejected,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
    derived_id,
)
from elves.streams.queues import model as queues
from elves.streams.queues import rows
from elves.streams.tasks.model import Limits

log = logging.getLogger("elves.streams.queues")

QUEUE_COMMANDS = (CreateQueue, AddQueueTask, CommitQueue, StopQueue)
QUEUE_INPUTS = (TaskSucceeded, TaskFailed, TaskTimedOut, TaskRejected, RetryDue)
CLOCK_TICK_S = 0.2

DeadLetter = Callable[[faust.EventT[bytes], str], Awaitable[None]]


def submission(state: queues.QueueState, ready: QueueTaskReady) -> TaskSubmitted:
    """The task command for a ready queue task: it runs through the task lifecycle."""
    task = state.tasks[ready.task_id]
    return TaskSubmitted(
        event_id=derived_id(ready.event_id, "submit"),
        occurred_at=ready.occurred_at,
        task_id=task.task_id,
        agent_id=task.agent_id,
        app=state.app,
        func=task.func,
        params=task.params,
        timeout_s=task.timeout_s,
        proxy=task.proxy,
        mode="CAP" if task.mode == "P" else "CANP",
        queue_id=state.queue_id,
        attempt=ready.attempt,
    )


def wire_queues(
    app: faust.App,
    settings: Settings,
    limits: Limits,
    dead_letter: DeadLetter,
    now_ms: Callable[[], int],
) -> faust.TopicT:
    """Declare the queue table, agent and clock on `app`; return the `queues` topic."""
    inputs = app.topic(
        settings.topic("commands"), settings.topic("queues"), key_type=bytes, value_type=bytes
    )
    queues_topic = app.topic(
        settings.topic("queues"), partitions=4, key_type=bytes, value_type=bytes
    )
    commands_topic = app.topic(
        settings.topic("commands"), partitions=4, key_type=bytes, value_type=bytes
    )
    as_json: Any = faust.Schema(key_serializer="json", value_serializer="json")
    # A queue's rows are written while its own events are processed, so they share its partition.
    table = app.Table("queue_rows", partitions=4, schema=as_json)
    # The table's rows folded into states, by queue id: what the rules read.
    states: dict[str, queues.QueueState] = {}
    # task id -> queue id of every queue, so that an add naming another queue's task is refused.
    # One streams worker holds every partition.
    task_queues: dict[str, str] = {}
    # Both are made again from the table after every rebalance (a start too), once it recovered.
    loaded = False
    announced: set[str] = set()

    def recovered() -> bool:
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        return bool(recovery.completed.is_set())

    def load() -> None:
        nonlocal loaded
        if loaded:
            return
        states.clear()
        states.update(rows.restore(table.values()))
        task_queues.clear()
        for state in states.values():
            task_queues.update(dict.fromkeys(state.tasks, state.queue_id))
        loaded = True

    async def reload(*_: Any, **__: Any) -> None:
        nonlocal loaded
        loaded = False  # the partitions may have moved: the table holds other queues now

    app.on_partitions_assigned.connect(reload)

    async def decode(event: faust.EventT[bytes]) -> Event | None:
        try:
            return CODEC.decode(event.value)
        except DecodeError as exc:
            # `commands` has the task lifecycle as its dead-letterer; `queues` is ours alone.
            if event.message.topic == settings.topic("queues"):
                await dead_letter(event, f"[{exc.code}] {exc.message}")
            return None

    async def emit(state: queues.QueueState | None, event: Event) -> None:
        queue_id = str(getattr(event, "queue_id", ""))
        await queues_topic.send(key=queue_id.encode(), value=CODEC.encode(event))
        if isinstance(event, QueueTaskReady) and state is not None:
            command = submission(state, event)
            await commands_topic.send(key=command.task_id.encode(), value=CODEC.encode(command))
        if isinstance(event, QueueTaskCancelled) and event.was_running and state is not None:
            # Stop kills what runs: the agent of the task gets the order on its own topic.
            agent_id = state.tasks[event.task_id].agent_id
            kill = TaskCancelRequested(
                event_id=derived_id(event.event_id, "kill"),
                occurred_at=event.occurred_at,
                task_id=event.task_id,
                attempt=event.attempt,
                agent_id=agent_id,
                reason=f"queue {state.queue_id} stopped",
            )
            target = app.topic(settings.dispatch_topic(agent_id), key_type=bytes, value_type=bytes)
            await target.send(key=event.task_id.encode(), value=CODEC.encode(kill))

    @app.agent(inputs, name="queue_flow")
    async def queue_flow(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            decoded = await decode(event)
            if not isinstance(decoded, QUEUE_COMMANDS + QUEUE_INPUTS):
                continue  # task commands and the queue's own derived events are not ours
            if isinstance(decoded, TaskSucceeded | TaskFailed | TaskTimedOut | TaskRejected):
                if decoded.queue_id is None or event.message.topic != settings.topic("queues"):
                    continue  # outcomes count once: as copied to `queues` for their queue
            queue_id = str(decoded.queue_id)
            load()
            state = states.get(queue_id)
            out: list[Event]
            match decoded:
                case CreateQueue() | AddQueueTask() | CommitQueue() | StopQueue():
                    out = queues.decide(
                        state, decoded, now_ms(), limits=limits, task_queues=task_queues
                    )
                case RetryDue():
                    out = queues.retry_due(state, decoded)
                case _:
                    out = queues.decide_outcome(state, decoded)
            new = queues.fold([decoded, *out], state)
            for key, row in rows.changed(state, new, [decoded, *out]).items():
                table[key] = row
            if new is not None:
                states[queue_id] = new
            for e in out:
                if isinstance(e, QueueTaskAdded):
                    task_queues[e.task_id] = e.queue_id
            for e in out:
                await emit(new, e)
            yield None

    @app.timer(CLOCK_TICK_S)  # type: ignore[misc]
    async def retry_clock() -> None:
        if not recovered():
            return
        load()
        now = now_ms()
        due_now: set[str] = set()
        for state in list(states.values()):
            for fact in queues.due_retries(state, now):
                due_now.add(fact.event_id)
                if fact.event_id not in announced:
                    announced.add(fact.event_id)
                    await queues_topic.send(key=fact.queue_id.encode(), value=CODEC.encode(fact))
        announced.intersection_update(due_now)

    return queues_topic
