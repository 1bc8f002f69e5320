"""Which messages the gateway's listener decodes: what its views fold, and what is waited for."""

from __future__ import annotations

import asyncio
from pathlib import Path

from elves.api.listener import Listener
from elves.config import Settings
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentAccepted,
    CronPaused,
    CronUpdated,
    Heartbeat,
    QueueCreated,
    QueueTaskReady,
    TaskSucceeded,
    new_id,
)

T = 1_795_000_000_000


def succeeded(task_id: str) -> bytes:
    return CODEC.encode(
        TaskSucceeded(new_id(T), T, task_id, 1, "agent-1", 1, "ok", 3, queue_id="q-1")
    )


def wanted(listener: Listener, data: bytes, key: bytes | None) -> bool:
    return listener._wanted(CODEC.name_of(data), key)


def test_what_the_views_fold_is_always_decoded(tmp_path: Path) -> None:
    listener = Listener(Settings(state_dir=tmp_path))
    for event in (
        QueueCreated(new_id(T), T, "q-1", "demo", "q"),
        CronPaused(new_id(T), T, "c-1"),
        CronUpdated(new_id(T), T, "c-1", "* * * * *", "UTC", "{}", 10, "skip", "skip", ""),
        Heartbeat(new_id(T), T, "agent-1", "host-1", 2.0, T),
        AgentAccepted(new_id(T), T, "agent-1", "key"),
    ):
        assert wanted(listener, CODEC.encode(event), b"any"), type(event).__name__


def test_nothing_else_is_decoded_while_nobody_waits(tmp_path: Path) -> None:
    listener = Listener(Settings(state_dir=tmp_path))
    assert not wanted(listener, succeeded("t-1"), b"t-1")
    assert not wanted(listener, CODEC.encode(QueueTaskReady(new_id(T), T, "q-1", "t-1", 1)), None)
    # Not an event of ours: decoded, so that the decoder is the one to refuse it.
    assert wanted(listener, b"not avro", b"t-1")


def test_an_instant_task_that_waits_gets_its_own_news_only(tmp_path: Path) -> None:
    listener = Listener(Settings(state_dir=tmp_path))

    async def check() -> None:
        listener.expect("t-1")
        assert wanted(listener, succeeded("t-1"), b"t-1")
        assert not wanted(listener, succeeded("t-2"), b"t-2")
        assert not wanted(listener, succeeded("t-1"), b"\xff")  # a key that is not text
        listener.forget("t-1")
        assert not wanted(listener, succeeded("t-1"), b"t-1")

    asyncio.run(check())


def test_while_a_command_waits_for_its_answer_everything_is_decoded(tmp_path: Path) -> None:
    listener = Listener(Settings(state_dir=tmp_path))

    async def check() -> None:
        answers = frozenset({new_id(T)})
        listener.expect_any(answers)
        assert wanted(listener, succeeded("t-9"), b"q-1")
        listener.forget_answers(answers)
        assert not wanted(listener, succeeded("t-9"), b"q-1")

    asyncio.run(check())
