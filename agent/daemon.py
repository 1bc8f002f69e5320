"""The agent daemon: the composition root of one host's agent.

It heartbeats, consumes its own dispatch topic, runs each task as a process (forked from the warm
fork server for Python apps) on a bounded pool, and reports through the durable outbox:
`TaskStarted` (the time its process started, and its pid) once that process has run
`START_REPORT_S`, `TaskResultReported` when it is over, both to `results` keyed by task id. The
result carries that start too, and a task that ends sooner has no `TaskStarted`: most tasks are
short, and one record fewer for each is less work for every part that reads `results`.

Delivery: at-least-once with dedupe. A dispatch's offset is stored for commit only after its
`(task_id, attempt)` is claimed in the outbox database, so a crash before that means Kafka
delivers it again, and a crash after means the claim makes the agent ignore it. While every
worker is busy the agent goes on reading, so that a cancel reaches what runs: dispatches wait
in order in a backlog (`backlog.py`), and no offset past one of them is stored. Stored offsets
are committed every second and at the end, not one request per task. A crash while a
task runs loses that task's result, and the agent does not run it again (an ops action twice):
its fork server kills what the task started, and the agent's next start reports the attempt
failed as lost (`LOST`), so its queue's retries and skips follow then. An agent that never comes
back leaves it to the center's deadline, which times it out: no task stays running forever.
The dispatch consumer is a static group member (its agent id), so an agent back from a crash
takes its topic over at once instead of waiting out its dead self's session.

The agent's own cron (`cron.py`) runs beside the consumer: it starts before the agent reaches
Kafka and fires whether Kafka answers or not. Its runs share the worker slots and the runner
with dispatched tasks; the center's crons (`AgentCronSet`) arrive on the dispatch topic.

Security: at every start the agent registers its key (`AgentRegistered` on `enrolments`, through
the outbox); the center dispatches nothing to it until an operator accepts that key. Every
message on its dispatch topic must be signed by the center: `gate.py` checks it, and anything
unsigned, forged, for another agent, expired, replayed, or a task for an app not allowed here
is not acted on and is reported as a `DispatchRefused` on `security`. Such a task also ends at
once: its attempt is reported failed with 416.6 (and a cron's fire of such an app likewise).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from elves.agent.backlog import Backlog
from elves.agent.cron import CronScheduler
from elves.agent.forkclient import ForkServer, ForkServerUnavailable
from elves.agent.gate import Gate, where
from elves.agent.heartbeat import Heartbeater
from elves.agent.identity import agent_id as load_agent_id
from elves.agent.identity import agent_key
from elves.agent.install import packages_dir
from elves.agent.outbox import Outbox, Row, Unended, default_path
from elves.agent.output import OutputParts, OutputStream, Part
from elves.agent.procs import Left, Tracked
from elves.agent.rollout import Rollout, gateway_fetch
from elves.agent.runner import FLAG_ERROR, LOST, STOPPING, Runner, RunResult, TaskSpec
from elves.config import Settings
from elves.errors import BadRequest, BadSelector, DispatchAppNotAllowed, DispatchRefusal
from elves.kafka import QUIET_FETCH_WAIT_MS, dead_letter
from elves.kafka import consumer as make_consumer
from elves.kafka import producer as make_producer
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentCronSet,
    TaskCancelRequested,
    TaskDispatched,
    TaskOutput,
    TaskResultReported,
    TaskStarted,
    derived_id,
    new_id,
)
from elves.signing import Opened, registration, short_id
from elves.topics import ensure_dispatch_topic

log = logging.getLogger(__name__)

POLL_S = 0.2
# While a dispatch waits for a worker, the consumer waits this long for one, then reads what came.
BUSY_WAIT_S = 0.05
BACKLOG_MOST = 1000  # dispatches kept while the workers are busy; beyond, reading pauses
# A task's start is reported once it has run this long; one that ends sooner reports its start
# only inside its result (DECISIONS.md has what each step measured).
START_REPORT_S = 0.5
TOPIC_RETRY_S = 2.0  # Kafka unreachable at the start: try again after this (the cron runs)
CANCELLED = "cancelled: the center asked to stop it"


def _not_allowed(app: str, **details: object) -> DispatchAppNotAllowed:
    return DispatchAppNotAllowed(
        f"app {app} is not allowed on this agent (ELVES_AGENT_APPS or the app's rule)", **details
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class Agent:
    """One agent. Build it, then `run(stop)` in the thread that should own the consumer."""

    def __init__(
        self,
        settings: Settings,
        *,
        workers: int = 4,
        stop_grace_s: float = 10.0,
        use_forkserver: bool = True,
    ) -> None:
        self.settings = settings
        self.agent_id = load_agent_id(settings)
        self.workers = workers
        self.stop_grace_s = stop_grace_s
        self.results_topic = settings.topic("results")
        self.output_topic = settings.topic("output")
        self.origin = f"agent:{self.agent_id}"
        self.outbox = Outbox(settings, default_path(settings, self.agent_id))
        self.procs = Tracked(self.outbox.path.parent / "processes")  # its running tasks'
        self.key = agent_key(settings, self.agent_id)
        self.gate = Gate(settings, self.agent_id, self.outbox)
        self.forkserver = ForkServer() if use_forkserver else None
        self.runner = Runner(
            settings.apps_dir,
            settings.max_output_bytes,
            forkserver=self.forkserver,
            installed=packages_dir(settings, self.agent_id),
        )
        self.rollout = Rollout(
            settings, self.agent_id, gateway_fetch(settings, self.agent_id, self.key)
        )
        self.ready = threading.Event()  # set once the consumer is subscribed (for tests, CLI)
        self.fenced = False  # another process took this agent's id: it stopped (`_consume`)
        self._kill = threading.Event()  # set when running tasks must be killed
        # One event per claimed attempt: set by the agent stopping or a TaskCancelRequested.
        self._cancels: dict[tuple[str, int], threading.Event] = {}
        self._cancel_lock = threading.Lock()
        self._slots = threading.Semaphore(workers)
        # Dispatches read while every worker was busy (`agent/backlog.py`): the consumer's alone.
        self._backlog: Backlog[tuple[Opened, str, Message], Message] = Backlog(BACKLOG_MOST)
        self._futures: set[cf.Future[None]] = set()
        # Cron runs wait for a slot on threads of their own: on the dispatch pool they could
        # hold every thread while the dispatches that hold the slots wait for one.
        self._cron_pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="cron-run")
        self.crons = CronScheduler(
            settings, self.agent_id, self.outbox, self._execute_cron, self._submit_cron
        )

    # --- the loop -----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._report_lost(self.procs.kill_left())
        if self.forkserver is not None:
            try:
                self.forkserver.start()
            except ForkServerUnavailable as exc:
                log.warning("no fork server, every task is a fresh interpreter: %s", exc)
                self.forkserver = self.runner.forkserver = None
        self.outbox.start()
        self._register()
        self.crons.start()
        log.info("agent %s: cron file %s", self.agent_id, self.crons.path)
        try:
            # The topic before the first heartbeat: once up, the streams may dispatch to it.
            if not self._dispatch_topic_ready(stop):
                return
            self._run_online(stop)
        finally:
            self._stop_local()

    def _dispatch_topic_ready(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                ensure_dispatch_topic(self.settings, self.agent_id)
            except (KafkaException, TimeoutError) as exc:
                log.warning("dispatch topic not ready (is Kafka reachable?), retrying: %s", exc)
                stop.wait(TOPIC_RETRY_S)
                continue
            log.info("agent %s: dispatch topic ready", self.agent_id)
            return True
        return False

    def _run_online(self, stop: threading.Event) -> None:
        dlq = make_producer(self.settings, "agent-dlq")
        beats_stop = threading.Event()
        beats = threading.Thread(
            target=Heartbeater(
                self.settings,
                self.agent_id,
                packages=lambda: (self.rollout.versions(), self.rollout.errors()),
            ).run,
            args=(beats_stop,),
            name="heartbeat",
            daemon=True,
        )
        beats.start()
        # Installs run beside the heartbeats and tasks; it stops with the heartbeats.
        self._rollout_thread = threading.Thread(
            target=self.rollout.run, args=(beats_stop,), name="rollout", daemon=True
        )
        self._rollout_thread.start()
        log.info("agent %s: heartbeats every %ss", self.agent_id, self.settings.heartbeat_s)
        pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="task")
        # Named under the stack's prefix, as its topics are: stacks that share a broker may
        # have agents of one id, and a static member's id must be this agent's alone.
        group = self.settings.topic(f"agent.{self.agent_id}")
        consumer = make_consumer(
            self.settings,
            group,
            **{
                # What `store_offsets` marked, committed in the background: a commit per task
                # was a broker request per task.
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.commit.interval.ms": 1000,
                # The broker answers as soon as a dispatch lands, so a long wait adds no latency
                # to a task (its one partition is in every fetch); it is how often an idle agent
                # asks. A fleet of idle agents is most of what a broker hears.
                "fetch.wait.max.ms": QUIET_FETCH_WAIT_MS,
                # A static member: an agent back from a crash takes its partition over at
                # once, where a new member would wait out the dead one's session (45 s).
                "group.instance.id": group,
            },
        )
        consumer.subscribe([self.settings.dispatch_topic(self.agent_id)])
        log.info(
            "agent %s consuming %s", self.agent_id, self.settings.dispatch_topic(self.agent_id)
        )
        self.ready.set()
        try:
            self._consume(consumer, dlq, pool, stop)
        finally:
            self._shutdown(consumer, dlq, pool, beats, beats_stop)

    def _consume(
        self, consumer: Consumer, dlq: Producer, pool: cf.ThreadPoolExecutor, stop: threading.Event
    ) -> None:
        backlog = self._backlog
        paused = False
        while not stop.is_set():
            dlq.poll(0)
            waiting = backlog.first()
            if waiting is None:
                if paused:
                    consumer.resume(consumer.assignment())
                    paused = False
                msg = consumer.poll(POLL_S)
            else:
                # A dispatch waits for a worker: start it the moment one is free, and between
                # waits read what came, so a cancel reaches what runs whatever the workers do.
                if self._slots.acquire(timeout=BUSY_WAIT_S):
                    opened, at, kept = waiting
                    if not self._dispatch(opened, at, kept, pool):
                        self._slots.release()
                    self._store(consumer, backlog.started())
                    continue
                if backlog.full:
                    # Stop fetching but keep polling, so the group keeps us.
                    if not paused:
                        consumer.pause(consumer.assignment())
                        paused = True
                    self._unread(consumer, consumer.poll(0))
                    continue
                msg = consumer.poll(0)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.fatal() or error.code() == KafkaError._FATAL:
                    # A static member's consumer is fenced when another joins with its id: a
                    # second agent runs as this one, and it has the dispatch topic now. (The
                    # message's error is the generic _FATAL, whose fatal() says False.)
                    log.error(
                        "agent %s stops: %s (is another agent running with this id?)",
                        self.agent_id,
                        error,
                    )
                    self.fenced = True
                    return
                log.warning("consumer error: %s", error)
                continue
            self._read(consumer, msg, dlq, pool)

    def _read(
        self, consumer: Consumer, msg: Message, dlq: Producer, pool: cf.ThreadPoolExecutor
    ) -> None:
        """Check one message and act on it: a dispatch starts if a worker is free and nothing
        waits before it, else it waits in the backlog; anything else is acted on at once."""
        checked = self._check(msg)
        if checked is not None:
            opened, at = checked
            if isinstance(opened.event, TaskDispatched):
                if self._backlog.first() is not None or not self._slots.acquire(blocking=False):
                    self._backlog.keep((opened, at, msg), msg)
                    return
                if not self._dispatch(opened, at, msg, pool):
                    self._slots.release()
            else:
                self._control(opened, at, dlq, msg)
        self._store(consumer, self._backlog.handled(msg))

    @staticmethod
    def _store(consumer: Consumer, msg: Message | None) -> None:
        """Mark a read position for the next commit (None: nothing may be stored yet)."""
        if msg is not None:
            consumer.store_offsets(message=msg)

    @staticmethod
    def _unread(consumer: Consumer, msg: Message | None) -> None:
        """Put back a message fetched while paused: the next poll after resume returns it."""
        if msg is None or msg.error() is not None:
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is not None and partition is not None and offset is not None:
            consumer.seek(TopicPartition(topic, partition, offset))

    def _register(self) -> None:
        """Tell the center this agent's key (at every start: the fold keeps the decision, and a
        new key makes the agent pending again). Through the outbox: sent once Kafka answers."""
        event = registration(self.key, self.agent_id, socket.gethostname(), new_id(), _now_ms())
        self.outbox.put(
            self.settings.topic("enrolments"), self.agent_id.encode(), CODEC.encode(event)
        )
        log.info(
            "agent %s: registered key %s; nothing is dispatched to it until an operator"
            " accepts it (elves agent accept %s)",
            self.agent_id,
            short_id(event.public_key),
            self.agent_id,
        )

    def _check(self, msg: Message) -> tuple[Opened, str] | None:
        """The verified message and where it was read; None when it is refused (reported) or
        was acted on before (Kafka's redelivery)."""
        at = where(msg)
        try:
            opened = self.gate.open(msg.value(), _now_ms())
            if self.gate.delivery(opened, at) == "again":
                log.info("%s delivered again; it was handled before", at)
                return None
        except DispatchRefusal as exc:
            log.warning("refused %s: [%s] %s", at, exc.code, exc.message)
            self.outbox.put(*self.gate.refusal(exc, msg, _now_ms()))
            return None
        return opened, at

    def _dispatch(self, opened: Opened, at: str, msg: Message, pool: cf.ThreadPoolExecutor) -> bool:
        """Start a checked dispatch (the caller holds a worker slot); True when it was
        submitted, and then it keeps the slot."""
        event = opened.event
        assert isinstance(event, TaskDispatched)
        if not self._app_allowed(event.app):
            self._refuse_app(event, opened, at, msg)
            return False
        return self._start(event, opened, at, pool)

    def _control(self, opened: Opened, at: str, dlq: Producer, msg: Message) -> None:
        """A cancel or a cron's new version: acted on at once, whatever its app (a cancel and a
        pause only take away, and a cron's fires are judged when they come: `_execute_cron`)."""
        event = opened.event
        if isinstance(event, TaskCancelRequested):
            self._cancel(event)
        elif isinstance(event, AgentCronSet):
            self._cron_set(event, dlq, msg)
        if self._backlog.first() is None:
            self.gate.remember(opened, at)  # after acting: a crash before means it acts again
        # Else its read position is not stored until the dispatches before it have started,
        # so after a crash it is read and acted on again, and need not be remembered (a cancel
        # or a cron's version acts the same twice).

    def _refuse_app(self, event: TaskDispatched, opened: Opened, at: str, msg: Message) -> None:
        """A dispatch the center signed, for now and for this agent, of an app this agent may
        not run (416.6): refused, and its attempt ends here, failed with the code, rather than
        at its deadline as `timed_out` (its queue's retries and skips then follow at once). Such
        a dispatch is a stale or a buggy center's, not a forgery, so the center's task is the
        one to end."""
        refused = _not_allowed(event.app, task_id=opened.claims.subject, key_id=opened.key_id)
        log.warning("refused %s: [%s] %s", at, refused.code, refused.message)
        refusal = self.gate.refusal(refused, msg, _now_ms())
        ended = RunResult(FLAG_ERROR, f"[{refused.code}] {refused.message}", 0)
        if not self.gate.claim(opened, at, refusal, self._result_row(event, ended), ended=True):
            log.info("task %s attempt %s already run; ignored", event.task_id, event.attempt)

    def _app_allowed(self, app: str) -> bool:
        """May this agent run `app`? Its own list (`ELVES_AGENT_APPS`, empty: any), and the
        center's permission rule for the app (`elves app allow`), which it reads from `apps`."""
        allowed = self.settings.allowed_apps
        own = allowed is None or app in allowed
        return own and self.rollout.permits(app, self.agent_id, self.settings.tags)

    def _start(
        self, event: TaskDispatched, opened: Opened, at: str, pool: cf.ThreadPoolExecutor
    ) -> bool:
        if not self.gate.claim(opened, at):
            log.info("task %s attempt %s already run; ignored", event.task_id, event.attempt)
            return False
        with self._cancel_lock:
            # A cancel read while it waited in the backlog has set its event already.
            self._cancels.setdefault((event.task_id, event.attempt), threading.Event())
        future = pool.submit(self._run_task, event)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)
        return True

    def _cancel(self, request: TaskCancelRequested) -> None:
        """Kill the process group of a running attempt; one not started yet will not start."""
        key = (request.task_id, request.attempt)
        kept = {(o.claims.subject, o.claims.attempt) for o, _, _ in self._backlog.kept()}
        with self._cancel_lock:
            if key in kept:  # it gets its event now, set: it ends cancelled at its start
                self._cancels.setdefault(key, threading.Event())
            cancel = self._cancels.get(key)
        if cancel is None:
            log.info(
                "cancel for task %s attempt %s: not running here", request.task_id, request.attempt
            )
            return
        log.info(
            "cancelling task %s attempt %s: %s", request.task_id, request.attempt, request.reason
        )
        cancel.set()

    def _cron_set(self, event: AgentCronSet, dlq: Producer, msg: Message) -> None:
        """Keep the center's newest version of one of this agent's crons (before the commit)."""
        try:
            kept = self.crons.push(event)
        except BadRequest as exc:
            self._reject(dlq, msg, f"cron {event.cron_id}: [{exc.code}] {exc.message}")
            return
        log.info(
            "cron %s from the center: %s%s",
            event.cron_id,
            event.status,
            "" if kept else " (older than the version kept: ignored)",
        )

    def _reject(self, dlq: Producer, msg: Message, reason: str) -> None:
        """A signed message the agent cannot act on (a cron it cannot run): the DLQ."""
        log.warning("dispatch to the DLQ: %s", reason)
        dead_letter(dlq, self.settings, msg, reason, self.origin)
        dlq.flush(5.0)  # before the offset is committed past it

    def _report_lost(self, left: dict[tuple[str, int], Left]) -> None:
        """End every attempt this agent took on and never ended: it was running them when the
        agent died (a `kill -9`, a crash, a power loss), and their results are gone with it.
        Each is reported failed, as lost, at once, rather than timed out at its deadline. `left`:
        the processes of the tasks it ran, and whether a group was still there to kill."""
        for lost in self.outbox.unended():
            process = left.get((lost.task_id, lost.attempt))
            killed = process is not None and process.killed
            message = LOST + ("; its processes were killed" if killed else "")
            pid = process.pid if process is not None else None
            with self.outbox.transaction() as txn:
                txn.put(*self._result_row(lost, RunResult(FLAG_ERROR, message, 0), pid))
                txn.ended(lost.task_id, lost.attempt)
            log.warning("task %s attempt %s: %s", lost.task_id, lost.attempt, message)

    # --- one task -----------------------------------------------------------------------------

    def _run_task(self, dispatch: TaskDispatched) -> None:
        try:
            spec = TaskSpec(
                app=dispatch.app,
                func=dispatch.func,
                params=dispatch.params,
                timeout_s=dispatch.timeout_s or self.settings.task_timeout_s,
                proxy=dispatch.proxy,
            )

            start: list[tuple[int, int]] = []  # its process's (pid, start time), once started

            def started(pid: int) -> None:
                start.append((pid, _now_ms()))

            def still_running() -> None:
                # Only informs (the result follows): no fsync on the task's way to its run.
                self.outbox.put(*self._started_row(dispatch, *start[0]), durable=False)

            result = self._execute(
                (dispatch.task_id, dispatch.attempt), spec, started, still_running
            )
            with self.outbox.transaction() as txn:
                txn.put(*self._result_row(dispatch, result, *(start[0] if start else ())))
                txn.ended(dispatch.task_id, dispatch.attempt)
            log.info(
                "task %s attempt %s: flag %s in %s ms",
                dispatch.task_id,
                dispatch.attempt,
                result.worker_flag,
                result.worker_costtime,
            )
        finally:
            self._slots.release()

    def _execute(
        self,
        key: tuple[str, int],
        spec: TaskSpec,
        started: Callable[[int], None],
        still_running: Callable[[], None] | None = None,
    ) -> RunResult:
        """Run one task (a dispatch's attempt or a cron fire) to its end, its timeout or its
        cancel; the caller holds a worker slot."""
        with self._cancel_lock:
            cancel = self._cancels.setdefault(key, threading.Event())
        if self._kill.is_set():
            cancel.set()
        output = self._output(*key)
        pids: list[int] = []

        def on_start(pid: int) -> None:
            self.procs.add(pid, *key)  # for the next start, should the agent die first
            pids.append(pid)
            started(pid)

        try:
            if cancel.is_set():
                return RunResult(FLAG_ERROR, CANCELLED, 0)
            result = self.runner.run(
                spec,
                on_start=on_start,
                cancel=cancel,
                still_running=still_running,
                still_running_after_s=START_REPORT_S,
                output=output,
            )
        except Exception as exc:  # noqa: BLE001 - an agent bug must still end in a result
            log.exception("task %s: the agent failed to run it", key[0])
            sent = output.sent if output is not None else 0  # what went out before it failed
            return RunResult(FLAG_ERROR, f"agent error: {exc!r}", 0, output_parts=sent)
        else:
            if result.worker_message == STOPPING and not self._kill.is_set():
                result = dataclasses.replace(result, worker_message=CANCELLED)
            return result
        finally:
            for pid in pids:
                self.procs.remove(pid)
            with self._cancel_lock:
                self._cancels.pop(key, None)

    def _output(self, task_id: str, attempt: int) -> OutputStream | None:
        """Where what an attempt prints goes as it runs: `TaskOutput`s on the output topic,
        through the outbox, so that they keep their order and survive a broker outage. Not
        fsynced: output informs, the result decides (and its commit makes them durable too)."""
        if self.settings.stream_output_bytes <= 0:
            return None

        def send(parts: list[Part]) -> None:
            with self.outbox.transaction(durable=False) as txn:
                for part in parts:
                    event = TaskOutput(
                        # Made once, kept in the outbox: a redelivery sends the same id.
                        event_id=new_id(),
                        occurred_at=_now_ms(),
                        task_id=task_id,
                        attempt=attempt,
                        agent_id=self.agent_id,
                        seq=part.seq,
                        stream=part.stream,
                        data=part.data,
                        dropped_bytes=part.dropped_bytes,
                    )
                    txn.put(self.output_topic, task_id.encode(), CODEC.encode(event))

        return OutputStream(OutputParts(self.settings.stream_output_bytes), send)

    def _execute_cron(
        self,
        spec: TaskSpec,
        task_id: str,
        give_up: threading.Event,
        started: Callable[[int], None],
    ) -> RunResult | None:
        """A cron fire: wait for a worker slot like a dispatch would; None if it gave up.

        A cron of an app this agent may not run (its own list or the app's rule, as for a
        dispatch) does not run: the fire ends failed with 416.6, in the audit like any fire. A
        cron from the agent's own file is judged here, where the center cannot judge it."""
        if not self._app_allowed(spec.app):
            refused = _not_allowed(spec.app)
            log.warning("cron task %s not run: [%s] %s", task_id, refused.code, refused.message)
            return RunResult(FLAG_ERROR, f"[{refused.code}] {refused.message}", 0)
        while not self._slots.acquire(timeout=POLL_S):
            if give_up.is_set():
                return None
        try:
            return None if give_up.is_set() else self._execute((task_id, 1), spec, started)
        finally:
            self._slots.release()

    def _submit_cron(self, run: Callable[[], None]) -> None:
        future = self._cron_pool.submit(run)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def _started_row(self, dispatch: TaskDispatched, pid: int, at: int) -> Row:
        event = TaskStarted(
            event_id=derived_id(dispatch.event_id, "started"),
            occurred_at=at,
            task_id=dispatch.task_id,
            attempt=dispatch.attempt,
            agent_id=self.agent_id,
            pid=pid,
        )
        return self.results_topic, dispatch.task_id.encode(), CODEC.encode(event)

    def _result_row(
        self,
        dispatch: TaskDispatched | Unended,
        result: RunResult,
        pid: int | None = None,
        started_at: int | None = None,
    ) -> Row:
        event = TaskResultReported(
            event_id=derived_id(dispatch.event_id, "result"),
            occurred_at=_now_ms(),
            task_id=dispatch.task_id,
            attempt=dispatch.attempt,
            agent_id=self.agent_id,
            app=dispatch.app,
            func=dispatch.func,
            worker_flag=result.worker_flag,
            worker_message=result.worker_message,
            worker_costtime=result.worker_costtime,
            truncated=result.truncated,
            timed_out=result.timed_out,
            started_at=started_at,
            pid=pid,
            output_parts=result.output_parts,
        )
        return self.results_topic, dispatch.task_id.encode(), CODEC.encode(event)

    # --- the end ------------------------------------------------------------------------------

    def _shutdown(
        self,
        consumer: Consumer,
        dlq: Producer,
        pool: cf.ThreadPoolExecutor,
        beats: threading.Thread,
        beats_stop: threading.Event,
    ) -> None:
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            log.debug("final commit: %s", exc)  # nothing new to commit is the usual case
        consumer.close()
        self._stop_tasks()
        pool.shutdown(wait=True)
        beats_stop.set()
        beats.join()
        self._rollout_thread.join(timeout=5.0)
        dlq.flush(2.0)

    def _stop_tasks(self) -> None:
        """No more cron fires; wait for the running tasks, then kill what is left."""
        self.crons.stop()
        running = set(self._futures)
        if running:
            log.info("waiting up to %ss for %d running tasks", self.stop_grace_s, len(running))
            _done, left = cf.wait(running, timeout=self.stop_grace_s)
            if left:
                log.warning("killing %d tasks that did not finish in time", len(left))
                self._kill.set()
                with self._cancel_lock:
                    for cancel in self._cancels.values():
                        cancel.set()

    def _stop_local(self) -> None:
        """What runs without Kafka: the cron, its runs, the outbox, the fork server."""
        self._stop_tasks()
        self._cron_pool.shutdown(wait=True)
        self.outbox.close(timeout=5.0)
        self.procs.close()  # every task has ended: its threads are done
        if self.forkserver is not None:
            self.forkserver.close()
        log.info("agent %s stopped", self.agent_id)


def run(settings: Settings, stop: threading.Event) -> bool:
    """Run an agent with these settings until `stop` is set; False if it had to stop first
    (another process took its id)."""
    agent = Agent(settings, workers=settings.agent_workers)
    agent.run(stop)
    return not agent.fenced


def main(settings: Settings) -> int:
    """`elves agent`: run until SIGTERM or SIGINT."""
    try:
        tags = settings.tags
    except BadSelector as exc:
        # A typo must not start an untagged agent; the message says it all, no traceback.
        log.error("ELVES_AGENT_TAGS: %s", exc.message)  # noqa: TRY400
        return 2
    log.info("agent tags: %s", tags or "(none)")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return 0 if run(settings, stop) else 1
