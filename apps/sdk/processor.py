"""The app processor runner: the server side of an app, called after each of its P-mode tasks.

The ELVES processor contract, kept: an app folder may hold `processor.py` with a class named as
the app (like `<app>.py` for the worker). When a P-mode task of that app ends (mode "P" on a
queue task, "CAP"/"AAP" on the wire), the runner calls the method named after the task's func:

    method(self, task: dict, flag: int, result: str, costtime: int)

`task` is the `ProcessorResult` as a dict (`task_id`, `attempt`, `agent_id`, `app`, `func`,
`params` parsed from its JSON text, `status`, `queue_id`, ...); `flag` is the `worker_flag`
(1 success, 0 the app returned false, -1 crash or timeout), `result` the `worker_message`,
`costtime` the run time in ms. A class without that method gets `default(...)` if it has one;
otherwise the event is logged and skipped. What the method returns is ignored.

Delivery: the runner consumes `<prefix>processor.<app>` from the earliest offset (a processor
that was down catches up) and commits each offset after handling it. Handled event ids are kept
in SQLite at `<state_dir>/processor/<app>.sqlite`, so an event Kafka delivers again after a crash
(or that the streams produced twice) is not processed twice. The id is recorded after the method
returns: only a crash inside that short window runs a method twice.

An exception in a processor method is logged with its traceback and the event is still marked
done: one bad event never blocks the stream. Messages that do not decode, or are not a
`ProcessorResult` of this app, go to the DLQ with origin `processor:<app>`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer

from elves.config import Settings
from elves.errors import DecodeError
from elves.kafka import consumer as make_consumer
from elves.kafka import dead_letter
from elves.kafka import producer as make_producer
from elves.schemas.codec import CODEC, event_name
from elves.schemas.events import ProcessorResult
from elves.topics import TopicSpec, ensure_topics

log = logging.getLogger(__name__)

POLL_S = 0.2
MODULE = "processor.py"
DEFAULT_METHOD = "default"

Outcome = Literal["done", "failed", "skipped"]
Method = Callable[[dict[str, Any], int, str, int], object]


def task_dict(result: ProcessorResult) -> dict[str, Any]:
    """The `task` a processor method receives: the event as a dict, its params parsed."""
    task = dataclasses.asdict(result)
    try:
        task["params"] = json.loads(result.params) if result.params.strip() else {}
    except ValueError:
        log.warning("task %s: params are not JSON; passed as text", result.task_id)
    return task


class Processor:
    """One app's processor: an instance of class `<app>` from `<apps_dir>/<app>/processor.py`."""

    def __init__(self, app: str, instance: object) -> None:
        self.app = app
        self.instance = instance

    @classmethod
    def load(cls, apps_dir: Path, app: str) -> Processor:
        path = Path(apps_dir) / app / MODULE
        if not path.is_file():
            raise FileNotFoundError(f"app {app!r} has no processor: {path} not found")
        folder = str(path.parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # the processor may import helpers that sit beside it
        name = f"elves_processor_{app}"  # not `processor`: apps would shadow each other
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        klass = getattr(module, app, None)
        if klass is None:
            raise ImportError(f"{path} has no class named {app!r}")
        if not isinstance(klass, type):
            raise TypeError(f"{path}: {app!r} must be a class, not {type(klass).__name__}")
        return cls(app, klass())

    def method_for(self, func: str) -> Method | None:
        """The method for `func`, else `default`, else None; private names are never called."""
        for name in (func, DEFAULT_METHOD):
            if name.startswith("_"):
                continue
            method = getattr(self.instance, name, None)
            if callable(method):
                return method  # type: ignore[no-any-return]
        return None

    def handle(self, result: ProcessorResult) -> Outcome:
        """Call the method for this result; an exception is logged, never raised."""
        method = self.method_for(result.func)
        if method is None:
            log.warning(
                "processor %s has no method %r and no %r; task %s skipped",
                self.app,
                result.func,
                DEFAULT_METHOD,
                result.task_id,
            )
            return "skipped"
        try:
            method(
                task_dict(result), result.worker_flag, result.worker_message, result.worker_costtime
            )
        except Exception:  # noqa: BLE001 - the contract: one bad event never blocks the stream
            log.exception(
                "processor %s.%s failed on task %s attempt %s; marked done",
                self.app,
                result.func,
                result.task_id,
                result.attempt,
            )
            return "failed"
        return "done"


_SCHEMA = """
CREATE TABLE IF NOT EXISTS handled (
    event_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    handled_at INTEGER NOT NULL
)
"""


def ledger_path(settings: Settings, app: str) -> Path:
    return Path(settings.state_dir) / "processor" / f"{app}.sqlite"


class Ledger:
    """The ids of the events a processor has handled, in SQLite (nothing is pruned yet)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(_SCHEMA)

    def seen(self, event_id: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM handled WHERE event_id = ?", (event_id,))
        return row.fetchone() is not None

    def mark(self, result: ProcessorResult, outcome: Outcome) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO handled VALUES (?, ?, ?, ?, ?)",
            (result.event_id, result.task_id, result.attempt, outcome, int(time.time() * 1000)),
        )

    def close(self) -> None:
        self.conn.close()


class Runner:
    """Consumes one app's processor topic and hands each new result to its `Processor`."""

    def __init__(
        self, settings: Settings, processor: Processor, ledger: Ledger, dlq: Producer
    ) -> None:
        self.settings = settings
        self.processor = processor
        self.ledger = ledger
        self.dlq = dlq
        self.app = processor.app
        self.origin = f"processor:{self.app}"

    def consume(self, consumer: Consumer, stop: threading.Event) -> None:
        while not stop.is_set():
            self.dlq.poll(0)
            msg = consumer.poll(POLL_S)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("processor %s consumer error: %s", self.app, err)
                continue
            self.handle(msg)
            try:
                consumer.commit(message=msg, asynchronous=False)
            except KafkaException as exc:
                log.warning(
                    "processor %s commit failed (a redelivery is deduped): %s", self.app, exc
                )

    def handle(self, msg: Message) -> None:
        try:
            event = CODEC.decode(msg.value())
        except DecodeError as exc:
            self._reject(msg, exc.message)
            return
        if not isinstance(event, ProcessorResult):
            self._reject(msg, f"{event_name(event)} is not a ProcessorResult")
            return
        if event.app != self.app:
            self._reject(msg, f"ProcessorResult of app {event.app!r}, not {self.app!r}")
            return
        if self.ledger.seen(event.event_id):
            log.info("processor %s: event %s already handled; ignored", self.app, event.event_id)
            return
        outcome = self.processor.handle(event)
        self.ledger.mark(event, outcome)
        log.info(
            "processor %s: task %s attempt %s %s",
            self.app,
            event.task_id,
            event.attempt,
            outcome,
        )

    def _reject(self, msg: Message, reason: str) -> None:
        log.warning("processor %s: message to the DLQ: %s", self.app, reason)
        dead_letter(self.dlq, self.settings, msg, reason, self.origin)
        self.dlq.flush(5.0)  # before the offset is committed past it


def run(settings: Settings, app: str, stop: threading.Event, apps_dir: Path | None = None) -> None:
    """Run `app`'s processor until `stop` is set; `apps_dir` defaults to `settings.apps_dir`."""
    processor = Processor.load(apps_dir or settings.apps_dir, app)
    # The streams make the topic on the first P-mode result; a processor may start before that.
    ensure_topics(settings, (TopicSpec(f"processor.{app}", 1),))
    ledger = Ledger(ledger_path(settings, app))
    dlq = make_producer(settings, "processor-dlq")
    consumer = make_consumer(settings, settings.topic(f"processor.{app}"))
    try:
        consumer.subscribe([settings.processor_topic(app)])
        log.info("processor %s consuming %s", app, settings.processor_topic(app))
        Runner(settings, processor, ledger, dlq).consume(consumer, stop)
    finally:
        consumer.close()
        dlq.flush(5.0)
        ledger.close()
        log.info("processor %s stopped", app)
