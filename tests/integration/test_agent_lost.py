"""`kill -9` of an agent while a task runs on it: what is left of the task is killed, and the
task ends failed as lost when the agent starts again, not timed out at its deadline.

Two ways a task outlives its agent: the agent daemon alone is killed (its fork server then kills
the task's process group), or the fork server goes too (the agent's next start kills the group,
found by the pid it kept from the moment the task started). The same holds for a run of the
agent's own cron.

An agent back from a crash takes its dispatch topic over at once, as a static member of its
group; so a second process started with a running agent's id takes it over too, and the first
stops with a clear error rather than idling on as an agent that gets nothing."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

from elves.agent.procs import identity
from elves.agent.runner import LOST
from elves.local import Process, Stack, wait_for

from .test_agent_cron import CronAgent, entry, write_crons
from .test_queues import by_task, final, quick

SLEEP = {"seconds": 60}
TIMEOUT_S = 300  # far past the test: an end before it is the agent's report, not the deadline


def _alive(pid: int) -> bool:
    return identity(pid) is not None  # a zombie counts as gone: it ended, unreaped


def _fork_server(agent: Process) -> int:
    children = Path(f"/proc/{agent.popen.pid}/task/{agent.popen.pid}/children").read_text()
    for pid in children.split():
        if b"elves.agent.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return int(pid)
    raise AssertionError(f"agent {agent.popen.pid} has no fork server")


def _running_task(
    stack: Stack, agent_id: str, pidfile: Path, *, reported: bool = True
) -> tuple[str, str, int]:
    """A 60 s sleeper on the agent, in a queue of its own: (queue, task, the sleep's pid), once
    the sleep runs, and with `reported` once the agent has reported its start (half a second
    in; without, the test can kill the agent before it has)."""
    made = quick(
        stack,
        agent_id,
        "sleeper",
        "sleep",
        params={**SLEEP, "pidfile": str(pidfile)},
        timeout=TIMEOUT_S,
    )
    queue_id, task_id = made["queue_id"], made["task_id"]

    def running() -> bool:
        reply = stack.client.get(f"/api/v1/tasks/{task_id}")
        state = reply.json().get("state") if reply.status_code == 200 else None
        return bool(state and state["status"] == "running")

    sleep = _pid_in(pidfile)
    if reported:
        wait_for(f"task {task_id} to be reported running", running, 30)
    return queue_id, task_id, sleep


def _pid_in(pidfile: Path) -> int:
    """The pid the sleeper app writes (whole, by a rename) once its sleep runs."""
    return int(
        wait_for(f"a pid in {pidfile}", lambda: pidfile.exists() and pidfile.read_text(), 30)
    )


def _killed(stack: Stack, agent: Process, *others: int) -> None:
    for pid in others:
        os.kill(pid, signal.SIGKILL)
    agent.stop(signal.SIGKILL)
    stack.processes.remove(agent)


def _lost(stack: Stack, queue_id: str, task_id: str) -> dict[str, Any]:
    queue = final(stack, queue_id, timeout=60)
    assert queue["status"] == "failed", queue
    task: dict[str, Any] = by_task(queue)[task_id]
    return task


def test_a_task_outlives_neither_its_agent_nor_its_agents_restart(
    stack: Stack, tmp_path: Path
) -> None:
    agent_id = f"it-lost-{uuid.uuid4().hex[:6]}"
    agent = stack.spawn_agent(agent_id)
    stack.wait_agent(agent_id, "up")

    # The daemon alone: its fork server kills the task at once.
    queue_id, task_id, sleep = _running_task(stack, agent_id, tmp_path / "first.pid")
    _killed(stack, agent)
    wait_for("the task's processes to be killed", lambda: not _alive(sleep), 10)
    agent = stack.spawn_agent(agent_id, accept=False)
    task = _lost(stack, queue_id, task_id)
    assert (task["status"], task["worker_message"]) == ("failed", LOST)

    # Its fork server too, within the task's first half second: the task is left running, and
    # the agent's next start kills it.
    stack.wait_agent(agent_id, "up")
    queue_id, task_id, sleep = _running_task(
        stack, agent_id, tmp_path / "second.pid", reported=False
    )
    _killed(stack, agent, _fork_server(agent))
    assert _alive(sleep)
    agent = stack.spawn_agent(agent_id, accept=False)
    task = _lost(stack, queue_id, task_id)
    assert (task["status"], task["worker_message"]) == (
        "failed",
        f"{LOST}; its processes were killed",
    )
    wait_for("the task's processes to be killed", lambda: not _alive(sleep), 10)
    agent.stop()
    stack.processes.remove(agent)


def test_a_run_of_the_agents_own_cron_is_killed_at_its_restart_too(
    stack: Stack, tmp_path: Path
) -> None:
    cron = CronAgent(stack, tmp_path)
    pidfile = tmp_path / "cron.pid"
    params = {**SLEEP, "pidfile": str(pidfile)}
    write_crons(
        cron.cron_file, entry("sleeps", app="sleeper", func="sleep", params=params, timeout=300)
    )
    try:
        cron.start()
        stack.wait_agent(cron.agent_id, "up")
        sleep = _pid_in(pidfile)
        assert cron.process is not None
        _killed(stack, cron.process, _fork_server(cron.process))
        cron.process = None
        assert _alive(sleep)
        write_crons(cron.cron_file)  # no run after the restart: the old one alone is tested
        cron.start(accept=False)
        wait_for("the run's processes to be killed", lambda: not _alive(sleep), 30)
    finally:
        cron.stop()


def test_an_agent_whose_id_another_process_takes_stops_with_a_clear_error(stack: Stack) -> None:
    agent_id = f"it-twin-{uuid.uuid4().hex[:6]}"
    first = stack.spawn_agent(agent_id)
    stack.wait_agent(agent_id, "up")
    second = stack.spawn_agent(agent_id, accept=False)
    try:
        assert first.popen.wait(timeout=60) == 1, first.tail()
        assert "is another agent running with this id?" in first.tail()
        stack.processes.remove(first)
        # The one that took the id over runs its tasks.
        reply = stack.exec(agent_id, "apptest", "helloword", {"my": "twin"})
        assert reply.json()["worker_message"] == "twin", reply.text
    finally:
        second.stop()
        stack.processes.remove(second)
