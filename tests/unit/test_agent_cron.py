"""The agent's cron scheduler without a broker: a clock of the test's own, runs collected and
played by the test, and the outbox read back from SQLite. Restarts are a new scheduler on the
same state dir."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from elves.agent.cron import NOT_RUN_REMOVED, NOT_RUN_STOPPING, CronScheduler
from elves.agent.cronplan import run_task_id
from elves.agent.outbox import Outbox, default_path
from elves.agent.runner import LOST, RunResult, TaskSpec
from elves.config import Settings
from elves.errors import BadRequest
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentCronRan, AgentCronSet, CronFireSkipped, CronFiresMissed, Event

T0 = 1_800_000_000_000  # a whole minute
AGENT = "ag"


class Harness:
    """One life of an agent's cron: open on a state dir, step it, read what it put out."""

    def __init__(self, state: Path, now: int) -> None:
        self.settings = Settings(state_dir=state, agent_cron_file=str(state / "cron.json"))
        self.now = now
        self.outbox = Outbox(self.settings, default_path(self.settings, AGENT))
        self.pending: list[Callable[[], None]] = []  # runs submitted, not played yet
        self.ran: list[str] = []  # task ids, in the order they ran
        self.cron = CronScheduler(
            self.settings,
            AGENT,
            self.outbox,
            self.execute,
            self.pending.append,
            clock=lambda: self.now,
            file_poll_s=0,
        )

    def execute(
        self, spec: TaskSpec, task_id: str, give_up: threading.Event, started: Callable[[int], None]
    ) -> RunResult | None:
        if give_up.is_set():
            return None
        started(4242)
        self.ran.append(task_id)
        return RunResult(1, f"{spec.app}.{spec.func}", 3)

    def step(self, at: int | None = None, play: bool = True) -> None:
        if at is not None:
            self.now = at
        self.cron.step()
        while play and self.pending:
            self.pending.pop(0)()

    def events(self) -> list[tuple[str, Event]]:
        rows = self.outbox.query("SELECT topic, value FROM outbox ORDER BY seq")
        return [(str(topic).removeprefix("elves."), CODEC.decode(value)) for topic, value in rows]

    def reports(self) -> list[AgentCronRan]:
        return [e for _, e in self.events() if isinstance(e, AgentCronRan)]

    def close(self) -> None:
        self.outbox.close(timeout=0)


@pytest.fixture
def life(tmp_path: Path) -> Iterator[Callable[[int], Harness]]:
    lives: list[Harness] = []

    def start(now: int) -> Harness:
        if lives:
            lives[-1].close()
        lives.append(Harness(tmp_path, now))
        return lives[-1]

    yield start
    lives[-1].close()


def write(state: Path, *entries: dict[str, object]) -> None:
    tmp = state / "cron.json.tmp"
    tmp.write_text(json.dumps(list(entries)))
    os.replace(tmp, state / "cron.json")  # as editors do: never half a file


def entry(name: str = "c", rule: str = "*/10 * * * * *", **more: object) -> dict[str, object]:
    return {"name": name, "app": "apptest", "func": "helloword", "rule": rule, **more}


def task(name: str, at: int) -> str:
    return run_task_id(AGENT, f"{AGENT}/{name}", at)


def test_a_config_cron_fires_at_each_time_once(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry())
    h = life(T0)
    h.step()
    assert h.ran == []
    h.step(T0 + 9_999)
    assert h.ran == []
    h.step(T0 + 10_001)
    h.step()  # the same moment again: nothing new
    h.step(T0 + 20_000)
    assert h.ran == [task("c", T0 + 10_000), task("c", T0 + 20_000)]
    [first, second] = h.reports()
    assert (first.task_id, first.scheduled_at, first.cron_id) == (h.ran[0], T0 + 10_000, "ag/c")
    assert (first.source, first.worker_flag, first.worker_message) == (
        "config",
        1,
        "apptest.helloword",
    )
    assert first.started_at == T0 + 10_001 and second.occurred_at == T0 + 20_000
    assert [topic for topic, _ in h.events()] == ["results", "results"]


@pytest.mark.parametrize(
    ("policy", "runs", "missed"),
    [
        ("run_once", [60], (10, 50, 5)),
        ("skip", [], (10, 60, 6)),
        ("run_all", [10, 20, 30, 40, 50, 60], None),
    ],
)
def test_after_a_restart_the_times_missed_follow_the_misfire_policy(
    tmp_path: Path,
    life: Callable[[int], Harness],
    policy: str,
    runs: list[int],
    missed: tuple[int, int, int] | None,
) -> None:
    # parallel: catch-up runs follow the overlap policy too, and would skip each other.
    write(tmp_path, entry(misfire=policy, overlap="parallel"))
    life(T0).step()  # in force from T0; then the agent is down for 65 s
    h = life(T0 + 65_000)
    h.step()
    assert h.ran == [task("c", T0 + s * 1000) for s in runs]
    assert all(r.worker_flag == 1 for r in h.reports())
    misses = [(t, e) for t, e in h.events() if isinstance(e, CronFiresMissed)]
    if missed is None:
        assert misses == []
    else:
        [(topic, event)] = misses
        assert topic == "crons"
        first, last, count = missed
        assert (event.cron_id, event.policy) == ("ag/c", policy)
        assert (event.first_at, event.last_at, event.count) == (
            T0 + first * 1000,
            T0 + last * 1000,
            count,
        )
    # One more restart at the same moment: every time was handled once, nothing runs again.
    told = len(h.events())
    again = life(T0 + 65_000)
    again.step()
    assert again.ran == []
    assert len(again.events()) == told


def test_a_run_the_agent_never_finished_is_reported_after_a_restart(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry())
    h = life(T0)
    h.step()
    h.step(T0 + 10_000, play=False)  # claimed and handed to a worker; then the agent dies
    assert h.reports() == [] and len(h.pending) == 1
    again = life(T0 + 12_000)
    again.step()
    [report] = again.reports()
    assert report.task_id == task("c", T0 + 10_000)
    assert (report.worker_flag, report.worker_message) == (-1, LOST)
    assert again.ran == []  # never run twice


def test_overlap_skip_reports_the_fire_it_did_not_run(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry())
    h = life(T0)
    h.step()
    h.step(T0 + 10_000, play=False)
    h.step(T0 + 20_000, play=False)  # the first still runs
    [(topic, skipped)] = [(t, e) for t, e in h.events() if isinstance(e, CronFireSkipped)]
    assert topic == "crons"
    assert skipped.scheduled_at == T0 + 20_000
    assert skipped.running_task_id == task("c", T0 + 10_000)
    h.step()
    h.step(T0 + 30_000)
    assert h.ran == [task("c", T0 + 10_000), task("c", T0 + 30_000)]


def test_overlap_queue_runs_the_held_fire_when_the_previous_ends(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry(overlap="queue"))
    h = life(T0)
    h.step()
    h.step(T0 + 10_000, play=False)
    h.step(T0 + 20_000, play=False)
    assert len(h.pending) == 1  # the second is held, not handed to a worker
    h.step()
    assert h.ran == [task("c", T0 + 10_000), task("c", T0 + 20_000)]
    assert [r.scheduled_at for r in h.reports()] == [T0 + 10_000, T0 + 20_000]


def test_a_fire_held_when_the_agent_stops_is_reported_not_run(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry(overlap="queue"))
    h = life(T0)
    h.step()
    h.step(T0 + 10_000, play=False)
    h.step(T0 + 20_000, play=False)
    h.cron.stop()
    [held] = h.reports()
    assert (held.scheduled_at, held.worker_message) == (T0 + 20_000, NOT_RUN_STOPPING)
    h.pending.pop()()  # the run that went on ends, but nothing starts after the stop
    assert [r.scheduled_at for r in h.reports()] == [T0 + 20_000, T0 + 10_000]


def test_file_changes_take_effect_and_a_bad_file_keeps_the_crons(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry("a"))
    h = life(T0)
    h.step()
    assert set(h.cron.active()) == {"ag/a"}
    write(tmp_path, entry("a"), entry("b", "*/5 * * * * *"), entry("bad", "nope"))
    h.step(T0 + 1_000)
    assert set(h.cron.active()) == {"ag/a", "ag/b"}
    (tmp_path / "cron.json").write_text("[{")  # half written
    h.step(T0 + 2_000)
    assert set(h.cron.active()) == {"ag/a", "ag/b"}
    h.step(T0 + 5_000)
    write(tmp_path, entry("b", "*/5 * * * * *"))
    h.step(T0 + 10_000)
    assert set(h.cron.active()) == {"ag/b"}
    assert h.ran == [task("b", T0 + 5_000), task("b", T0 + 10_000)]
    os.remove(tmp_path / "cron.json")
    h.step(T0 + 11_000)
    assert h.cron.active() == {}


def test_a_cron_back_after_a_pause_or_with_a_new_rule_starts_from_then(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry())
    h = life(T0)
    h.step()
    write(tmp_path)  # removed for a minute: its times then are not misfires
    h.step(T0 + 1_000)
    write(tmp_path, entry())
    h.step(T0 + 61_000)
    write(tmp_path, entry(rule="*/3 * * * * *"))  # a new rule: from now, no misfires either
    h.step(T0 + 62_000)
    h.step(T0 + 63_000)
    assert h.ran == [task("c", T0 + 63_000)]
    assert not [e for _, e in h.events() if isinstance(e, CronFiresMissed)]


def pushed(at: int, status: str = "active", **changes: object) -> AgentCronSet:
    fields: dict[str, object] = {
        "event_id": f"set-{at}-{status}",
        "occurred_at": at,
        "cron_id": "center-1",
        "agent_id": AGENT,
        "app": "sleeper",
        "func": "sleep",
        "params": "{}",
        "timeout_s": 5,
        "rule": "*/10 * * * * *",
        "timezone": "UTC",
        "mode": "AAP",
        "status": status,
    }
    fields.update(changes)
    return AgentCronSet(**fields)  # type: ignore[arg-type]


def test_center_crons_run_until_paused_and_survive_a_restart(
    life: Callable[[int], Harness],
) -> None:
    h = life(T0)
    h.step()
    assert h.cron.push(pushed(T0))
    h.step()
    h.step(T0 + 10_000)
    [report] = h.reports()
    assert (report.cron_id, report.source, report.mode, report.app) == (
        "center-1",
        "center",
        "AAP",
        "sleeper",
    )
    again = life(T0 + 15_000)  # kept in SQLite: runs after a restart, Kafka or not
    again.step()
    again.step(T0 + 20_000)
    assert again.ran == [run_task_id(AGENT, "center-1", T0 + 20_000)]
    assert not again.cron.push(pushed(T0 - 1, "paused"))  # older than the one kept: ignored
    assert again.cron.push(pushed(T0 + 21_000, "paused"))
    again.step(T0 + 30_000)
    assert again.cron.active() == {}
    assert again.cron.push(pushed(T0 + 45_000))  # resumed: the paused times are not misfires
    again.step(T0 + 45_000)
    again.step(T0 + 50_000)
    assert again.ran[1:] == [run_task_id(AGENT, "center-1", T0 + 50_000)]
    assert again.cron.push(pushed(T0 + 51_000, "deleted"))
    again.step(T0 + 60_000)
    assert again.cron.active() == {} and len(again.ran) == 2
    assert not [e for _, e in again.events() if isinstance(e, CronFiresMissed)]


def test_a_center_cron_that_cannot_run_is_refused(life: Callable[[int], Harness]) -> None:
    h = life(T0)
    with pytest.raises(BadRequest) as bad:
        h.cron.push(pushed(T0, rule="every day"))
    assert bad.value.code == "403.6"
    with pytest.raises(BadRequest):
        h.cron.push(pushed(T0, status="gone"))


def test_a_removed_cron_reports_its_held_fires_not_run(
    tmp_path: Path, life: Callable[[int], Harness]
) -> None:
    write(tmp_path, entry(overlap="queue"))
    h = life(T0)
    h.step()
    h.step(T0 + 10_000, play=False)
    h.step(T0 + 20_000, play=False)
    write(tmp_path)
    h.step(T0 + 21_000, play=False)
    [held] = h.reports()
    assert (held.scheduled_at, held.worker_message) == (T0 + 20_000, NOT_RUN_REMOVED)


def test_the_thread_sleeps_until_the_next_time_and_stops_at_once(tmp_path: Path) -> None:
    write(tmp_path, entry(rule="0 0 0 1 1 *"))  # once a year: the thread only sleeps
    settings = Settings(state_dir=tmp_path, agent_cron_file=str(tmp_path / "cron.json"))
    outbox = Outbox(settings, default_path(settings, AGENT))
    runs: list[Callable[[], None]] = []
    cron = CronScheduler(settings, AGENT, outbox, lambda *_: None, runs.append)
    try:
        cron.start()
        assert cron.ready.wait(5)
        assert set(cron.active()) == {"ag/c"}
        started = time.monotonic()
        cron.stop()
        assert time.monotonic() - started < 0.5
        assert runs == []
    finally:
        outbox.close(timeout=0)
