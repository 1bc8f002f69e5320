"""The agent's own cron (AANP/AAP) on the real broker: every run reaches the center.

Each test starts an agent process of its own (its own state dir and cron file) on the session's
stack; the outage test has a broker and a stack of its own, since it stops the broker.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from elves.agent.cronplan import run_task_id
from elves.client import client
from elves.config import Settings
from elves.kafka import producer
from elves.local import Process, Stack, free_broker_port, kafka, wait_for
from elves.schemas.events import AgentCronSet
from elves.signing import sign_dispatch
from elves.topics import ensure_topics

from .conftest import stack_settings

Run = tuple[str, int]  # task id, scheduled at


def write_crons(path: Path, *entries: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(list(entries)))
    os.replace(tmp, path)


def entry(name: str, rule: str = "* * * * * *", **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "app": "apptest",
        "func": "helloword",
        "params": {"my": "toryzen"},
        "rule": rule,
        **more,
    }


class CronAgent:
    """An agent process with a state dir and a cron file of its own."""

    def __init__(self, stack: Stack, tmp_path: Path) -> None:
        self.stack = stack
        self.agent_id = f"cron-{uuid.uuid4().hex[:8]}"
        self.state = tmp_path / "agent-state"
        self.cron_file = tmp_path / "cron.json"
        self.process: Process | None = None

    def start(self, *, accept: bool = True, **env: str) -> None:
        self.process = self.stack.spawn_agent(
            self.agent_id,
            accept,
            ELVES_STATE_DIR=str(self.state),
            ELVES_AGENT_CRON_FILE=str(self.cron_file),
            **env,
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.stack.processes.remove(self.process)
            self.process = None

    def cron_id(self, name: str) -> str:
        return f"{self.agent_id}/{name}"

    def runs(self, cron_id: str) -> list[Run]:
        """The cron's AgentCronRan in the audit, oldest first; each checked against its id."""
        rows = self.stack.audit(
            "SELECT task_id, payload FROM events WHERE type = 'AgentCronRan'"
            f" AND agent_id = '{self.agent_id}'"
        )
        found = []
        for task_id, payload in rows:
            event = json.loads(payload)
            if event["cron_id"] == cron_id:
                assert task_id == run_task_id(self.agent_id, cron_id, event["scheduled_at"])
                found.append((str(task_id), int(event["scheduled_at"])))
        return sorted(found, key=lambda run: run[1])

    def wait_runs(self, cron_id: str, count: int, timeout: float = 20) -> list[Run]:
        def enough() -> list[Run] | None:
            self.stack.alive()
            runs = self.runs(cron_id)
            return runs if len(runs) >= count else None

        found: list[Run] = wait_for(f"{count} runs of {cron_id}", enough, timeout)
        return found


@pytest.fixture
def agent(stack: Stack, tmp_path: Path) -> Iterator[CronAgent]:
    agent = CronAgent(stack, tmp_path)
    try:
        yield agent
    finally:
        agent.stop()


def task_status(client: httpx.Client, task_id: str) -> str | None:
    reply = client.get(f"/api/v1/tasks/{task_id}")
    if reply.status_code != 200:
        return None
    state = reply.json()["state"]
    return None if state is None else str(state["status"])


def wait_succeeded(stack: Stack, task_ids: list[str], timeout: float = 20) -> None:
    """The center folded each run into TaskSucceeded, and the task read shows it."""
    ids = ", ".join(f"'{t}'" for t in task_ids)

    def folded() -> bool:
        rows = stack.audit(
            "SELECT DISTINCT task_id FROM events"
            f" WHERE type = 'TaskSucceeded' AND task_id IN ({ids})"
        )
        return len(rows) == len(set(task_ids))

    wait_for("every run succeeded at the center", folded, timeout)
    wait_for(
        "every run succeeded in GET /api/v1/tasks",
        lambda: all(task_status(stack.client, t) == "succeeded" for t in task_ids),
        timeout,
    )


def test_a_config_cron_fires_every_second_and_each_run_reaches_the_center(
    agent: CronAgent,
) -> None:
    write_crons(agent.cron_file, entry("hello"))
    agent.start()
    runs = agent.wait_runs(agent.cron_id("hello"), 4)
    times = [at for _, at in runs]
    assert all(later - earlier == 1000 for earlier, later in zip(times, times[1:], strict=False))
    wait_succeeded(agent.stack, [t for t, _ in runs])
    detail = agent.stack.client.get(f"/api/v1/tasks/{runs[0][0]}").json()
    assert [e["type"] for e in detail["lifecycle"]] == ["AgentCronRan", "TaskSucceeded"]
    assert detail["state"]["worker_message"] == "toryzen"
    assert detail["state"]["cron_id"] == agent.cron_id("hello")


def test_a_config_cron_of_an_app_the_agent_may_not_run_ends_each_fire_failed_with_416_6(
    agent: CronAgent,
) -> None:
    """The agent's own file is not the center's to judge: the agent judges its app as it would
    a dispatch's (here by its own list), and each fire ends failed with the code, audited."""
    write_crons(agent.cron_file, entry("forbidden"))
    agent.start(ELVES_AGENT_APPS="some-other-app")
    runs = agent.wait_runs(agent.cron_id("forbidden"), 2)

    def failed(task_id: str) -> dict[str, Any] | None:
        reply = agent.stack.client.get(f"/api/v1/tasks/{task_id}")
        state = reply.json()["state"] if reply.status_code == 200 else None
        return state if state is not None and state["status"] == "failed" else None

    for task_id, _ in runs:
        state = wait_for(f"{task_id} failed at the center", lambda t=task_id: failed(t), 20)
        assert state["worker_message"].startswith("[416.6] app apptest"), state
        assert state["worker_flag"] == -1


def test_editing_the_cron_file_takes_effect_without_a_restart(agent: CronAgent) -> None:
    write_crons(agent.cron_file, entry("first"), entry("bad", rule="no rule"))
    agent.start()
    first, second = agent.cron_id("first"), agent.cron_id("second")
    agent.wait_runs(first, 1)
    write_crons(agent.cron_file, entry("first"), entry("second", params={"my": "second"}))
    added_at = int(time.time() * 1000)
    [(_, started)] = agent.wait_runs(second, 1)[:1]
    assert started <= added_at + 2500
    write_crons(agent.cron_file, entry("second"))
    removed_at = int(time.time() * 1000)
    agent.wait_runs(second, len(agent.runs(second)) + 3)  # a while of the other going on
    assert max(at for _, at in agent.runs(first)) <= removed_at + 2000
    log = agent.stack.settings.state_dir / "logs" / f"agent-{agent.agent_id}.log"
    assert "entry 1 (bad) skipped [403.6]" in log.read_text()


def push(settings: Settings, agent_id: str, cron_id: str, status: str) -> None:
    event = AgentCronSet(
        event_id=str(uuid.uuid4()),
        occurred_at=int(time.time() * 1000),
        cron_id=cron_id,
        agent_id=agent_id,
        app="apptest",
        func="helloword",
        params=json.dumps({"my": cron_id}),
        timeout_s=10,
        rule="* * * * * *",
        timezone="UTC",
        mode="AAP",
        status=status,
    )
    prod = producer(settings)
    signed = sign_dispatch(settings, event)  # as the center's cron flow signs it
    prod.produce(settings.dispatch_topic(agent_id), key=cron_id.encode(), value=signed)
    assert prod.flush(10) == 0


def test_a_pushed_cron_runs_until_the_center_pauses_or_deletes_it(agent: CronAgent) -> None:
    agent.start()
    stack = agent.stack
    stack.wait_agent(agent.agent_id)  # its dispatch topic exists
    pushed = f"center-{uuid.uuid4().hex[:6]}"
    marks = [f"mark-{uuid.uuid4().hex[:6]}" for _ in range(2)]

    def stopped_before(mark: str) -> None:
        """The dispatch topic is read in order: once `mark`, pushed after the change, has run
        for 2 s, every run of `pushed` is older than its first."""
        mark_runs = agent.wait_runs(mark, 3)
        assert max(at for _, at in agent.runs(pushed)) < mark_runs[0][1]

    push(stack.settings, agent.agent_id, pushed, "active")
    runs = agent.wait_runs(pushed, 2)
    wait_succeeded(stack, [t for t, _ in runs])
    push(stack.settings, agent.agent_id, pushed, "paused")
    push(stack.settings, agent.agent_id, marks[0], "active")
    stopped_before(marks[0])
    before = len(agent.runs(pushed))
    push(stack.settings, agent.agent_id, pushed, "active")  # resumed
    agent.wait_runs(pushed, before + 2)
    push(stack.settings, agent.agent_id, pushed, "deleted")
    push(stack.settings, agent.agent_id, marks[1], "active")
    stopped_before(marks[1])


def test_after_an_agent_restart_the_missed_times_follow_the_misfire_policy(
    agent: CronAgent,
) -> None:
    write_crons(agent.cron_file, entry("every2", rule="*/2 * * * * *", misfire="run_once"))
    agent.start()
    cron_id = agent.cron_id("every2")
    agent.wait_runs(cron_id, 1)
    agent.stop()
    down_at = int(time.time() * 1000)
    # Down long enough for 3 scheduled times to pass, however the seconds fall.
    wait_for("the agent down for 3 scheduled times", lambda: time.time() * 1000 > down_at + 6500)
    agent.start()

    def missed() -> dict[str, Any] | None:
        rows = agent.stack.audit(
            "SELECT payload FROM events WHERE type = 'CronFiresMissed'"
            f" AND topic = '{agent.stack.settings.topic('crons')}'"
        )
        found = [json.loads(p) for [p] in rows if json.loads(p)["cron_id"] == cron_id]
        return found[0] if found else None

    event = wait_for("the missed times in the audit", missed, 20)
    assert event["policy"] == "run_once" and event["count"] >= 1
    # run_once: the newest missed time runs as a catch-up, once; the older ones do not run.
    catch_up = event["last_at"] + 2000
    wait_for("the catch-up run", lambda: catch_up in {at for _, at in agent.runs(cron_id)})
    runs = agent.runs(cron_id)
    assert [at for _, at in runs].count(catch_up) == 1
    assert not set(range(event["first_at"], event["last_at"] + 1, 2000)) & {at for _, at in runs}
    wait_succeeded(agent.stack, [t for t, at in runs if at == catch_up])


# --- a broker of its own, stopped while the cron runs -----------------------------------------


@pytest.fixture
def own_stack(tmp_path: Path) -> Iterator[Stack]:
    port = free_broker_port()
    settings = stack_settings(f"127.0.0.1:{port}", "outage", tmp_path / "stack")
    kafka("start", settings)
    stack = Stack(settings, client(settings, timeout=30))
    try:
        ensure_topics(settings)
        stack.start([])
        yield stack
    finally:
        stack.close()
        kafka("stop", settings, check=False)


def test_runs_made_while_the_broker_is_down_reach_the_center_once_it_is_back(
    own_stack: Stack, tmp_path: Path
) -> None:
    agent = CronAgent(own_stack, tmp_path)
    write_crons(agent.cron_file, entry("offline"))
    agent.start()
    try:
        cron_id = agent.cron_id("offline")
        agent.wait_runs(cron_id, 1, timeout=30)
        kafka("stop", own_stack.settings)
        down_at = int(time.time() * 1000)
        db = agent.state / "agent" / agent.agent_id / "outbox.sqlite"

        def ran_offline() -> list[Run]:
            with sqlite3.connect(db) as conn:
                rows = conn.execute(
                    "SELECT task_id, scheduled_at FROM cron_runs"
                    " WHERE scheduled_at > ? AND ended_at IS NOT NULL",
                    (down_at,),
                ).fetchall()
            return [(str(t), int(at)) for t, at in rows] if len(rows) >= 4 else []

        offline = wait_for("4 runs while the broker is down", ran_offline, 20)
        kafka("start", own_stack.settings)
        wait_for(
            "every offline run in the audit",
            lambda: set(offline) <= set(agent.runs(cron_id)),
            60,
        )
        # The folds loop takes the runs once it has its partitions back: its group's session
        # times out (10 s), it rejoins and restores, and asks the offsets again with a backoff.
        # That took 11 s here on a quiet machine; a clean-clone CI run in a slow phase of the
        # machine once did not see the runs within the 30 s this wait had (its logs were gone
        # before anyone read them, so whether they came later is not known).
        wait_succeeded(own_stack, [t for t, _ in offline], timeout=90)
        ids = ", ".join(f"'{t}'" for t, _ in offline)
        rows = own_stack.audit(
            f"SELECT task_id, type, count() FROM events WHERE task_id IN ({ids})"
            " GROUP BY task_id, type"
        )
        counts = {(str(t), str(kind)): int(n) for t, kind, n in rows}
        assert counts == {
            (t, kind): 1 for t, _ in offline for kind in ("AgentCronRan", "TaskSucceeded")
        }
        # And every scheduled second had its run: none lost in the outage.
        times = [at for _, at in agent.runs(cron_id)]
        assert times == list(range(times[0], times[-1] + 1, 1000))
    finally:
        agent.stop()
