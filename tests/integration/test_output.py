"""What tasks print, streamed while they run: agent -> output topic -> audit -> REST and CLI."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from elves.client import client
from elves.local import Stack, wait_for
from elves.topics import ensure_topics

from .conftest import AGENT, stack_settings
from .test_agent_cron import CronAgent, entry, write_crons
from .test_cli import elves
from .test_queues import quick

TICKS = 8
EVERY_S = 0.5  # a tick task runs TICKS * EVERY_S, about 3.5 s


def tick_task(stack: Stack) -> str:
    """A queue task that prints a line every half second (and one on stderr half way)."""
    return quick(stack, AGENT, "sleeper", "tick", params={"n": TICKS, "every": EVERY_S})["task_id"]


def follow(stack: Stack, task_id: str) -> list[tuple[int, dict[str, Any]]]:
    """The follow stream's lines, each with the Unix ms it was read at; from the moment the
    task is in the audit (before that it is 404)."""
    path = f"/api/v1/tasks/{task_id}/output"
    wait_for("the task in the audit", lambda: stack.client.get(path).status_code == 200, 15)
    lines = []
    with stack.client.stream("GET", path, params={"follow": "true"}, timeout=60) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("application/x-ndjson")
        for line in reply.iter_lines():
            if line.strip():
                lines.append((int(time.time() * 1000), json.loads(line)))
    return lines


def ended_at(stack: Stack, task_id: str) -> int:
    """When the agent reported the task's end (Unix ms, its clock: this machine's)."""
    task = stack.client.get(f"/api/v1/tasks/{task_id}").json()
    [result] = [e for e in task["lifecycle"] if e["type"] == "TaskResultReported"]
    return int(result["payload"]["occurred_at"])


def test_a_running_task_s_output_is_read_as_it_prints_and_the_follow_ends_with_it(
    stack: Stack,
) -> None:
    task_id = tick_task(stack)
    lines = follow(stack, task_id)

    *parts, end = [record for _, record in lines]
    assert end == {"task_id": task_id, "status": "succeeded", "ended": True, "next": end["next"]}
    stdout = "".join(p["data"] for p in parts if p["stream"] == "stdout")
    assert stdout == "".join(f"tick {i}\n" for i in range(1, TICKS + 1))  # no result block
    assert [p["data"] for p in parts if p["stream"] == "stderr"] == ["half way\n"]
    assert [p["seq"] for p in parts] == list(range(len(parts)))
    assert {(p["attempt"], p["agent_id"]) for p in parts} == {(1, AGENT)}
    offsets = [p["offset"] for p in parts]
    assert offsets == sorted(offsets) and end["next"] == offsets[-1]
    # Streamed, not sent at the end: the first line was read before the task had ended, and
    # the lines came in several parts.
    first_read_at = lines[0][0]
    assert first_read_at < ended_at(stack, task_id)
    assert sum(p["stream"] == "stdout" for p in parts) >= 3

    # The output is not part of the task's lifecycle; its result says how many parts went,
    # which is how the follow knew it had them all.
    task = stack.client.get(f"/api/v1/tasks/{task_id}").json()
    assert "TaskOutput" not in {e["type"] for e in task["lifecycle"]}
    [result] = [e for e in task["lifecycle"] if e["type"] == "TaskResultReported"]
    assert result["payload"]["output_parts"] == len(parts)
    assert task["state"]["status"] == "succeeded"

    # Read again later: all of it, or what comes after a cursor.
    whole = stack.client.get(f"/api/v1/tasks/{task_id}/output").json()
    assert [p["data"] for p in whole["parts"]] == [p["data"] for p in parts]
    assert (whole["ended"], whole["status"], whole["more"]) == (True, "succeeded", False)
    rest = stack.client.get(f"/api/v1/tasks/{task_id}/output", params={"after": offsets[1]}).json()
    assert [p["seq"] for p in rest["parts"]] == [p["seq"] for p in parts[2:]]


def test_a_task_that_prints_only_its_result_has_no_output(stack: Stack) -> None:
    data = stack.exec(AGENT, "apptest", "helloword", {"my": "quiet"}).json()
    path = f"/api/v1/tasks/{data['task_id']}/output"
    reply = wait_for("the task in the audit", lambda: _ok(stack.client.get(path)), 15)
    assert reply.json()["parts"] == []
    assert reply.json()["next"] == -1  # the cursor to start from


def test_bad_asks_get_stable_codes(stack: Stack) -> None:
    missing = stack.client.get("/api/v1/tasks/no-such-task/output")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "404.1")
    data = stack.exec(AGENT, "apptest", "helloword", {"my": "x"}).json()
    path = f"/api/v1/tasks/{data['task_id']}/output"
    wait_for("the task in the audit", lambda: _ok(stack.client.get(path)), 15)
    for params in ({"after": "soon"}, {"follow": "maybe"}):
        bad = stack.client.get(path, params=params)
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "403.2"), params
        assert bad.json()["error"]["field"] in params


def test_the_cli_follows_a_task_s_output_to_its_end(stack: Stack) -> None:
    task_id = tick_task(stack)
    followed = elves(stack, "output", task_id, "--follow")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert followed.stdout == "".join(f"tick {i}\n" for i in range(1, TICKS + 1))
    assert followed.stderr == "half way\n"

    again = elves(stack, "output", task_id)
    assert (again.returncode, again.stdout, again.stderr) == (0, followed.stdout, "half way\n")

    failed = stack.exec(AGENT, "crasher", "crash", {"stdout": "before the crash\n"}).json()
    assert failed["status"] == "failed"
    crashed = elves(stack, "output", failed["task_id"], "--follow")
    assert crashed.returncode == 2  # as `elves exec` for a failed task
    assert crashed.stdout == "before the crash\n"
    assert crashed.stderr == "crasher: going down\n"


def test_exec_with_output_prints_what_the_task_printed_before_its_result(stack: Stack) -> None:
    ran = elves(stack, "exec", AGENT, "sleeper", "tick", "-p", "n=3", "-p", "every=0.1", "-o")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    printed, _, table = ran.stdout.partition("tick 3\n")
    assert printed == "tick 1\ntick 2\n"
    assert "ticked 3 times" in table  # the result follows the output
    assert ran.stderr == "half way\n"

    failed = elves(stack, "exec", AGENT, "crasher", "crash", "-p", "stdout=last words", "-o")
    assert failed.returncode == 2  # the result's exit code, as without -o
    assert failed.stdout.startswith("last words\n")  # the result on a line of its own
    assert "exit code 3" in failed.stdout
    assert failed.stderr == "crasher: going down\n"

    quiet = elves(stack, "exec", AGENT, "apptest", "helloword", "-p", "my=x", "--output")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert quiet.stdout.startswith("field")  # no output: the result alone
    assert quiet.stderr == ""

    both = elves(stack, "exec", AGENT, "noop", "noop", "--json", "--output")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_an_agent_cron_run_s_output_reaches_the_center(stack: Stack, tmp_path: Path) -> None:
    """An agent's own cron (AANP) runs its tasks through the same runner: their output is
    streamed as a dispatched task's is."""
    agent = CronAgent(stack, tmp_path)
    ticks = entry("ticks", app="sleeper", func="tick", params={"n": 2, "every": 0.1})
    write_crons(agent.cron_file, ticks)
    agent.start()
    try:
        task_id, _ = agent.wait_runs(agent.cron_id("ticks"), 1)[0]
    finally:
        agent.stop()
    path = f"/api/v1/tasks/{task_id}/output"

    def whole() -> list[dict[str, Any]] | None:
        reply = stack.client.get(path)
        parts: list[dict[str, Any]] = reply.json().get("parts", [])
        return parts if "".join(p["data"] for p in parts).count("tick") == 2 else None

    parts = wait_for("the cron run's output in the audit", whole, 15)
    assert "".join(p["data"] for p in parts if p["stream"] == "stdout") == "tick 1\ntick 2\n"
    assert {(p["attempt"], p["agent_id"]) for p in parts} == {(1, agent.agent_id)}
    # Its report counts them, and a follow of the run ends with all of them.
    task = stack.client.get(f"/api/v1/tasks/{task_id}").json()
    [ran] = [e for e in task["lifecycle"] if e["type"] == "AgentCronRan"]
    assert ran["payload"]["output_parts"] == len(parts)
    *followed, end = [record for _, record in follow(stack, task_id)]
    assert [p["data"] for p in followed] == [p["data"] for p in parts] and end["ended"]


def _ok(reply: Any) -> Any:
    return reply if reply.status_code == 200 else None


def test_a_gateway_with_an_open_follow_still_stops_promptly(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A follow lasts until its task ends; a gateway asked to stop closes it after a grace of 5 s
    rather than wait for the task (it waited until it was killed, 30 s here, before)."""
    settings = stack_settings(kafka_bootstrap, "gwstop", tmp_path)
    ensure_topics(settings)
    own = Stack(settings, client(settings, timeout=30))
    agent = "gwstop-agent-1"
    try:
        own.start([agent])
        reply = own.client.post(
            "/api/v1/queues/quick",
            json={"app": "sleeper", "agent": agent, "func": "tick", "params": {"n": 60}},
        )
        path = f"/api/v1/tasks/{reply.json()['task_id']}/output"
        wait_for("the task in the audit", lambda: own.client.get(path).status_code == 200, 15)
        read: list[str] = []

        def follow() -> None:
            with contextlib.suppress(httpx.HTTPError):  # the gateway closes it: expected
                with own.client.stream("GET", path, params={"follow": "true"}) as stream:
                    read.extend(stream.iter_lines())

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        wait_for("the follow to read a line", lambda: read, 15)
        gateway = next(p for p in own.processes if p.name == "gateway")
        asked = time.monotonic()
        gateway.stop(timeout=30)
        took = time.monotonic() - asked
        assert gateway.popen.returncode != -signal.SIGKILL and took < 15, took
    finally:
        own.close()
