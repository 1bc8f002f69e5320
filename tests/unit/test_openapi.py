"""The OpenAPI description and the gateway's routes stay in step."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from elves.api import listing, queues, tasks
from elves.api.app import ROUTES
from elves.api.openapi import OPENAPI


def test_every_route_and_method_is_described() -> None:
    missing = []
    for route in ROUTES:
        if route.path == "/openapi.json":
            continue
        described = OPENAPI["paths"].get(route.path, {})
        for method in route.methods or {"GET"}:
            if method != "HEAD" and method.lower() not in described:
                missing.append(f"{method} {route.path}")
    assert missing == []


def test_path_parameters_are_declared() -> None:
    for path, operations in OPENAPI["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, operation["summary"])


def _declared_queries() -> dict[str, dict[str, object]]:
    """Every query parameter the document declares, by name (the last one seen)."""
    return {
        p["name"]: p
        for operations in OPENAPI["paths"].values()
        for operation in operations.values()
        for p in operation.get("parameters", [])
        if p["in"] == "query"
    }


def test_every_query_parameter_a_route_reads_is_declared() -> None:
    # What the gateway's handlers read (the dashboard is an app of its own), found in the code:
    # a name added there and not here fails this test.
    api = Path(listing.__file__).resolve().parent
    read = set()
    for module in api.glob("*.py"):
        if module.name == "dashboard.py":
            continue
        text = module.read_text()
        read |= set(re.findall(r'query_params\.get\("(\w+)"', text))
        read |= set(re.findall(r'time_param\(request, "(\w+)"\)', text))
    read |= {"since", "limit", "status"}  # listing.page reads them through `query`
    assert {"sql", "after", "follow", "as_of", "app", "agent", "deleted"} <= read
    assert read <= set(_declared_queries())


def test_the_lists_declare_the_statuses_and_limits_they_take() -> None:
    def query(path: str, name: str) -> dict[str, Any]:
        [found] = [p for p in OPENAPI["paths"][path]["get"]["parameters"] if p["name"] == name]
        return found  # type: ignore[no-any-return]

    assert query("/api/v1/tasks", "status")["schema"]["enum"] == list(tasks.STATUSES)
    assert query("/api/v1/queues", "status")["schema"]["enum"] == list(queues.STATUSES)
    limit = query("/api/v1/queues", "limit")["schema"]
    assert (limit["maximum"], limit["default"]) == (listing.LIST_MOST, listing.LIST_DEFAULT)
