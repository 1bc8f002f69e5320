"""The cron stream: `streams.cron.model` wired to Faust.

The cron commands on `commands` are handed over by the task lifecycle, the one consumer of
`commands` (see `streams.flow`); `cron_flow` reads, on `crons`, the outcomes of fires that the
task lifecycle copies there (keyed by cron id); `cron_clock` decides what is due. Both fold into
the `crons` table and write the derived events to `crons`. A fire becomes a `TaskSubmitted` on
`commands` (a selector cron's fire: one per matching agent that its app may run on, as this
worker's `AgentView` and `AppRules` see them at the fire); an agent cron's definition goes to
its agent as an `AgentCronSet`.

The clock decides in place rather than sending itself a message to decide on: a tick through
Kafka and back cost hundreds of milliseconds of lag under load (bench/cron.py). So the table is
written outside stream iteration too, with each row's changelog partition computed from the
cron id: the murmur2 partition its commands and outcomes arrive on, so a cron's row and its
inputs stay together when partitions move between workers.

Which crons are due is an index kept beside the table (rebuilt from it after a restart or a
rebalance). The fold, not the index, decides whether a time is due: a stale index can delay a
fire (it then follows the misfire policy), never double one, and a fire's ids derive from
`(cron_id, scheduled_at)`, so even a fire sent twice is the same fire and the same task.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import faust
from aiokafka.partitioner import murmur2

from elves.config import Settings
from elves.errors import DecodeError
from elves.permissions import Permits
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AddCron,
    AgentCronSet,
    CronAdded,
    CronDeleted,
    CronFired,
    CronPaused,
    CronResumed,
    DeleteCron,
    Event,
    PauseCron,
    ResumeCron,
    TaskFailed,
    TaskRejected,
    TaskSucceeded,
    TaskTimedOut,
    derived_id,
)
from elves.signing import Signer
from elves.streams.agents.view import AgentView
from elves.streams.cron import model as crons
from elves.streams.flow import Flow

log = logging.getLogger("elves.streams.cron")

CRON_COMMANDS = (AddCron, PauseCron, ResumeCron, DeleteCron)
# What the flow reads on `crons`, by record name: everything else is skipped undecoded.
OUTCOME_NAMES = frozenset(
    cls.__name__ for cls in (TaskSucceeded, TaskFailed, TaskTimedOut, TaskRejected)
)
PARTITIONS = 4
CLOCK_TICK_S = 0.05

DeadLetter = Callable[[faust.EventT[bytes], str], Awaitable[None]]


def partition_of(cron_id: str) -> int:
    """The partition of a cron id's events: Kafka's murmur2, as every producer here uses."""
    hashed: int = murmur2(cron_id.encode())
    return (hashed & 0x7FFFFFFF) % PARTITIONS


def _state(raw: dict[str, Any] | None) -> crons.CronState | None:
    return None if raw is None else crons.CronState.from_dict(raw)


def agent_cron_set(state: crons.CronState, cause: Event) -> AgentCronSet:
    """An agent cron's current definition, for its agent."""
    return AgentCronSet(
        event_id=derived_id(cause.event_id, "agent-cron-set"),
        occurred_at=cause.occurred_at,
        cron_id=state.cron_id,
        agent_id=state.agent_id,
        app=state.app,
        func=state.func,
        params=state.params,
        timeout_s=state.timeout_s,
        rule=state.rule,
        timezone=state.timezone,
        mode=state.mode,
        status=state.status,
        misfire=state.misfire,
        overlap=state.overlap,
        proxy=state.proxy,
    )


class CronTable(faust.Table):  # type: ignore[type-arg]
    """The crons table, writable from the clock too: a row's changelog partition is its cron's
    input partition, computed from the id (Faust takes it from the event being processed, and
    the clock processes none)."""

    def partition_for_key(self, key: Any) -> int:
        return partition_of(str(key))


def _decide(
    state: crons.CronState | None, cmd: crons.Command, max_params_bytes: int, permits: Permits
) -> list[Event]:
    return crons.decide(state, cmd, max_params_bytes, permits)


def _targets(state: crons.CronState | None, view: AgentView, permits: Permits) -> list[str]:
    """The live agents a selector cron would fire on now: those that match and that its app
    may run on ([] for a one-agent cron)."""
    if state is None or not state.selector:
        return []
    return [a for a in view.matching(state.selector) if permits(state.app, a)]


def _on_outcome(
    state: crons.CronState | None, outcome: crons.Outcome, view: AgentView, permits: Permits
) -> list[Event]:
    return crons.decide_outcome(state, outcome, _targets(state, view, permits))


def _due(state: crons.CronState | None, now: int, view: AgentView, permits: Permits) -> list[Event]:
    return crons.decide_due(state, now, _targets(state, view, permits))


def wire_crons(
    app: faust.App,
    settings: Settings,
    dead_letter: DeadLetter,
    now_ms: Callable[[], int],
    agent_view: AgentView,
    permits: Permits,
    *,
    signer: Signer,
) -> Flow:
    """Declare the cron table, agent and clock on `app`; return the cron flow."""
    crons_name = settings.topic("crons")
    crons_topic = app.topic(crons_name, partitions=PARTITIONS, key_type=bytes, value_type=bytes)
    commands_topic = app.topic(
        settings.topic("commands"), partitions=PARTITIONS, key_type=bytes, value_type=bytes
    )
    as_json: Any = faust.Schema(key_serializer="json", value_serializer="json")
    table = CronTable(
        app, name="crons", beacon=app.tables.beacon, partitions=PARTITIONS, schema=as_json
    )
    app.tables.add(table)
    # partition -> cron id -> next scheduled time, for the active center crons only.
    due_index: dict[int, dict[str, int]] = {p: {} for p in range(PARTITIONS)}
    indexed_for: set[int] = set()  # the assignment the index was built for

    def recovered() -> bool:
        recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
        return bool(recovery.completed.is_set())

    def assigned() -> set[int]:
        actives = app.assignor.assigned_actives()
        return {tp.partition for tp in actives if tp.topic == crons_name}

    def index(state: crons.CronState) -> None:
        entries = due_index[partition_of(state.cron_id)]
        if state.next_at:
            entries[state.cron_id] = state.next_at
        else:
            entries.pop(state.cron_id, None)

    def rebuild_index(partitions: set[int]) -> None:
        for entries in due_index.values():
            entries.clear()
        for raw in table.values():
            state = _state(raw)
            if state is not None and partition_of(state.cron_id) in partitions:
                index(state)
        indexed_for.clear()
        indexed_for.update(partitions)

    async def emit(state: crons.CronState | None, event: Event) -> None:
        cron_id = str(getattr(event, "cron_id", ""))
        await crons_topic.send(key=cron_id.encode(), value=CODEC.encode(event))
        if state is None:
            return
        if isinstance(event, CronFired):
            for command in crons.submissions(state, event):
                key = command.task_id.encode()
                await commands_topic.send(key=key, value=CODEC.encode(command))
        elif not state.on_center and isinstance(
            event, CronAdded | CronPaused | CronResumed | CronDeleted
        ):
            order = agent_cron_set(state, event)
            if order.status == "active" and not agent_view.accepted(state.agent_id):
                # Nothing that runs goes to an agent that is not accepted; a pause or a delete
                # only takes away, so those still go.
                log.warning(
                    "cron %s: agent %s is not accepted; not sent", order.cron_id, order.agent_id
                )
                return
            target = app.topic(
                settings.dispatch_topic(state.agent_id), key_type=bytes, value_type=bytes
            )
            await target.maybe_declare()
            await target.send(key=state.cron_id.encode(), value=signer.seal(order, now_ms()))

    async def fold(
        cron_id: str,
        input_: Event | None,
        decide: Callable[[crons.CronState | None], list[Event]],
    ) -> None:
        """Read, decide, apply and write one cron's row with no await in between (the flow and
        the clock share the row), then send what was decided."""
        state = _state(table.get(cron_id))
        out = decide(state)
        new = state
        for e in [input_, *out] if input_ is not None else out:
            new = crons.apply(new, e)
        if new is not None and new != state:
            table[cron_id] = new.to_dict()
            index(new)
        for e in out:
            await emit(new, e)

    async def on_command(decoded: Event) -> None:
        """A cron command, handed over by the task lifecycle (the one consumer of `commands`)."""
        if (
            isinstance(decoded, AddCron)
            and decoded.mode in crons.AGENT_MODES
            and crons.field_error(decoded, settings.max_params_bytes) is None  # its codes first
        ):
            status = await agent_view.status_now(decoded.agent_id)
            refused = crons.agent_not_accepted(decoded, status)
            if refused:
                await fold(decoded.cron_id, decoded, lambda _state: refused)
                return
        if isinstance(decoded, AddCron | PauseCron | ResumeCron | DeleteCron):
            await fold(
                decoded.cron_id,
                decoded,
                partial(
                    _decide,
                    cmd=decoded,
                    max_params_bytes=settings.max_params_bytes,
                    permits=permits,
                ),
            )

    @app.agent(crons_topic, name="cron_flow")
    async def cron_flow(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
        async for event in stream.events():
            name = CODEC.name_of(event.value)
            if name is None:
                await dead_letter(event, "[422.1] not a known event")
            if name not in OUTCOME_NAMES:
                yield None
                continue  # the crons' own derived events are most of `crons`: not decoded
            try:
                decoded = CODEC.decode(event.value)
            except DecodeError as exc:
                await dead_letter(event, f"[{exc.code}] {exc.message}")
                yield None
                continue
            match decoded:
                case TaskSucceeded() | TaskFailed() | TaskTimedOut() | TaskRejected() if (
                    decoded.cron_id is not None
                ):
                    decide = partial(_on_outcome, outcome=decoded, view=agent_view, permits=permits)
                    await fold(decoded.cron_id, decoded, decide)
            yield None

    @app.timer(CLOCK_TICK_S)  # type: ignore[misc]
    async def cron_clock() -> None:
        if not recovered():
            return
        mine = assigned()
        if mine != indexed_for:
            rebuild_index(mine)
        now = now_ms()
        for partition in sorted(mine):
            due = [c for c, at in due_index[partition].items() if at <= now]
            for cron_id in due:
                await fold(cron_id, None, partial(_due, now=now, view=agent_view, permits=permits))

    return Flow(crons_topic, on_command)
