"""The task lifecycle: `streams.tasks.model` wired to the folds loop (`streams.loop`).

It reads `commands` and `results` (co-partitioned by task id) and folds them into the `tasks`
table; it writes the lifecycle to `tasks`, each dispatch (signed) to its agent's own topic, a
P-mode outcome to its app's processor topic, and a queue's or a cron's task outcome to `queues`
or `crons` too (keyed by the queue or cron: their folds read it there).

Its clock only announces passed deadlines, as `DeadlinePassed` on `results`: the fold decides,
never the clock.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Message

from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentCronRan,
    DeadlinePassed,
    Event,
    ProcessorResult,
    TaskDispatched,
    TaskResultReported,
    TaskStarted,
    TaskSubmitted,
)
from elves.streams.context import FoldContext
from elves.streams.loop import Table
from elves.streams.tasks import model as tasks
from elves.topics import TopicSpec, ensure_topics

log = logging.getLogger("elves.streams.tasks")

CLOCK_TICK_S = 0.2


def _row(state: tasks.TaskState) -> dict[str, Any]:
    return dict(vars(state))  # every field is flat: a shallow copy is the row


def _task_state(row: dict[str, Any]) -> tasks.TaskState:
    return tasks.TaskState(**row)


class TaskLifecycle:
    def __init__(self, ctx: FoldContext, limits: tasks.Limits) -> None:
        self.limits = limits
        self.ctx = ctx
        self.table: Table[tasks.TaskState] = Table(
            ctx.settings.changelog_topic("tasks"), _row, _task_state
        )
        # Open attempts by task id; the deadline clock scans only these.
        self._open: dict[str, tasks.TaskState] = {}
        self._announced: set[str] = set()
        self._made: set[str] = set()  # processor topics known to exist
        self._topics = {
            n: ctx.settings.topic(n) for n in ("tasks", "results", "queue-inputs", "crons")
        }

    def on_assigned(self, _owned: set[int]) -> None:
        """The open attempts again, from the rows of the partitions owned now."""
        self._open = {}
        for key, state in self.table.items():
            if not state.final:
                self._open[key] = state

    def handle(self, msg: Message, decoded: Event) -> None:
        task_id = getattr(decoded, "task_id", None)
        if task_id is None:
            self.ctx.loop.dead_letter(msg, f"unexpected {type(decoded).__name__} on a task topic")
            return
        state = self.table.get(task_id)
        out: list[Event]
        match decoded:
            case TaskSubmitted():
                status = self.ctx.agent_view.settled_status(decoded.agent_id)
                out = tasks.decide_submit(
                    state, decoded, status, self.ctx.now_ms(), self.limits, self.ctx.permits
                )
            case TaskResultReported():
                out = tasks.decide_result(state, decoded)
            case DeadlinePassed():
                out = tasks.decide_deadline(state, decoded)
            case AgentCronRan():
                out = tasks.decide_agent_run(state, decoded)
            case TaskStarted():
                out = []
                if state is not None and state.queue_id is not None:
                    if state.status == "dispatched" and decoded.attempt == state.attempt:
                        # A queue task's start is its queue's input too (it names no queue:
                        # the key does), so the queue can say the task runs.
                        queue_inputs = self._topics["queue-inputs"]
                        self.ctx.loop.send(queue_inputs, state.queue_id.encode(), msg.value())
            case _:
                self.ctx.loop.dead_letter(msg, f"unexpected {type(decoded).__name__} here")
                return
        new = state
        for e in [decoded, *out]:
            new = tasks.apply(new, e)
        if new is not None and new != state:
            self.table.put(task_id, int(msg.partition() or 0), new)
            if new.final:
                self._open.pop(task_id, None)
            else:
                self._open[task_id] = new
        for e in out:
            self._emit(e)
            result = tasks.processor_result(new, e) if new is not None else None
            if result is not None:
                self._to_processor(result)

    def _emit(self, event: Event) -> None:
        if isinstance(event, TaskDispatched):
            target = self.ctx.dispatch_topic(event.agent_id)
            sealed = self.ctx.signer.seal(event, self.ctx.now_ms())
            self.ctx.loop.send(target, event.task_id.encode(), sealed)
            return
        data = CODEC.encode(event)
        task_id: str = getattr(event, "task_id")  # noqa: B009 - every derived event has one
        self.ctx.loop.send(self._topics["tasks"], task_id.encode(), data)
        queue_id = getattr(event, "queue_id", None)
        if queue_id is not None:
            # A queue task's outcome is its queue's input too, keyed by the queue. The queue
            # flow puts it on `queues`, before what it derives from it.
            self.ctx.loop.send(self._topics["queue-inputs"], queue_id.encode(), data)
        cron_id = getattr(event, "cron_id", None)
        if cron_id is not None:
            # A fire's outcome is its cron's input: overlap policies and the last result.
            self.ctx.loop.send(self._topics["crons"], cron_id.encode(), data)

    def _to_processor(self, result: ProcessorResult) -> None:
        """A P-mode outcome to its app's processor topic, made on first use so results wait
        there for a processor that starts later."""
        target = self.ctx.settings.processor_topic(result.app)
        if target not in self._made:
            ensure_topics(self.ctx.settings, (TopicSpec(f"processor.{result.app}", 1),))
            self._made.add(target)
        self.ctx.loop.send(target, result.task_id.encode(), CODEC.encode(result))

    def deadline_clock(self) -> None:
        overdue = tasks.overdue(list(self._open.values()), self.ctx.now_ms())
        for passed in overdue:
            if passed.event_id in self._announced:
                continue
            self._announced.add(passed.event_id)
            self.ctx.loop.send(
                self._topics["results"], passed.task_id.encode(), CODEC.encode(passed)
            )
        # Remember only what is still overdue: the rest ended, or its deadline moved on.
        self._announced.intersection_update(d.event_id for d in overdue)
