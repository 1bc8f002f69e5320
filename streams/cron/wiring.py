"""The crons: `streams.cron.model` wired to the folds loop (`streams.loop`).

Cron commands arrive on `commands` (keyed by cron id); the outcomes of fires arrive on `crons`,
where the task lifecycle copies them (keyed by cron id); the clock decides what is due. All fold
into the `crons` table (its changelog is what the gateway reads) and write the derived events to
`crons`. A fire becomes a `TaskSubmitted` on `commands` (a selector cron's fire: one per matching
agent that its app may run on, as this worker's `AgentView` and `AppRules` see them at the fire);
an agent cron's definition goes to its agent as an `AgentCronSet`.

The clock decides in place rather than sending itself a message to decide on: a tick through
Kafka and back cost hundreds of milliseconds of lag under load (bench/cron.py). A row's
partition is computed from the cron id: the murmur2 partition its commands and outcomes arrive
on, so a cron's row and its inputs stay together when partitions move between workers.

Which crons are due is an index kept beside the table (rebuilt from it when partitions move).
The fold, not the index, decides whether a time is due: a stale index can delay a fire (it then
follows the misfire policy), never double one, and a fire's ids derive from
`(cron_id, scheduled_at)`, so even a fire sent twice is the same fire and the same task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache, partial

from aiokafka.partitioner import murmur2
from confluent_kafka import Message

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
    CronUpdated,
    DeleteCron,
    Event,
    PauseCron,
    ResumeCron,
    TaskFailed,
    TaskRejected,
    TaskSucceeded,
    TaskTimedOut,
    UpdateCron,
    derived_id,
)
from elves.streams.agents.view import AgentView
from elves.streams.context import FoldContext
from elves.streams.cron import model as crons
from elves.streams.loop import Table

log = logging.getLogger("elves.streams.cron")

CRON_COMMANDS = (AddCron, PauseCron, ResumeCron, DeleteCron, UpdateCron)
# What the flow reads on `crons`, by record name: everything else is skipped undecoded.
OUTCOME_NAMES = frozenset(
    cls.__name__ for cls in (TaskSucceeded, TaskFailed, TaskTimedOut, TaskRejected)
)
PARTITIONS = 4
CLOCK_TICK_S = 0.05


@lru_cache(maxsize=1 << 16)  # aiokafka's murmur2 is pure Python: a tenth of a fire, uncached
def partition_of(cron_id: str) -> int:
    """The partition of a cron id's events: Kafka's murmur2, as every producer here uses."""
    hashed: int = murmur2(cron_id.encode())
    return (hashed & 0x7FFFFFFF) % PARTITIONS


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


class Crons:
    """The cron fold on the loop: commands, outcomes and the clock, into the `crons` table."""

    def __init__(self, ctx: FoldContext) -> None:
        self.ctx = ctx
        self.table: Table[crons.CronState] = Table(
            ctx.settings.changelog_topic("crons"),
            crons.CronState.to_dict,
            crons.CronState.from_dict,
        )
        self._crons_topic = ctx.settings.topic("crons")
        self._commands_topic = ctx.settings.topic("commands")
        # partition -> cron id -> next scheduled time, for the active center crons only.
        self._due: dict[int, dict[str, int]] = {p: {} for p in range(PARTITIONS)}

    def _index(self, state: crons.CronState) -> None:
        entries = self._due[partition_of(state.cron_id)]
        if state.next_at:
            entries[state.cron_id] = state.next_at
        else:
            entries.pop(state.cron_id, None)

    def on_assigned(self, owned: set[int]) -> None:
        self._due = {p: {} for p in range(PARTITIONS)}
        for _key, state in self.table.items():
            if partition_of(state.cron_id) in owned:
                self._index(state)

    def _emit(self, state: crons.CronState | None, event: Event) -> None:
        cron_id = str(getattr(event, "cron_id", ""))
        self.ctx.loop.send(self._crons_topic, cron_id.encode(), CODEC.encode(event))
        if state is None:
            return
        if isinstance(event, CronFired):
            for command in crons.submissions(state, event):
                key = command.task_id.encode()
                self.ctx.loop.send(self._commands_topic, key, CODEC.encode(command))
        elif not state.on_center and isinstance(
            event, CronAdded | CronPaused | CronResumed | CronDeleted | CronUpdated
        ):
            order = agent_cron_set(state, event)
            if order.status == "active" and not self.ctx.agent_view.accepted(state.agent_id):
                # Nothing that runs goes to an agent that is not accepted; a pause or a delete
                # only takes away, so those still go.
                log.warning(
                    "cron %s: agent %s is not accepted; not sent", order.cron_id, order.agent_id
                )
                return
            target = self.ctx.dispatch_topic(state.agent_id)
            sealed = self.ctx.signer.seal(order, self.ctx.now_ms())
            self.ctx.loop.send(target, state.cron_id.encode(), sealed)

    def _fold(
        self,
        cron_id: str,
        input_: Event | None,
        decide: Callable[[crons.CronState | None], list[Event]],
    ) -> None:
        """Read, decide, apply and write one cron's row, then send what was decided."""
        state = self.table.get(cron_id)
        out = decide(state)
        new = state
        for e in [input_, *out] if input_ is not None else out:
            new = crons.apply(new, e)
        if new is not None and new != state:
            self.table.put(cron_id, partition_of(cron_id), new)
            self._index(new)
        for e in out:
            self._emit(new, e)

    def on_command(self, decoded: Event) -> None:
        """A cron command from `commands`."""
        if (
            isinstance(decoded, AddCron)
            and decoded.mode in crons.AGENT_MODES
            and crons.field_error(decoded, self.ctx.settings.max_params_bytes)
            is None  # its codes first
        ):
            status = self.ctx.agent_view.settled_status(decoded.agent_id)
            refused = crons.agent_not_accepted(decoded, status)
            if refused:
                self._fold(decoded.cron_id, decoded, lambda _state: refused)
                return
        if isinstance(decoded, CRON_COMMANDS):
            decide = partial(
                _decide,
                cmd=decoded,
                max_params_bytes=self.ctx.settings.max_params_bytes,
                permits=self.ctx.permits,
            )
            self._fold(decoded.cron_id, decoded, decide)

    def on_crons_message(self, msg: Message) -> None:
        """A record of `crons`: the outcomes of fires are inputs; the rest (most of it, the
        crons' own derived events) is skipped undecoded."""
        value = msg.value() or b""
        name = CODEC.name_of(value)
        if name is None:
            self.ctx.loop.dead_letter(msg, "[422.1] not a known event")
            return
        if name not in OUTCOME_NAMES:
            return
        try:
            decoded = CODEC.decode(value)
        except DecodeError as exc:
            self.ctx.loop.dead_letter(msg, f"[{exc.code}] {exc.message}")
            return
        match decoded:
            case TaskSucceeded() | TaskFailed() | TaskTimedOut() | TaskRejected() if (
                decoded.cron_id is not None
            ):
                decide = partial(
                    _on_outcome, outcome=decoded, view=self.ctx.agent_view, permits=self.ctx.permits
                )
                self._fold(decoded.cron_id, decoded, decide)

    def clock(self) -> None:
        now = self.ctx.now_ms()
        decide = partial(_due, now=now, view=self.ctx.agent_view, permits=self.ctx.permits)
        for partition in sorted(self.ctx.loop.owned):
            due = [c for c, at in self._due[partition].items() if at <= now]
            for cron_id in due:
                self._fold(cron_id, None, decide)
