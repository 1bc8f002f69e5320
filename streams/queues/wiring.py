"""The queue stream: `streams.queues.model` wired to Faust.

`queue_flow` reads, on `queue-inputs`, the queue commands and the task outcomes (and the starts
of long tasks) that the task lifecycle (`streams.tasks.wiring`, the one reader of `commands`)
forwards and copies there (keyed by queue id), and the clock's `RetryDue` facts. Both fold
into the `queue_rows` table and write the derived events to `queues`, which the flow does not
read: reading its own output back, only to skip it, was most of what it consumed. A ready task
becomes a `TaskSubmitted` on `commands`, so queue tasks run through the same lifecycle as
instant tasks.

The table holds a queue as rows (`streams.queues.rows`), and only the rows an event changed are
written. The rules read the states folded from those rows, kept in memory: an event costs what it
changes, not a parse of its whole queue.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import faust

from elves.config import Settings
from elves.errors import DecodeError
from elves.permissions import Permits
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
    SetQueueLimits,
    StopQueue,
    TaskCancelRequested,
    TaskFailed,
    TaskRejected,
    TaskStarted,
    TaskSubmitted,
    TaskSucceeded,
    TaskTimedOut,
    derived_id,
)
from elves.signing import Signer
from elves.streams.queues import model as queues
from elves.streams.queues import rows
from elves.streams.recovery import tables_ready
from elves.streams.tasks.model import Limits

log = logging.getLogger("elves.streams.queues")

QUEUE_COMMANDS = (CreateQueue, AddQueueTask, CommitQueue, StopQueue, SetQueueLimits)
QUEUE_INPUTS = (TaskSucceeded, TaskFailed, TaskTimedOut, TaskRejected, TaskStarted, RetryDue)
CLOCK_TICK_S = 0.2

DeadLetter = Callable[[faust.EventT[bytes], str], Awaitable[None]]


def submission(state: queues.QueueState, task_id: str, attempt: int, at: int) -> TaskSubmitted:
    """The task command for a ready queue task: it runs through the task lifecycle. Its id is
    the attempt's, so a submission sent again (see `resubmit`) is the same event. It is derived
    from the task's add, a time-ordered id, so that it and every event derived from it down the
    task's lifecycle sort by time too (the audit's lookups stay cheap: `derived_id`)."""
    task = state.tasks[task_id]
    return TaskSubmitted(
        event_id=derived_id(task.added_id, f"submit:{attempt}"),
        occurred_at=at,
        task_id=task.task_id,
        agent_id=task.agent_id,
        app=state.app,
        func=task.func,
        params=task.params,
        timeout_s=task.timeout_s,
        proxy=task.proxy,
        mode="CAP" if task.mode == "P" else "CANP",
        queue_id=state.queue_id,
        attempt=attempt,
    )


def resubmit(states: Iterable[queues.QueueState], now: int) -> list[TaskSubmitted]:
    """The submissions of every ready task, sent again when a worker takes the queues over.

    A queue's rows and its flow's sends are separate messages: a worker killed between them
    leaves a task `ready` in the table with its `TaskSubmitted` lost, and the replayed input
    then decides nothing new (it is already folded). The task lifecycle ignores a submission
    it has seen, so sending each again is safe; found by the kill -9 test under load."""
    return [
        submission(state, task.task_id, task.attempt, now)
        for state in states
        if not state.final
        for task in state.tasks.values()
        if task.status == "ready"
    ]


def wire_queues(
    app: faust.App,
    settings: Settings,
    limits: Limits,
    dead_letter: DeadLetter,
    now_ms: Callable[[], int],
    permits: Permits,
    *,
    signer: Signer,
) -> None:
    """Declare the queue table, agent and clock on `app`."""
    queues_topic = app.topic(
        settings.topic("queues"), partitions=4, key_type=bytes, value_type=bytes
    )
    inputs_topic = app.topic(
        settings.topic("queue-inputs"), partitions=4, key_type=bytes, value_type=bytes
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
    taken_over = False
    announced: set[str] = set()

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
        nonlocal loaded, taken_over
        loaded = False  # the partitions may have moved: the table holds other queues now
        taken_over = True  # and their ready tasks are sent again (see `resubmit`)

    app.on_partitions_assigned.connect(reload)

    async def decode(event: faust.EventT[bytes]) -> Event | None:
        try:
            return CODEC.decode(event.value)
        except DecodeError as exc:
            await dead_letter(event, f"[{exc.code}] {exc.message}")
            return None

    async def emit(state: queues.QueueState | None, event: Event) -> None:
        queue_id = str(getattr(event, "queue_id", ""))
        await queues_topic.send(key=queue_id.encode(), value=CODEC.encode(event))
        if isinstance(event, QueueTaskReady) and state is not None:
            command = submission(state, event.task_id, event.attempt, event.occurred_at)
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
            await target.send(key=event.task_id.encode(), value=signer.seal(kill, now_ms()))

    async def handle(decoded: Event, message: faust.EventT[bytes]) -> None:
        """Fold one command or input into its queue; called inside the processing of the event
        that carries it (on `queue-inputs`, keyed by the queue), so the rows go to the queue's
        partition."""
        if not isinstance(decoded, QUEUE_COMMANDS + QUEUE_INPUTS):
            return
        if isinstance(decoded, TaskStarted):
            queue_id = (message.key or b"").decode(errors="replace")  # a start names no queue
        elif isinstance(decoded, queues.Outcome):
            if decoded.queue_id is None:
                return
            queue_id = decoded.queue_id
            # The outcome goes to the queue's log before anything the queue derives from it:
            # only this flow writes `queues`, so there it sits in the order the queue took it
            # (the view folds by it: `api/queues.py`). The task lifecycle sent it there itself
            # once, in a transaction whose partitions librdkafka may write in any order: the
            # end of a queue landed before the outcome that ended it.
            await queues_topic.send(key=queue_id.encode(), value=message.value)
        else:
            queue_id = decoded.queue_id
        load()
        state = states.get(queue_id)
        out: list[Event]
        match decoded:
            case CreateQueue() | AddQueueTask() | CommitQueue() | StopQueue() | SetQueueLimits():
                out = queues.decide(
                    state,
                    decoded,
                    now_ms(),
                    limits=limits,
                    task_queues=task_queues,
                    permits=permits,
                )
            case RetryDue():
                out = queues.retry_due(state, decoded)
            case TaskStarted():
                out = queues.running(state, decoded)
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

    @app.agent(inputs_topic, name="queue_flow")
    async def queue_flow(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            decoded = await decode(event)
            if decoded is not None:
                await handle(decoded, event)
            yield None

    @app.timer(CLOCK_TICK_S)  # type: ignore[misc]
    async def retry_clock() -> None:
        nonlocal taken_over
        if not tables_ready(app):
            return
        load()
        now = now_ms()
        if taken_over:
            taken_over = False
            for command in resubmit(list(states.values()), now):
                await commands_topic.send(key=command.task_id.encode(), value=CODEC.encode(command))
        due_now: set[str] = set()
        for state in list(states.values()):
            for fact in queues.due_retries(state, now):
                due_now.add(fact.event_id)
                if fact.event_id not in announced:
                    announced.add(fact.event_id)
                    await inputs_topic.send(key=fact.queue_id.encode(), value=CODEC.encode(fact))
        announced.intersection_update(due_now)
