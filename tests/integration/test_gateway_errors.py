"""Every bad REST input gets a JSON error with a stable code; nothing reaches Kafka."""

from __future__ import annotations

import pytest

from elves.local import Stack

from .conftest import AGENT

CASES = [
    (b"not json", 400, "403.4"),
    (b"[1, 2]", 400, "403.4"),
    (b'{"app": "apptest", "func": "helloword"}', 400, "403.1"),
    (b'{"agent": 5, "app": "apptest", "func": "helloword"}', 400, "403.2"),
    (b'{"agent": "a", "app": "apptest", "func": "f", "params": [1]}', 400, "403.2"),
    (b'{"agent": "a", "app": "apptest", "func": "f", "params": "{bad"}', 400, "403.4"),
    (b'{"agent": "a", "app": "apptest", "func": "f", "timeout": "soon"}', 400, "403.2"),
    (b'{"agent": "a", "app": "apptest", "func": "f", "timeout": 0}', 400, "403.2"),
]


@pytest.mark.parametrize(("body", "status", "code"), CASES)
def test_bad_instant_requests(stack: Stack, body: bytes, status: int, code: str) -> None:
    reply = stack.client.post("/api/v1/tasks/instant", content=body)
    assert reply.status_code == status
    assert reply.json()["error"]["code"] == code


BATCH_CASES = [
    (b"{}", "403.1"),
    (b'{"tasks": []}', "403.1"),
    (b'{"tasks": {"task_id": "t"}}', "403.2"),
    (b'{"tasks": "t"}', "403.2"),
    (b'{"tasks": [5]}', "403.2"),
    (b'{"tasks": [{"agent": "a", "func": "f", "timeout": "soon"}]}', "403.2"),
    (
        b'{"tasks": [' + b'{"agent": "a", "func": "f"}, ' * 1000 + b'{"agent": "a", "func": "f"}]}',
        "403.2",
    ),
]


@pytest.mark.parametrize(
    ("body", "code"),
    BATCH_CASES,
    ids=["none", "empty", "object", "text", "number", "bad-task", "1001"],
)
def test_bad_batch_requests(stack: Stack, body: bytes, code: str) -> None:
    queue_id = stack.client.post("/api/v1/queues", json={"app": "apptest"}).json()["queue_id"]
    reply = stack.client.post(f"/api/v1/queues/{queue_id}/tasks/batch", content=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == code


def test_oversize_params(stack: Stack) -> None:
    big = "x" * (stack.settings.max_params_bytes + 1)
    reply = stack.client.post(
        "/api/v1/tasks/instant",
        json={"agent": AGENT, "app": "apptest", "func": "helloword", "params": {"big": big}},
    )
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "403.3"


def test_unknown_task_and_route(stack: Stack) -> None:
    assert stack.client.get("/api/v1/tasks/nope").json()["error"]["code"] == "404.1"
    assert stack.client.get("/api/v1/nowhere").json()["error"]["code"] == "404.0"
    assert stack.client.delete("/api/v1/agents").json()["error"]["code"] == "405.0"


def test_audit_is_read_only(stack: Stack) -> None:
    reply = stack.client.post("/api/v1/audit", json={"sql": "DROP TABLE events"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "403.5"


def test_openapi_is_served(stack: Stack) -> None:
    spec = stack.client.get("/openapi.json").json()
    assert "/api/v1/tasks/instant" in spec["paths"]


# Each route's JSON body, as the OpenAPI document describes it, with one field at a time given
# a value of the wrong kind or size: a reply with a code, never a 5xx. Names that exist nowhere
# (an agent, an app, a key) keep what a value that happens to be valid does from touching what
# other tests use; the queue and the cron are this test's own.
WRONG: list[object] = [None, -1, 2**63, "", [], {"a": 1}]
NOBODY = "fuzz-nobody"
VALID = {
    "agent": NOBODY,
    "app": "fuzz-app",
    "func": "f",
    "params": {},
    "timeout": 5,
    "rule": "0 0 29 2 *",
    "timezone": "UTC",
    "mode": "NP",
    "misfire": "skip",
    "overlap": "skip",
    "name": "fuzz",
    "depends_on": [],
    "run_if": "all_succeeded",
    "max_attempts": 1,
    "backoff_s": 1,
    "max_parallel": 1,
    "max_failures": 0,
    "max_failure_percent": 0,
    "max_parallel_percent": 0,
    "task_id": "fuzz-task",
    "proxy": "python3",
    "only": "all",
    "reason": "fuzz",
    "tags": {"role": "fuzz"},
    "version": "9.9.9",
    "agents": [],
    "selectors": [],
    "anywhere": False,
    "apps": [],
    "operations": ["read"],
    "tasks": [{"agent": NOBODY, "func": "f"}],
}
# Where a route takes a field otherwise: a cron's mode is one of the center's or an agent's.
VALID_AT = {"/api/v1/crons": {"mode": "CANP"}}


def _spec_bodies(stack: Stack) -> tuple[list[tuple[str, str, dict[str, object]]], str]:
    """(method, path, a body of the fields the route takes) for every route with a JSON body,
    and the cron made for them (a rule that fires on the 29th of February only)."""
    queue_id = stack.client.post("/api/v1/queues", json={"app": "fuzz-app"}).json()["queue_id"]
    cron = {"agent": AGENT, "app": "apptest", "func": "helloword", "rule": "0 0 29 2 *"}
    cron_id = stack.client.post("/api/v1/crons", json={**cron, "mode": "CANP"}).json()["cron_id"]
    ids = {"queue_id": queue_id, "cron_id": cron_id, "agent_id": NOBODY, "app": "fuzz-app"}
    ids |= {"version": "9.9.9", "key_id": "fuzz-key"}
    routes = []
    for path, operations in stack.client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            fields = content.get("application/json", {}).get("schema", {}).get("properties")
            if not fields:
                continue
            valid = VALID | VALID_AT.get(path, {})
            body = {name: valid[name] for name in fields if name != "selector"}
            routes.append((method.upper(), path.format(**ids), body))
    return routes, cron_id


def test_a_wrong_value_in_any_field_of_any_route_gets_a_code_not_a_500(stack: Stack) -> None:
    routes, cron_id = _spec_bodies(stack)
    assert len(routes) >= 10, routes  # the document lists the routes' bodies
    unanswered = []
    try:
        for method, path, body in routes:
            for field in body:
                for wrong in WRONG:
                    reply = stack.client.request(method, path, json={**body, field: wrong})
                    failed = reply.status_code >= 400
                    coded = not failed or "code" in (reply.json().get("error") or {})
                    if reply.status_code >= 500 or not coded:
                        unanswered.append((method, path, field, wrong, reply.status_code))
    finally:
        stack.client.delete(f"/api/v1/crons/{cron_id}")
    assert unanswered == []


def test_a_wrong_value_in_any_query_parameter_gets_a_code_not_a_500(stack: Stack) -> None:
    task_id = stack.exec(AGENT, "apptest", "helloword", {}).json()["task_id"]
    queue_id = stack.client.post("/api/v1/queues", json={"app": "fuzz-app"}).json()["queue_id"]
    ids = {"task_id": task_id, "queue_id": queue_id, "app": "fuzz-app", "version": "9.9.9"}
    wrong = ["", "-1", "x", "9" * 30, "0001-01-01T00:00:00+14:00", "1e3", "%00"]
    asked = 0
    failures = []
    for path, operations in stack.client.get("/openapi.json").json()["paths"].items():
        for method, operation in operations.items():
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
            if method != "get" or not names:
                continue  # the publish route's `activate` comes with a package: not here
            for name in names:
                for value in wrong:
                    reply = stack.client.get(path.format(**ids), params={name: value})
                    asked += 1
                    coded = reply.status_code < 400 or "code" in reply.json().get("error", {})
                    if reply.status_code >= 500 or not coded:
                        failures.append((path, name, value, reply.status_code, reply.text))
    assert asked >= 50  # the document declares the lists', the output's and the audit's
    assert failures == []
