"""Every route of the gateway is either open on purpose or has a scope rule."""

from __future__ import annotations

from starlette.routing import Route

from elves.api.access import OPEN_PATHS, RULES, Target, guard
from elves.api.app import ROUTES


def _pairs() -> set[tuple[str, str]]:
    return {
        (method, route.path)
        for route in ROUTES
        if isinstance(route, Route)
        for method in (route.methods or {"GET"}) - {"HEAD"}
    }


def test_every_route_has_a_rule_or_is_open() -> None:
    missing = sorted(f"{m} {p}" for m, p in _pairs() if p not in OPEN_PATHS and (m, p) not in RULES)
    assert missing == [], "add a rule to api/access.py RULES (until then: admin keys only)"


def test_every_rule_names_a_route() -> None:
    assert sorted(f"{m} {p}" for m, p in set(RULES) - _pairs()) == []


def test_open_routes_stay_as_they_are_and_the_rest_are_wrapped() -> None:
    for before, after in zip(ROUTES, guard(ROUTES), strict=True):
        assert isinstance(before, Route) and isinstance(after, Route)
        assert after.path == before.path and after.methods == before.methods
        assert (after.endpoint is before.endpoint) is (before.path in OPEN_PATHS)
    assert OPEN_PATHS == {"/health", "/openapi.json"}


def test_a_batch_of_queue_tasks_is_scoped_by_every_task_it_holds() -> None:
    rule = RULES[("POST", "/api/v1/queues/{queue_id}/tasks/batch")]
    assert rule.operation == "queue" and rule.body is not None
    body = {"tasks": [{"agent": "a1"}, {"selector": "role=web"}, "not a task", {"agent": ""}]}
    assert rule.body(body) == [
        Target(agent="a1"),
        Target(matching="role=web"),
        Target(),
    ]
    assert rule.body({"tasks": "nope"}) == []
