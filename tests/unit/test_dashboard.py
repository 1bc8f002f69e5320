"""The dashboard's pages, pure: what agents and apps report is escaped, a part that failed shows
its code and the rest still renders, and the gateway's errors keep their codes."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from elves.api.dashboard import Part, cron_page, fetch, overview_page, queue_page, task_page

HOSTILE = "<script>alert(1)</script>"


def audit(*rows: list[Any]) -> Part:
    return Part({"columns": [], "rows": list(rows)})


def parts(**changed: Part) -> dict[str, Part]:
    agent = {
        "agent_id": "web-1",
        "status": "up",
        "enrolment": "accepted",
        "hostname": HOSTILE,
        "last_seen_at": 1_700_000_000_000,
        "tags": {"role": "web"},
        "apps": {"apptest": "1"},
        "install_errors": {"demo": "2: checksum mismatch"},
    }
    cron = {
        "cron_id": "c1",
        "name": "nightly",
        "agent_id": "web-1",
        "selector": "",
        "app": "apptest",
        "func": "helloword",
        "rule": "0 3 * * *",
        "timezone": "Asia/Shanghai",
        "mode": "CANP",
        "status": "active",
        "next_at": 1_700_000_000_000,
        "last_status": "succeeded",
    }
    base = {
        "agents": Part({"agents": [agent]}),
        "last_hour": audit(["TaskFailed", 2], ["TaskSucceeded", 7]),
        "tasks": Part(
            {
                "tasks": [
                    {
                        "task_id": "t/1",
                        "app": "apptest",
                        "func": "slow",
                        "agent_id": "web-1",
                        "status": "timed_out",
                        "created_at": 1_700_000_000_000,
                    }
                ]
            }
        ),
        "queues": Part(
            {
                "queues": [
                    {
                        "queue_id": "q1",
                        "app": "apptest",
                        "name": HOSTILE,
                        "status": "running",
                        "tasks": 12,
                        "created_at": 1_700_000_000_000,
                        "finished_at": None,
                    }
                ]
            }
        ),
        "crons": Part({"crons": [cron]}),
        "refusals": audit(["2026-11-26 03:00:01", "web-1", "416.2", HOSTILE, ""]),
    }
    return {**base, **changed}


def test_the_overview_shows_every_part_and_escapes_what_agents_report() -> None:
    html = overview_page(parts())
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "7 succeeded, 2 failed, 0 timed out, 0 rejected" in html
    assert 'href="/tasks/t%2F1"' in html  # an id is one path segment, whatever it holds
    assert '<span class="bad">timed_out</span>' in html and "apptest.slow" in html
    assert 'href="/queues/q1"' in html and ">running<" in html and "<td>12</td>" in html
    assert "0 3 * * * (Asia/Shanghai)" in html and "apptest.helloword" in html
    assert 'href="/crons/c1"' in html
    assert '<span class="bad">demo: 2: checksum mismatch</span>' in html
    assert '<span class="bad">416.2</span>' in html
    assert 'http-equiv="refresh"' in html


def test_a_part_the_key_may_not_read_shows_its_code_and_the_rest_still_renders() -> None:
    refused = Part(error="[401.6] this key may not read the audit", status=403)
    html = overview_page(parts(tasks=refused, queues=refused, refusals=refused))
    assert html.count("[401.6] this key may not read the audit") == 3
    assert "web-1" in html and "nightly" in html


def test_a_task_page_shows_its_state_and_lifecycle() -> None:
    data = {
        "task_id": "t1",
        "state": {"status": "failed", "worker_message": HOSTILE},
        "lifecycle": [
            {"occurred_at": "2026-11-26 03:00:00", "type": "TaskSubmitted", "topic": "commands"},
            {"occurred_at": "2026-11-26 03:00:01", "type": "TaskFailed", "topic": "tasks"},
        ],
    }
    html = task_page("t1", Part(data))
    assert '<span class="bad">failed</span>' in html and HOSTILE not in html
    assert html.index("TaskSubmitted") < html.index("TaskFailed")
    missing = task_page("nope", Part(error="[404.1] no task nope", status=404))
    assert "[404.1] no task nope" in missing


def test_a_task_page_shows_its_output_and_reloads_until_the_task_ends() -> None:
    data = {"task_id": "t1", "state": {"status": "dispatched"}, "lifecycle": []}
    parts = [
        {"stream": "stdout", "data": "tick 1\n"},
        {"stream": "stderr", "data": HOSTILE},
        {"stream": "stdout", "data": "tick 2\n"},
    ]
    running = task_page("t1", Part(data), Part({"parts": parts, "more": False, "ended": False}))
    assert '<pre>tick 1\n<span class="error">' in running and HOSTILE not in running
    assert running.index("tick 1") < running.index("tick 2")
    assert 'http-equiv="refresh"' in running
    ended = task_page("t1", Part(data), Part({"parts": [], "more": False, "ended": True}))
    assert "nothing printed" in ended and 'http-equiv="refresh"' not in ended


def test_a_long_output_is_paged_with_the_gateway_s_cursor() -> None:
    data = {"task_id": "t1", "state": {"status": "succeeded"}, "lifecycle": []}
    part = {"stream": "stdout", "data": "line\n"}

    def shown(after: int, more: bool, parts: list[dict[str, str]]) -> str:
        output = {"parts": parts, "after": after, "next": 41, "more": more, "ended": True}
        return task_page("t1", Part(data), Part(output))

    first = shown(-1, True, [part])
    assert '<a href="?after=41">next parts</a>' in first and "from the start" not in first
    middle = shown(7, True, [part])
    assert '<a href="?">from the start</a>' in middle and "?after=41" in middle
    last = shown(7, False, [part])
    assert "from the start" in last and "next parts" not in last
    only = shown(-1, False, [part])
    assert "next parts" not in only and "from the start" not in only
    past = shown(41, False, [])
    assert "nothing more printed" in past and "nothing printed (its result" not in past


def test_a_queue_page_links_its_tasks_and_shows_causes() -> None:
    task = {
        "task_id": "b",
        "status": "skipped",
        "attempt": 0,
        "worker_flag": None,
        "worker_costtime": 0,
        "depends_on": ["a"],
        "cause": "a failed",
        "worker_message": "",
    }
    html = queue_page("q1", Part({"app": "apptest", "status": "failed", "tasks": [task]}))
    assert 'href="/tasks/b"' in html and "a failed" in html
    assert '<span class="bad">skipped</span>' in html


def test_a_queue_page_says_the_queue_s_limits() -> None:
    limited = {"app": "sleeper", "status": "running", "tasks": [], "max_parallel": 2}
    html = queue_page("q1", Part({**limited, "max_failure_percent": 10}))
    assert "at most 2 tasks at once, stops once over 10% of its tasks failed</p>" in html
    plain = queue_page("q1", Part({**limited, "max_parallel": 0}))
    assert "running</span></p>" in plain  # no limit: nothing after the status


def answer(status: int, body: Any) -> httpx.AsyncClient:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


def test_fetch_keeps_the_gateways_code_and_status() -> None:
    refused = {"error": {"code": "401.6", "message": "this key may not read the audit"}}
    part = asyncio.run(fetch(answer(403, refused), "GET", "/api/v1/audit"))
    assert (part.error, part.status) == ("[401.6] this key may not read the audit", 403)
    ok = asyncio.run(fetch(answer(200, {"agents": []}), "GET", "/api/v1/agents"))
    assert (ok.data, ok.error, ok.status) == ({"agents": []}, "", 200)


def test_a_gateway_that_does_not_answer_is_503_1() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://gateway")
    part = asyncio.run(fetch(down, "GET", "/api/v1/agents"))
    assert part.error.startswith("[503.1] the gateway did not answer") and part.status == 502


def test_a_cron_page_shows_its_counts_its_last_fire_and_result_and_its_next_fires() -> None:
    data = {
        "cron_id": "c/1",
        "app": "apptest",
        "func": "helloword",
        "agent_id": "",
        "selector": "role=web",
        "rule": "*/5 * * * * *",
        "timezone": "UTC",
        "mode": "CANP",
        "status": "paused",
        "misfire": "run_once",
        "overlap": "skip",
        "counts": {"fires": 3, "missed": 1, "skipped": 0, "succeeded": 2, "failed": 1},
        "last_fire": {"scheduled_at": 1_700_000_000_000, "task_id": "t9", "status": "ended"},
        "last_result": {
            "task_id": "t9",
            "status": "failed",
            "message": HOSTILE,
            "ended_at": 1_700_000_001_000,
        },
        "next_fires": [1_700_000_005_000, 1_700_000_010_000],
    }
    html = cron_page("c/1", Part(data))
    assert "on selector role=web" in html and "misfire run_once" in html
    assert "<td>3</td><td>1</td><td>0</td><td>2</td><td>1</td>" in html
    assert 'href="/tasks/t9"' in html and '<span class="bad">failed</span>' in html
    assert HOSTILE not in html
    assert "2023-11-14 22:13:25" in html and "2023-11-14 22:13:30" in html
    never = cron_page("c2", Part({**data, "last_fire": None, "last_result": None}))
    assert "last fire" in never and 'href="/tasks/' not in never  # no fire yet: no task
