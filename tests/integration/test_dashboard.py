"""The dashboard on the real stack: it reads the gateway with the operator's key, shows the agent
and a task that just ran, the task's lifecycle, the gateway's 404 for an unknown id, and, with a
key that may not read the audit, that key's code in place of the audit's parts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from elves.client import write_key_file
from elves.local import Process, Stack, free_port, wait_for

from .conftest import AGENT


def start_dashboard(stack: Stack, **env: str) -> tuple[Process, str]:
    port = free_port()
    process = stack.spawn(f"dashboard-{port}", "dashboard", ELVES_DASHBOARD_PORT=str(port), **env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        stack.alive()
        try:
            return httpx.get(f"{url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for("the dashboard", up, 30)
    return process, url


def stop(stack: Stack, process: Process) -> None:
    process.stop()
    stack.processes.remove(process)


@pytest.fixture(scope="module")
def dashboard(stack: Stack) -> Iterator[str]:
    process, url = start_dashboard(stack)
    try:
        yield url
    finally:
        stop(stack, process)


def test_the_overview_shows_the_agent_and_a_task_that_just_ran(
    stack: Stack, dashboard: str
) -> None:
    reply = stack.exec(AGENT, "apptest", "helloword", {"my": "toryzen"})
    assert reply.status_code == 200, reply.text
    task_id = reply.json()["task_id"]

    # Its row: the link, then its status, read off the audit (the outcome, not the result
    # that shares its millisecond).
    row = f'<a href="/tasks/{task_id}">{task_id}</a></td><td><span class="good">succeeded</span>'

    def shows_it() -> str | None:
        page = httpx.get(f"{dashboard}/", timeout=10)
        assert page.status_code == 200, page.text
        return page.text if row in page.text else None

    overview = wait_for("the task on the overview", shows_it, 30)
    assert AGENT in overview
    task = httpx.get(f"{dashboard}/tasks/{task_id}", timeout=10)
    assert task.status_code == 200, task.text
    assert "TaskSucceeded" in task.text and "toryzen" in task.text


def test_a_task_page_shows_what_the_task_printed(stack: Stack, dashboard: str) -> None:
    printed = "step 1 <done>\n"
    data = stack.exec(AGENT, "crasher", "crash", {"stdout": printed}).json()
    assert data["status"] == "failed"
    shown = "<pre>step 1 &lt;done&gt;\n" + '<span class="error">crasher: going down\n</span></pre>'

    def page_with_output() -> str | None:
        page = httpx.get(f"{dashboard}/tasks/{data['task_id']}", timeout=10)
        return page.text if shown in page.text else None

    wait_for("the output on the task's page", page_with_output, 15)

    def ended_page() -> str | None:
        # The parts reach the audit before the task's end may (the watcher's batches): the page
        # reloads until the end is in too, and then no more.
        page = page_with_output()
        return page if page is not None and 'http-equiv="refresh"' not in page else None

    wait_for("the page to stop reloading once the task has ended", ended_page, 15)

    # A page after a cursor: after the first part, the second alone; a bad cursor is the
    # gateway's 400 with its code, on the page.
    path = f"/api/v1/tasks/{data['task_id']}/output"
    first = stack.client.get(path).json()["parts"][0]["offset"]
    later = httpx.get(f"{dashboard}/tasks/{data['task_id']}?after={first}", timeout=10).text
    assert '<pre><span class="error">crasher: going down\n</span></pre>' in later
    assert '<a href="?">from the start</a>' in later
    bad = httpx.get(f"{dashboard}/tasks/{data['task_id']}?after=soon", timeout=10).text
    assert "[403.2]" in bad


def test_an_unknown_task_is_the_gateways_404_with_its_code(dashboard: str) -> None:
    missing = httpx.get(f"{dashboard}/tasks/no-such-task", timeout=10)
    assert missing.status_code == 404
    assert "[404." in missing.text and "no-such-task" in missing.text


def test_a_cron_has_its_page_with_its_next_fires(stack: Stack, dashboard: str) -> None:
    body = {"agent": AGENT, "app": "apptest", "func": "helloword", "rule": "0 3 * * *"}
    added = stack.client.post("/api/v1/crons", json=body)
    assert added.status_code == 201, added.text
    cron_id = added.json()["cron_id"]
    try:
        overview = httpx.get(f"{dashboard}/", timeout=10).text
        assert f'href="/crons/{cron_id}"' in overview
        cron = httpx.get(f"{dashboard}/crons/{cron_id}", timeout=10)
        assert cron.status_code == 200, cron.text
        assert "0 3 * * *" in cron.text and "next fires" in cron.text
        assert cron.text.count(" 03:00:00") >= 3  # the next fires, 03:00 UTC each day
    finally:
        assert stack.client.delete(f"/api/v1/crons/{cron_id}").status_code == 200


def test_a_key_that_may_not_read_the_audit_shows_its_code_and_the_rest(
    stack: Stack, tmp_path: Path
) -> None:
    own = stack.exec(AGENT, "apptest", "helloword", {"my": "dash"}).json()["task_id"]
    other = stack.exec(AGENT, "crasher", "falsy").json()["task_id"]
    body = {"name": "dashboard", "apps": ["apptest"], "agents": ["*"], "operations": ["read"]}
    made = stack.client.post("/api/v1/keys", json=body)
    assert made.status_code == 201, made.text
    key_file = tmp_path / "apptest-read.key"
    write_key_file(key_file, made.json()["key_id"], made.json()["secret"])
    process, url = start_dashboard(stack, ELVES_KEY_FILE=str(key_file))
    try:

        def listed() -> str | None:
            page = httpx.get(f"{url}/", timeout=10)
            assert page.status_code == 200
            return page.text if own in page.text else None

        # Raw SQL is for a key for every app and agent; the task list shows its app's tasks.
        text = wait_for("the key's own task on the dashboard", listed, 15)
        assert text.count("[401.6]") == 2, text  # the last hour's outcomes and the refusals
        assert other not in text
        assert AGENT in text  # the agents it may read are still listed
    finally:
        stop(stack, process)
