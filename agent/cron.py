"""The agent's own cron (modes AANP and AAP): fires from the agent's clock, Kafka or not.

Its crons come from two places: the agent's cron file (re-read when its mtime or size changes,
polled about once a second) and the center's `AgentCronSet`s on the dispatch topic (kept in
SQLite by `CronStore`). One thread decides: it sleeps until the next scheduled time of any cron
(or the next look at the file, or a wake from a pushed cron or an ended run), then decides each
cron's due times with `cronplan` and commits the decision (run claims, the moved mark, a
`CronFiresMissed` or `CronFireSkipped`) before any run starts. Runs go through the daemon's
`execute` (the same runner, worker slots, timeout and kill as a dispatched task) on threads the
daemon owns; each ends in one `AgentCronRan` on `results`, through the outbox.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from elves.agent import cronplan
from elves.agent.cronfile import CronDef, cron_from_set, parse_cron_file
from elves.agent.cronstore import Claim, CronStore
from elves.agent.outbox import Outbox, Row
from elves.agent.runner import FLAG_ERROR, LOST, RunResult, TaskSpec
from elves.config import Settings
from elves.errors import BadRequest
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentCronSet, Event

log = logging.getLogger(__name__)

FILE_POLL_S = 1.0
ERROR_PAUSE_S = 1.0  # after an unexpected error in a round, before the next
PRUNE_S = 3600.0  # how often ended runs are forgotten
NOT_RUN_STOPPING = "not run: the agent stopped before its turn"
NOT_RUN_REMOVED = "not run: the cron was paused or removed before its turn"

# (spec, task id, give up waiting for a worker slot, on_start(pid)) -> result; None: not run.
Execute = Callable[[TaskSpec, str, threading.Event, Callable[[int], None]], RunResult | None]
Submit = Callable[[Callable[[], None]], None]
_FileSig = tuple[int, int, int] | None  # mtime_ns, size, inode; None: no file


def cron_file_path(settings: Settings, agent_id: str) -> Path:
    """ELVES_AGENT_CRON_FILE, or one file per agent beside its outbox."""
    if settings.agent_cron_file:
        return Path(settings.agent_cron_file)
    return Path(settings.state_dir) / "agent" / agent_id / "cron.json"


def _now_ms() -> int:
    return int(time.time() * 1000)


class CronScheduler:
    """`start()` it, `push` the center's crons from any thread, `stop()` it at the end."""

    def __init__(
        self,
        settings: Settings,
        agent_id: str,
        outbox: Outbox,
        execute: Execute,
        submit: Submit,
        clock: Callable[[], int] = _now_ms,
        file_poll_s: float = FILE_POLL_S,
    ) -> None:
        self.settings = settings
        self.agent_id = agent_id
        self.path = cron_file_path(settings, agent_id)
        self.store = CronStore(outbox)
        self.results_topic = settings.topic("results")
        self.crons_topic = settings.topic("crons")
        self.ready = threading.Event()  # set once the crons in force are known (tests)
        self._execute = execute
        self._submit = submit
        self._clock = clock
        self._file_poll_s = file_poll_s
        self._config: tuple[CronDef, ...] = ()
        self._file_sig: _FileSig = None
        self._file_read = False
        self._next_look = 0.0  # when to look at the file again (monotonic)
        self._next_prune = time.monotonic() + PRUNE_S
        self._active: dict[str, CronDef] = {}
        self._handled: dict[str, int] = {}  # cron id -> newest scheduled time decided
        self._next: dict[str, int] = {}  # cron id -> next scheduled time
        # Guards what run threads change too: the runs going on and the fires held per cron.
        self._lock = threading.Lock()
        self._running: dict[str, list[int]] = collections.defaultdict(list)
        self._queued: dict[str, collections.deque[tuple[CronDef, int]]] = collections.defaultdict(
            collections.deque
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pushed = threading.Event()  # a center cron changed: reconcile
        self._thread: threading.Thread | None = None

    # --- from other threads -------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="cron", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """No more fires; runs waiting for a worker give up; fires held are reported not run."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            for held in self._queued.values():
                while held:
                    cron, scheduled_at = held.popleft()
                    self._not_run(cron, scheduled_at, NOT_RUN_STOPPING)

    def push(self, event: AgentCronSet) -> bool:
        """Keep a center cron's newest definition; raises BadRequest for one that cannot run.

        Durable on return, so the caller may commit the message's offset.
        """
        if event.status == "active":
            cron_from_set(event, self.settings.task_timeout_s)  # refuse it before keeping it
        elif event.status not in ("paused", "deleted"):
            raise BadRequest(f"unknown cron status {event.status!r}: active, paused or deleted")
        kept = self.store.push(event)
        if kept:
            self._pushed.set()
            self._wake.set()
        return kept

    def active(self) -> dict[str, CronDef]:
        return dict(self._active)

    # --- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                wait_s = self.step()
            except Exception:  # noqa: BLE001 - the cron must outlive one bad round
                log.exception("agent cron: a round failed; trying again")
                wait_s = ERROR_PAUSE_S
            self._wake.wait(wait_s)

    def step(self) -> float:
        """One round: the crons in force, then every due fire; the seconds until the next."""
        if not self.ready.is_set():
            self.store.recover()  # what a killed predecessor left running
            self._read_file()
            self._reconcile()
            self._next_look = time.monotonic() + self._file_poll_s
            self.ready.set()
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_S
            self.store.prune()
        changed = False
        if time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + self._file_poll_s
            changed = self._read_file()
        if changed or self._pushed.is_set():
            self._pushed.clear()
            self._reconcile()
        now = self._clock()
        for cron_id, at in list(self._next.items()):
            if at <= now and not self._stop.is_set():
                self._fire(self._active[cron_id], now)
        soonest = min(self._next.values(), default=math.inf)
        wait_s = min(self._next_look - time.monotonic(), (soonest - self._clock()) / 1000)
        return max(wait_s, 0.0) + 0.001  # a hair late rather than awake just before the time

    def _read_file(self) -> bool:
        """Re-read the cron file if it changed; True when the config crons changed."""
        try:
            st = os.stat(self.path)
            sig: _FileSig = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            sig = None
        except OSError as exc:
            log.warning("cron file %s: %s", self.path, exc)
            return False
        if self._file_read and sig == self._file_sig:
            return False
        self._file_read, self._file_sig = True, sig
        if sig is None:
            if self._config:
                log.info("cron file %s is gone: no config crons", self.path)
            changed = bool(self._config)
            self._config = ()
            return changed
        try:
            parsed = parse_cron_file(
                self.path.read_text(),
                self.agent_id,
                default_timeout_s=self.settings.task_timeout_s,
                max_params_bytes=self.settings.max_params_bytes,
            )
        except (OSError, UnicodeDecodeError) as exc:
            log.warning(
                "cron file %s unreadable, keeping %d crons: %s", self.path, len(self._config), exc
            )
            return False
        except BadRequest as exc:
            log.warning(
                "cron file %s refused [%s], keeping its %d crons: %s",
                self.path,
                exc.code,
                len(self._config),
                exc.message,
            )
            return False
        for problem in parsed.problems:
            log.warning(
                "cron file %s: entry %d (%s) skipped [%s]: %s",
                self.path,
                problem.index,
                problem.name or "no name",
                problem.code,
                problem.message,
            )
        changed = parsed.crons != self._config
        self._config = parsed.crons
        return changed

    def _reconcile(self) -> None:
        """Make the crons in force those of the file and the active center ones."""
        wanted = {cron.cron_id: cron for cron in self._config}
        for event in self.store.pushed():
            if event.status != "active":
                continue
            try:
                cron = cron_from_set(event, self.settings.task_timeout_s)
            except BadRequest as exc:
                log.warning("center cron %s not run [%s]: %s", event.cron_id, exc.code, exc.message)
                continue
            if cron.cron_id in wanted:
                log.warning("center cron %s replaces the config cron of that id", cron.cron_id)
            wanted[cron.cron_id] = cron
        now = self._clock()
        marks = self.store.marks()
        fresh: dict[str, tuple[str, int]] = {}
        handled: dict[str, int] = {}
        for cron_id, cron in wanted.items():
            old = self._active.get(cron_id)
            mark = marks.get(cron_id)
            if old is not None and old.schedule == cron.schedule:
                handled[cron_id] = self._handled[cron_id]
            elif old is None and mark is not None and mark[0] == cron.schedule:
                handled[cron_id] = mark[1]  # kept from before a restart: misfires apply
            else:
                handled[cron_id] = now  # new, or a new schedule: it starts from now
                fresh[cron_id] = (cron.schedule, now)
        gone = set(self._active) - set(wanted)
        self.store.set_marks(fresh, drop=(set(marks) | gone) - set(wanted))
        with self._lock:
            for cron_id in gone:
                held = self._queued.pop(cron_id, collections.deque())
                for cron, scheduled_at in held:
                    self._not_run(cron, scheduled_at, NOT_RUN_REMOVED)
            self._active = wanted
            self._handled = handled
            self._next = {c: cronplan.next_due(wanted[c], h) for c, h in handled.items()}
        if fresh or gone:
            log.info(
                "agent cron: %d in force (new or rescheduled: %s; removed: %s)",
                len(wanted),
                ", ".join(sorted(fresh)) or "none",
                ", ".join(sorted(gone)) or "none",
            )

    def _fire(self, cron: CronDef, now: int) -> None:
        """Decide every due time of one cron, commit the decision, then start its runs."""
        due = cronplan.decide_due(cron, self._handled[cron.cron_id], now)
        rows: list[Row] = []
        if due.missed is not None:
            rows.append(self._row(self.crons_topic, cron.cron_id, due.missed))
            log.warning(
                "cron %s: %d scheduled times missed (%s)",
                cron.cron_id,
                due.missed.count,
                cron.misfire,
            )
        # Under the lock: a run that ends now must not start a held fire behind our back.
        with self._lock:
            running = list(self._running[cron.cron_id])
            queued = len(self._queued[cron.cron_id])
            claims: list[Claim] = []
            start: list[int] = []
            hold: list[int] = []
            for scheduled_at, _catch_up in due.run:
                action = cronplan.decide_overlap(cron.overlap, len(running), queued)
                if action == "skip":
                    before = running[-1] if running else scheduled_at
                    skip = cronplan.skipped(self.agent_id, cron, scheduled_at, before, now)
                    rows.append(self._row(self.crons_topic, cron.cron_id, skip))
                    continue
                claims.append(self._claim(cron, scheduled_at, now))
                if action == "run":
                    running.append(scheduled_at)
                    start.append(scheduled_at)
                else:
                    queued += 1
                    hold.append(scheduled_at)
            claimed = self.store.decide(cron.cron_id, due.handled_until, claims, rows)
            self._handled[cron.cron_id] = max(self._handled[cron.cron_id], due.handled_until)
            self._next[cron.cron_id] = cronplan.next_due(cron, self._handled[cron.cron_id])
            for scheduled_at in start:
                if self._task_id(cron, scheduled_at) in claimed:
                    self._start(cron, scheduled_at)
            for scheduled_at in hold:
                if self._task_id(cron, scheduled_at) in claimed:
                    self._queued[cron.cron_id].append((cron, scheduled_at))

    # --- runs ---------------------------------------------------------------------------------

    def _start(self, cron: CronDef, scheduled_at: int) -> None:
        """Called with the lock held."""
        self._running[cron.cron_id].append(scheduled_at)
        self._submit(functools.partial(self._run, cron, scheduled_at))

    def _run(self, cron: CronDef, scheduled_at: int) -> None:
        task_id = self._task_id(cron, scheduled_at)
        started = [self._clock()]

        def on_start(_pid: int) -> None:
            started[0] = self._clock()

        try:
            spec = TaskSpec(cron.app, cron.func, cron.params, cron.timeout_s, cron.proxy)
            result = self._execute(spec, task_id, self._stop, on_start)
            if result is None:
                result = RunResult(FLAG_ERROR, NOT_RUN_STOPPING, 0)
            report = cronplan.ran(
                self.agent_id, cron, scheduled_at, started[0], self._clock(), result
            )
            self.store.finish(task_id, self._row(self.results_topic, task_id, report))
            log.info(
                "cron %s at %s: task %s flag %s in %s ms",
                cron.cron_id,
                scheduled_at,
                task_id,
                result.worker_flag,
                result.worker_costtime,
            )
        except Exception:  # noqa: BLE001 - its claim stays open; the next start reports it
            log.exception("cron %s: the run of %s failed to report", cron.cron_id, scheduled_at)
        finally:
            self._ended(cron, scheduled_at)

    def _ended(self, cron: CronDef, scheduled_at: int) -> None:
        with self._lock:
            running = self._running[cron.cron_id]
            running.remove(scheduled_at)
            held = self._queued[cron.cron_id]
            if running or not held:
                return
            queued_cron, queued_at = held.popleft()
            if self._stop.is_set():
                self._not_run(queued_cron, queued_at, NOT_RUN_STOPPING)
            else:
                self._start(queued_cron, queued_at)

    def _not_run(self, cron: CronDef, scheduled_at: int, why: str) -> None:
        now = self._clock()
        report = cronplan.ran(
            self.agent_id, cron, scheduled_at, now, now, RunResult(FLAG_ERROR, why, 0)
        )
        self.store.finish(report.task_id, self._row(self.results_topic, report.task_id, report))

    def _claim(self, cron: CronDef, scheduled_at: int, now: int) -> Claim:
        lost = cronplan.ran(
            self.agent_id,
            cron,
            scheduled_at,
            now,
            now,
            RunResult(FLAG_ERROR, LOST, 0, output_parts=None),
        )
        return Claim(lost.task_id, cron.cron_id, scheduled_at, self.results_topic, lost)

    def _task_id(self, cron: CronDef, scheduled_at: int) -> str:
        return cronplan.run_task_id(self.agent_id, cron.cron_id, scheduled_at)

    @staticmethod
    def _row(topic: str, key: str, event: Event) -> Row:
        return topic, key.encode(), CODEC.encode(event)
