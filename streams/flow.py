"""What a domain's stream (queues, crons) shows the rest of the streams worker."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import faust

from elves.schemas.events import Event


@dataclass(frozen=True)
class Flow:
    """A domain's topic, and the handler that the one consumer of `commands` (the task
    lifecycle) hands the domain's commands to. Three agents each reading every command more
    than halved the worker's capacity (bench/faust_trickle.py: 400 submissions/s kept up
    alone, saturated below 300/s with the queue and cron flows also reading `commands`)."""

    topic: faust.TopicT
    on_command: Callable[[Event], Awaitable[None]]
