"""The README's tour, run: the CLI against the session's platform."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from elves.local import Stack, wait_for

from .conftest import AGENT


def elves(
    stack: Stack, *args: str, url: str | None = None, key_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it, against the stack's gateway with its key (or those given)."""
    env = {
        "ELVES_GATEWAY_URL": url or stack.settings.base_url,
        "ELVES_KEY_FILE": str(key_file or stack.settings.key_path),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        [sys.executable, "-m", "elves.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_the_readme_tour(stack: Stack) -> None:
    done = elves(stack, "exec", AGENT, "apptest", "helloword", "-p", "my=toryzen")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"worker_message\s+toryzen", done.stdout)
    task_id = re.search(r"task\s+(\S+)", done.stdout).group(1)  # type: ignore[union-attr]

    agents = elves(stack, "agents")
    assert agents.returncode == 0 and re.search(rf"{AGENT}\s+up", agents.stdout)

    facts = elves(stack, "exec", AGENT, "hostfacts", "facts")
    assert facts.returncode == 0 and "cpu" in facts.stdout

    killed = elves(stack, "exec", AGENT, "sleeper", "sleep", "-p", "seconds=5", "-t", "1")
    assert killed.returncode == 2 and re.search(r"status\s+timed_out", killed.stdout)

    audit = elves(stack, "audit", f"SELECT type FROM events WHERE task_id = '{task_id}'")
    assert audit.returncode == 0 and "TaskSubmitted" in audit.stdout

    task = elves(stack, "task", task_id)
    assert task.returncode == 0 and "TaskSubmitted" in task.stdout

    unknown = elves(stack, "exec", "nobody", "apptest", "helloword")
    assert unknown.returncode == 1 and "414.2" in unknown.stdout


def test_no_gateway_is_a_clear_error(stack: Stack) -> None:
    done = elves(stack, "agents", url="http://127.0.0.1:9")
    assert done.returncode == 1 and "503.1" in done.stdout


def test_no_key_file_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    done = elves(stack, "agents", key_file=tmp_path / "missing.key")
    assert done.returncode == 1 and "401.1" in done.stdout and "missing.key" in done.stdout


def test_queues_from_the_cli(stack: Stack) -> None:
    created = elves(stack, "queue", "create", "apptest")
    assert created.returncode == 0, created.stdout + created.stderr
    queue_id = created.stdout.strip()
    first = elves(stack, "queue", "add", queue_id, AGENT, "helloword", "-p", "my=one")
    task_a = first.stdout.strip()
    second = elves(
        stack, "queue", "add", queue_id, AGENT, "helloword", "-p", "my=two", "--depends-on", task_a
    )
    assert second.returncode == 0, second.stdout
    cycle = elves(
        stack, "queue", "add", queue_id, AGENT, "helloword", "--task-id", "x", "--depends-on", "x"
    )
    assert cycle.returncode == 1 and "412.5" in cycle.stdout
    assert elves(stack, "queue", "commit", queue_id).returncode == 0

    def shown() -> str | None:
        out = elves(stack, "queue", "show", queue_id).stdout
        return out if ": succeeded" in out.splitlines()[0] else None

    out = wait_for("the queue to succeed", shown, 60)
    assert "one" in out and "two" in out

    def in_list() -> str | None:
        out = elves(stack, "queue", "list", "--app", "apptest", "--status", "succeeded").stdout
        return out if queue_id in out else None

    [line] = [
        x for x in wait_for("the queue in the list", in_list, 15).splitlines() if queue_id in x
    ]
    assert line.split()[:4] == [queue_id, "apptest", "succeeded", "2"]  # its name is empty
    bad = elves(stack, "queue", "list", "--limit", "0")
    assert bad.returncode != 0 and "403.2" in bad.stdout + bad.stderr


def test_many_queue_tasks_from_a_file(stack: Stack, tmp_path: Path) -> None:
    queue_id = elves(stack, "queue", "create", "apptest").stdout.strip()
    a, b, loop = (f"{queue_id[:8]}-{n}" for n in ("a", "b", "loop"))
    tasks = [
        {"task_id": a, "agent": AGENT, "func": "helloword", "params": {"my": "one"}},
        {"task_id": b, "agent": AGENT, "func": "helloword", "depends_on": [a]},
        {"task_id": loop, "agent": AGENT, "func": "helloword", "depends_on": [loop]},
    ]
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    added = elves(stack, "queue", "add-many", queue_id, str(path))
    assert added.returncode == 1, added.stdout + added.stderr  # one was refused
    assert re.search(rf"{a}\s+added", added.stdout) and re.search(rf"{b}\s+added", added.stdout)
    assert re.search(rf"{loop}\s+rejected\s+\[412.5\]", added.stdout), added.stdout
    assert "2 added, 1 rejected" in added.stdout
    unreadable = elves(stack, "queue", "add-many", queue_id, str(tmp_path / "none.json"))
    assert unreadable.returncode == 1 and "cannot read tasks" in unreadable.stdout


def test_the_readme_cron_tour(stack: Stack) -> None:
    added = elves(
        stack, "cron", "add", AGENT, "apptest", "helloword", "*/1 * * * * *", "-p", "my=tick",
        "--timezone", "Asia/Shanghai",
    )  # fmt: skip
    assert added.returncode == 0, added.stdout + added.stderr
    cron_id = added.stdout.strip()

    def shown() -> str | None:
        show = elves(stack, "cron", "show", cron_id)
        return show.stdout if re.search(r"last result\s+succeeded: tick", show.stdout) else None

    text = wait_for("a fire's result in `cron show`", shown, 30)
    assert re.search(r"next fires \(UTC\)", text) and re.search(r"counts\s+fires=", text)
    listed = elves(stack, "cron", "list")
    assert listed.returncode == 0 and cron_id in listed.stdout
    for order, status in (("pause", "paused"), ("resume", "active"), ("delete", "deleted")):
        done = elves(stack, "cron", order, cron_id)
        assert done.returncode == 0 and done.stdout.strip() == f"{cron_id}: {status}", done.stdout
    bad = elves(stack, "cron", "add", AGENT, "apptest", "helloword", "61 * * * *")
    assert bad.returncode == 1 and "403.6" in bad.stdout
    gone = elves(stack, "cron", "pause", "nope")
    assert gone.returncode == 1 and "411.1" in gone.stdout


def test_queue_wait_follows_a_queue_to_its_end_and_says_how_it_ended(stack: Stack) -> None:
    quick = elves(
        stack, "queue", "quick", "apptest", AGENT, "helloword", "-p", "my=followed", "--wait"
    )
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert re.search(r"s  succeeded: 1 succeeded$", quick.stdout, re.MULTILINE)
    assert re.search(r"\(apptest\): succeeded", quick.stdout) and "followed" in quick.stdout

    q = elves(stack, "queue", "create", "crasher").stdout.strip()
    a = elves(stack, "queue", "add", q, AGENT, "falsy").stdout.strip()
    assert elves(stack, "queue", "add", q, AGENT, "noisy", "--depends-on", a).returncode == 0
    wait_for(
        "the open queue in the audit", lambda: elves(stack, "queue", "show", q).returncode == 0, 15
    )
    still = elves(stack, "queue", "wait", q, "--timeout", "1")
    assert still.returncode == 3, still.stdout + still.stderr
    assert f"queue {q} is still open after 1 s" in still.stdout

    failed = elves(stack, "queue", "commit", q, "--wait")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert re.search(rf"queue {q} \(crasher\): failed", failed.stdout)
    assert re.search(r"failed: 1 failed, 1 skipped$", failed.stdout, re.MULTILINE)

    unknown = elves(stack, "queue", "wait", "no-such-queue", "--timeout", "1")
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert "error [404.0]: no queue no-such-queue" in unknown.stdout
