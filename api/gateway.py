"""What every handler shares: the clients the lifespan built, and audit rows back to events."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from starlette.requests import Request

from elves.api.audit import AuditStore
from elves.api.auth import Authenticator
from elves.api.listener import Listener
from elves.api.watcher import Watcher
from elves.config import Settings
from elves.errors import CommandRejected, TaskTimeout
from elves.schemas.codec import CODEC
from elves.schemas.events import EVENT_TYPES, CronCommandRejected, Event, QueueCommandRejected

ANSWER_WAIT_S = 15.0


class Inserts:
    """The watcher's inserts, for the gateway's event loop: `next()` is set at the next one (the
    audit may hold more then), so a reader of the audit waits for it rather than on a timer."""

    def __init__(self, watcher: Watcher, loop: asyncio.AbstractEventLoop) -> None:
        self._watcher = watcher
        self._loop = loop
        self._next = asyncio.Event()
        watcher.on_insert(self._from_watcher)

    def next(self) -> asyncio.Event:
        """The event the next insert sets. Take it before reading the audit: an insert made
        while the audit is read sets it too, so waiting on it then does not miss that insert."""
        return self._next

    async def passed(self, count: int, each_s: float) -> None:
        """Hurry the watcher and return after `count` more inserts, or `each_s` without one for
        each: what was on Kafka when it was called is then in the audit, but for an insert
        slower than that."""
        self._watcher.hurry()
        for _ in range(count):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.next().wait(), each_s)

    def _from_watcher(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: no reader waits any more
            self._loop.call_soon_threadsafe(self._inserted)

    def _inserted(self) -> None:
        self._next.set()
        self._next = asyncio.Event()


@dataclass
class Gateway:
    settings: Settings
    producer: Producer
    listener: Listener
    store: AuditStore
    watcher: Watcher
    auth: Authenticator  # API keys: who signed a request
    inserts: Inserts


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def to_event(row: dict[str, Any]) -> Event | None:
    """An audit row (payload parsed) as its event; None for dead letters and the undecodable."""
    cls = EVENT_TYPES.get(str(row["type"]))
    if cls is None:
        return None
    return cls(**row["payload"])


def events_of(rows: Iterable[dict[str, Any]]) -> list[Event]:
    """The events of audit rows, in their order, without the rows that are none."""
    return [e for e in (to_event(r) for r in rows) if e is not None]


async def ask(gw: Gateway, key: str, command: Event, answers: frozenset[str]) -> Event:
    """Produce a command keyed by its aggregate and wait for the stream event that answers it
    (one of `answers`, whose ids derive from the command's); a refusal raises its code."""
    [answer] = await ask_all(gw, key, [(command, answers)])
    if isinstance(answer, CommandRejected):
        raise answer
    return answer


async def ask_all(
    gw: Gateway, key: str, commands: Sequence[tuple[Event, frozenset[str]]]
) -> list[Event | CommandRejected]:
    """`ask` for several commands of one aggregate: produced in their order, which their
    partition keeps (so a command may build on one before it), then each one's answer, or its
    refusal, in the same order. One wait bounds them all."""
    pending = [gw.listener.expect_any(answers) for _, answers in commands]
    try:
        for command, _ in commands:
            gw.producer.produce(
                gw.settings.topic("commands"), key=key.encode(), value=CODEC.encode(command)
            )
        gw.producer.poll(0)
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(asyncio.shield(p.future) for p in pending)), ANSWER_WAIT_S
            )
        except TimeoutError:
            raise TaskTimeout(
                f"the streams did not answer within {ANSWER_WAIT_S:.0f} s", id=key
            ) from None
    finally:
        for _, ids in commands:
            gw.listener.forget_answers(ids)
    return [_refusal(answer) or answer for answer in answers]


def _refusal(answer: Event) -> CommandRejected | None:
    if isinstance(answer, QueueCommandRejected):
        return CommandRejected(answer.code, answer.reason, queue_id=answer.queue_id)
    if isinstance(answer, CronCommandRejected):
        return CommandRejected(answer.code, answer.reason, cron_id=answer.cron_id)
    return None


async def write(gw: Gateway, topic: str, key: str, events: list[Event]) -> None:
    """Produce events the gateway decided itself (to `apps`, `enrolments`) and wait until its
    listener has applied the last one, so the reply and the next request see them."""
    if not events:
        return
    last = frozenset({events[-1].event_id})
    pending = gw.listener.expect_any(last)
    try:
        for event in events:
            gw.producer.produce(
                gw.settings.topic(topic), key=key.encode(), value=CODEC.encode(event)
            )
        gw.producer.poll(0)
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), ANSWER_WAIT_S)
        except TimeoutError:
            raise TaskTimeout(
                f"the {topic} topic did not answer within {ANSWER_WAIT_S:.0f} s"
            ) from None
    finally:
        gw.listener.forget_answers(last)
