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
