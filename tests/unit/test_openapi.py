"""The OpenAPI description and the gateway's routes stay in step."""

from __future__ import annotations

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
