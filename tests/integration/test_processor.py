"""An app's processor on the real broker: a P-mode queue task reaches it once, even redelivered."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from elves.apps.sdk.processor import run
from elves.config import Settings
from elves.kafka import consumer
from elves.local import Stack, wait_for

from .test_queues import add, commit, create, final

APP = "apptest"


def p_mode_task(stack: Stack, my: str) -> str:
    """One queue with one P-mode apptest task, run to the end; its task id."""
    queue_id = create(stack, APP)
    task_id = f"{queue_id[:8]}-p"
    reply = add(stack, queue_id, task_id, "helloword", params={"my": my}, mode="P")
    assert reply.status_code == 201, reply.text
    commit(stack, queue_id)
    assert final(stack, queue_id)["status"] == "succeeded"
    return task_id


def lines(out: Path) -> list[dict[str, Any]]:
    """The processor's complete lines so far (a line being written is not read yet)."""
    if not out.exists():
        return []
    text = out.read_text()
    return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]


def lines_for(out: Path, task_id: str) -> list[dict[str, Any]]:
    return [line for line in lines(out) if line["task_id"] == task_id]


@contextmanager
def processor(settings: Settings) -> Iterator[None]:
    """The runner in a thread for the duration of the block; its exception fails the test."""
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(settings, APP, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            failure.append(exc)

    thread = threading.Thread(target=target, name="processor", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive(), "the processor did not stop"
    assert not failure, failure


def committed(settings: Settings) -> int:
    """The processor group's committed offset on its topic's one partition (-1001: none)."""
    probe = consumer(settings, settings.topic(f"processor.{APP}"))
    try:
        [tp] = probe.committed([TopicPartition(settings.processor_topic(APP), 0)], timeout=10)
        return int(tp.offset)
    finally:
        probe.close()


def rewind(settings: Settings) -> None:
    """Commit offset 0 for the processor group: what a crash before its commit leaves behind."""
    probe = consumer(settings, settings.topic(f"processor.{APP}"))
    try:
        probe.commit(
            offsets=[TopicPartition(settings.processor_topic(APP), 0, 0)], asynchronous=False
        )
    finally:
        probe.close()


def test_a_p_mode_task_reaches_the_processor_once_even_when_kafka_delivers_it_again(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "processor.jsonl"
    monkeypatch.setenv("APPTEST_PROCESSOR_OUT", str(out))
    settings = dataclasses.replace(stack.settings, state_dir=tmp_path / "state")

    first = p_mode_task(stack, "toryzen")  # the result waits on the topic: no processor yet
    with processor(settings):
        [line] = wait_for(f"the processor's line for {first}", lambda: lines_for(out, first), 60)
    assert line["result"] == "toryzen" and line["flag"] == 1
    assert line["costtime"] >= 0
    assert committed(settings) > 0

    # Redeliver everything: the first event comes again, before the second task's.
    rewind(settings)
    assert committed(settings) == 0
    second = p_mode_task(stack, "again")
    with processor(settings):
        wait_for(f"the processor's line for {second}", lambda: lines_for(out, second), 60)
    assert [x["result"] for x in lines_for(out, second)] == ["again"]
    assert lines_for(out, first) == [line]  # read again, not processed again
