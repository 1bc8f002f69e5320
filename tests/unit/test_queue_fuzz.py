"""The queue fold on random input never raises: any command or outcome a producer could put on
Kafka (one the codec encodes) is decided, as a rejection if nothing else. An exception there would
stop the queue flow on that message at every restart, every queue with it.

Random lives of one queue: commands with valid fields, now and then one left random; outcomes,
starts and retry facts for its tasks and for tasks it does not have, with odd attempts. Seeded:
a failure is found again by its seed."""

from __future__ import annotations

import dataclasses
import random
import typing
from collections.abc import Callable
from typing import Any

from elves.errors import DecodeError
from elves.schemas import events as ev
from elves.schemas.codec import CODEC
from elves.streams.queues import model
from elves.streams.tasks.model import Limits

LIMITS = Limits(grace_ms=5000, max_params_bytes=65536)
NOW = 1_795_940_000_000
TEXTS = ["", "x", "q1", "t1", "a1", "é", " ", "-1", "a" * 300, "{}", "[1]", "NP", "P", "all_done"]
NUMBERS = [0, 1, -1, 2, 100, 2**31 - 1, -(2**31), 2**63 - 1, -(2**63), NOW]
IDS = ["t1", "t2", "t3", "t4"]
COMMANDS = [ev.CreateQueue, ev.AddQueueTask, ev.AddQueueTask, ev.CommitQueue, ev.StopQueue]
COMMANDS += [ev.SetQueueLimits]
FACTS = [ev.TaskSucceeded, ev.TaskFailed, ev.TaskTimedOut, ev.TaskRejected, ev.TaskStarted]
FACTS += [ev.RetryDue]


def _value(rng: random.Random, kind: Any) -> Any:
    args = typing.get_args(kind)
    if type(None) in args:
        return None if rng.random() < 0.3 else _value(rng, args[0])
    if kind is str:
        return rng.choice(TEXTS)
    if kind is bool:
        return rng.random() < 0.5
    if kind is int:
        return rng.choice(NUMBERS)
    if typing.get_origin(kind) is tuple:
        return tuple(rng.choice(TEXTS + IDS) for _ in range(rng.randint(0, 3)))
    raise TypeError(f"no random value for {kind}")


def _event(rng: random.Random, cls: type[Any], **chosen: Any) -> Any:
    """An event of `cls` with `chosen` fields and random others, as a consumer would decode it;
    None when the codec refuses what was drawn (no producer could have sent it, or no consumer
    decodes it: the dead-letter topic's)."""
    kinds = typing.get_type_hints(cls, vars(ev))
    fields = {f.name: _value(rng, kinds[f.name]) for f in dataclasses.fields(cls)}
    fields |= {name: value for name, value in chosen.items() if name in fields}
    try:
        return CODEC.decode(CODEC.encode(cls(**fields)))
    except (ValueError, TypeError, OverflowError, DecodeError):
        return None  # one that encodes but does not decode goes to the dead-letter topic


def _command(rng: random.Random, cls: type[Any]) -> Any:
    chosen: dict[str, Any] = {"queue_id": "q1"}
    if cls is ev.AddQueueTask:
        chosen |= {
            "task_id": rng.choice([*IDS, ""]),
            "depends_on": tuple(rng.sample(IDS, rng.randint(0, 2))),
            "agent_id": "a1",
            "func": "f",
            "params": "{}",
            "timeout_s": rng.choice([10, 1, 0, -1]),
            "mode": rng.choice(["NP", "P"]),
            "run_if": rng.choice(["all_succeeded", "all_done"]),
            "max_attempts": rng.choice([1, 2, 3, 0, -5, 2**31 - 1]),
            "backoff_s": rng.choice([0, 1, 60, -1, 2**31 - 1]),
            "selector": None,
            "proxy": None,
        }
    elif cls is ev.CreateQueue:
        chosen |= {"max_parallel": rng.choice([0, 1, 2]), "max_failures": rng.choice([0, 1])}
        chosen |= {"max_failure_percent": 0, "max_parallel_percent": rng.choice([0, 50])}
    if len(chosen) > 1 and rng.random() < 0.3:
        chosen.pop(rng.choice([name for name in chosen if name != "queue_id"]))  # left random
    return _event(rng, cls, **chosen)


def _fact(rng: random.Random, state: model.QueueState) -> tuple[Any, Callable[[], list[Any]]]:
    cls = rng.choice(FACTS)
    task_id = rng.choice([*state.tasks, "t9"])
    fact = _event(rng, cls, task_id=task_id, attempt=rng.choice([1, 1, 2, 3, 0, -1]), queue_id="q1")
    if cls is ev.TaskStarted:
        return fact, lambda: model.running(state, fact)
    if cls is ev.RetryDue:
        return fact, lambda: model.retry_due(state, fact)
    return fact, lambda: model.decide_outcome(state, fact)


def test_random_commands_and_outcomes_never_make_the_queue_fold_raise() -> None:
    rng = random.Random(20261129)
    seen: set[str] = set()
    for _ in range(400):
        state: model.QueueState | None = None
        now = NOW
        for _ in range(25):
            now += rng.randint(0, 5000)
            if state is not None and state.tasks and rng.random() < 0.5:
                event, decide = _fact(rng, state)
            else:
                event = _command(rng, rng.choice(COMMANDS))
                decide = lambda: model.decide(state, event, now, limits=LIMITS)  # noqa: E731, B023
            if event is None:
                continue
            for derived in [event, *decide()]:
                state = model.apply(state, derived)
                seen.add(type(derived).__name__)
            model.due_retries(state, now + 10**9)
    # The lives reached what a queue does, not only rejections.
    assert {"QueueTaskAdded", "QueueTaskReady", "QueueFinished", "QueueTaskRetryScheduled"} <= seen
