"""The OpenAPI description of the gateway, served at /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "403.1"},
                "message": {"type": "string"},
                "task_id": {"type": "string"},
                "field": {"type": "string"},
            },
            "required": ["code", "message"],
        }
    },
}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {
            "description": "an error with a stable code",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for c in codes
    }


def _ok(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Elves gateway",
        "version": "1",
        "description": "Run apps on agents; every request becomes an event on Kafka.",
    },
    "paths": {
        "/health": {"get": {"summary": "Liveness of the gateway", "responses": {"200": _ok({})}}},
        "/api/v1/tasks/instant": {
            "post": {
                "summary": "Run an app function on one agent, or on every live agent a tag "
                "selector matches, and wait for the result(s) (CSNP)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["app", "func"],
                                "properties": {
                                    "agent": {"type": "string"},
                                    "selector": {
                                        "type": "string",
                                        "description": "instead of agent: role=web,dc!=bj; "
                                        "the reply is {selector, results: [...]}",
                                    },
                                    "app": {"type": "string"},
                                    "func": {"type": "string"},
                                    "params": {"type": "object"},
                                    "timeout": {"type": "integer", "minimum": 1, "default": 90},
                                    "proxy": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "task_id": {"type": "string"},
                                "status": {"type": "string", "enum": ["succeeded", "failed"]},
                                "worker_flag": {"type": "integer", "enum": [1, 0, -1]},
                                "worker_message": {"type": "string"},
                                "worker_costtime": {"type": "integer"},
                                "timings_ms": {"type": "object"},
                            },
                        },
                        "the task ran (worker_flag says how it went)",
                    ),
                    **_errors(400, 404, 409, 413, 504),
                },
            }
        },
        "/api/v1/tasks/{task_id}": {
            "get": {
                "summary": "A task's state and its whole lifecycle, from the audit",
                "parameters": [
                    {
                        "name": "task_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _ok({"type": "object"}), **_errors(404)},
            }
        },
        "/api/v1/agents": {
            "get": {
                "summary": "Agents with liveness, last heartbeat and apps",
                "responses": {"200": _ok({"type": "object"})},
            }
        },
        "/api/v1/agents/{agent_id}": {
            "get": {
                "summary": "One agent",
                "parameters": [
                    {
                        "name": "agent_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {"200": _ok({"type": "object"}), **_errors(404)},
            }
        },
        "/api/v1/audit": {
            "get": {
                "summary": "Read-only SQL over the events table (parameter sql)",
                "parameters": [
                    {"name": "sql", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {"200": _ok({"type": "object"}), **_errors(400)},
            },
            "post": {
                "summary": 'Read-only SQL over the events table (body {"sql": ...})',
                "responses": {"200": _ok({"type": "object"}), **_errors(400)},
            },
        },
    },
    "components": {"schemas": {"Error": _ERROR}},
}
