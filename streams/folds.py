"""What the folds loop runs (`streams.loop`): the task lifecycle and the crons.

The loop's group reads `commands`, `results` and `crons` (four partitions each). `commands`
holds three kinds of command, each keyed by what it is about:
- task commands (by task id) go to the task lifecycle, with `results`;
- cron commands (by cron id) go to the crons, with the outcomes of fires on `crons`;
- queue commands (by queue id) are forwarded as they are to `queues`, where the queue flow (a
  Faust agent, `streams.queues.wiring`) reads them with its tasks' outcomes, in one order.
"""

from __future__ import annotations

from confluent_kafka import Message

from elves.errors import DecodeError
from elves.schemas.codec import CODEC
from elves.streams.context import FoldContext
from elves.streams.cron.wiring import CLOCK_TICK_S as CRON_TICK_S
from elves.streams.cron.wiring import CRON_COMMANDS, Crons
from elves.streams.loop import Clock, Folds
from elves.streams.queues.wiring import QUEUE_COMMANDS
from elves.streams.tasks import model as tasks
from elves.streams.tasks.wiring import CLOCK_TICK_S as DEADLINE_TICK_S
from elves.streams.tasks.wiring import TaskLifecycle

QUEUE_COMMAND_NAMES = frozenset(cls.__name__ for cls in QUEUE_COMMANDS)


def build_folds(ctx: FoldContext, limits: tasks.Limits) -> Folds:
    lifecycle = TaskLifecycle(ctx, limits)
    crons = Crons(ctx)
    loop, settings = ctx.loop, ctx.settings
    crons_topic = settings.topic("crons")
    queue_inputs = settings.topic("queue-inputs")

    def handle(msg: Message) -> None:
        value = msg.value() or b""
        if msg.topic() == crons_topic:
            crons.on_crons_message(msg)
            return
        if CODEC.name_of(value) in QUEUE_COMMAND_NAMES:
            loop.send(queue_inputs, msg.key(), value)
            return
        try:
            decoded = CODEC.decode(value)
        except DecodeError as exc:
            loop.dead_letter(msg, f"[{exc.code}] {exc.message}")
            return
        if isinstance(decoded, CRON_COMMANDS):
            crons.on_command(decoded)
        else:
            lifecycle.handle(msg, decoded)

    def on_assigned(owned: set[int]) -> None:
        lifecycle.on_assigned(owned)
        crons.on_assigned(owned)

    return Folds(
        inputs=[settings.topic("commands"), settings.topic("results"), crons_topic],
        tables=[lifecycle.table, crons.table],
        handle=handle,
        clocks=[Clock(DEADLINE_TICK_S, lifecycle.deadline_clock), Clock(CRON_TICK_S, crons.clock)],
        on_assigned=on_assigned,
    )
