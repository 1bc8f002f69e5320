"""The OpenAPI description of the gateway, served at /openapi.json."""

from __future__ import annotations

from typing import Any, get_args

from elves.api.listing import LIST_DEFAULT, LIST_MOST
from elves.streams.queues.state import QueueStatus
from elves.streams.tasks.model import Status as TaskStatus

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


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


_SINCE = {"type": "string", "example": "2026-11-25T10:00:00"}
_TIME = "Unix milliseconds or an ISO time (UTC unless it says otherwise)"


def _listing(statuses: tuple[str, ...], *more: dict[str, Any]) -> list[dict[str, Any]]:
    """The query of a list (`api/listing.py`): what was made since, by status, how many."""
    return [
        _query("since", _SINCE, f"made at or after this time, {_TIME}; default a day ago"),
        _query("status", {"type": "string", "enum": list(statuses)}, "only this status"),
        _query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": LIST_MOST, "default": LIST_DEFAULT},
            "at most",
        ),
        _query("app", {"type": "string"}, "only this app (within the key's apps)"),
        *more,
    ]


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
                                        "the reply is {selector, results: [...], "
                                        "not_allowed: [agents the app may not run on]}",
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
                    **_errors(400, 403, 404, 409, 413, 504),
                },
            }
        },
        "/api/v1/tasks": {
            "get": {
                "summary": "Tasks made since `since` (default a day ago), newest first, of the "
                "apps and agents in scope, each with its status: "
                "`?since=&app=&agent=&status=&limit=`",
                "parameters": _listing(
                    get_args(TaskStatus),
                    _query("agent", {"type": "string"}, "only this agent (within the key's)"),
                ),
                "responses": {"200": _ok({"type": "object"}), **_errors(400)},
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
        "/api/v1/tasks/{task_id}/output": {
            "get": {
                "summary": "What a task printed (stdout and stderr, streamed by its agent while "
                "it ran; the result block left out), from the audit: the parts after `after` "
                "(an offset from a reply's `next`), or with `follow=true` an NDJSON stream of "
                "parts as they come, ending with a line of the task's end",
                "parameters": [
                    {
                        "name": "task_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {"name": "after", "in": "query", "schema": {"type": "integer"}},
                    {"name": "follow", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {"200": _ok({"type": "object"}), **_errors(400, 404)},
            }
        },
        "/api/v1/agents": {
            "get": {
                "summary": "Agents with liveness, enrolment, last heartbeat, tags and apps",
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


def _op(
    summary: str,
    *codes: int,
    body: dict[str, Any] | None = None,
    query: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One operation: its path parameters come from the path, added below."""
    op: dict[str, Any] = {"summary": summary, "responses": {"200": _ok({"type": "object"})}}
    op["responses"].update(_errors(*codes))
    if body is not None:
        schema = {"type": "object", "properties": body}
        op["requestBody"] = {"content": {"application/json": {"schema": schema}}}
    op["parameters"] = list(query or [])
    return op


_S, _I, _O, _L = {"type": "string"}, {"type": "integer"}, {"type": "object"}, {"type": "array"}
_TASK = {"agent": _S, "selector": _S, "func": _S, "params": _O, "timeout": _I, "mode": _S,
         "depends_on": _L, "run_if": _S, "max_attempts": _I, "backoff_s": _I, "task_id": _S,
         "proxy": _S}  # fmt: skip
_LIMITS = {"max_parallel": _I, "max_failures": _I, "max_failure_percent": _I,
           "max_parallel_percent": _I}  # fmt: skip
_CRON = {"agent": _S, "selector": _S, "app": _S, "func": _S, "params": _O, "rule": _S,
         "timezone": _S, "timeout": _I, "mode": _S, "misfire": _S, "overlap": _S,
         "name": _S}  # fmt: skip
_MORE: dict[str, dict[str, Any]] = {
    "/api/v1/agents/{agent_id}/accept": {
        "post": _op("Accept the agent's registered key (pending -> accepted)", 404)
    },
    "/api/v1/agents/{agent_id}/reject": {
        "post": _op("Reject an agent: nothing is dispatched to it", 404, body={"reason": _S})
    },
    "/api/v1/agents/{agent_id}/tags": {
        "put": _op("Set an agent's admin tags, laid over its own", 400, 404, body={"tags": _O})
    },
    "/api/v1/queues": {
        "post": _op(
            "Create a queue for an app (max_parallel: at most that many tasks at once; "
            "max_failures: that many failed tasks cancel the rest; max_failure_percent: more "
            "than that percent of its tasks failed cancels the rest; max_parallel_percent: at "
            "most that percent of its tasks at once)",
            400,
            body={**_LIMITS, "app": _S, "name": _S},
        ),
        "get": _op(
            "Queues created since `since` (default a day ago), newest first, of the apps in "
            "scope: `?since=&app=&status=&limit=`",
            400,
            query=_listing(get_args(QueueStatus)),
        ),
    },
    "/api/v1/queues/quick": {
        "post": _op(
            "Create a queue, add one task, commit (ELVES qksqueue)",
            400,
            403,
            body={**_TASK, **_LIMITS, "app": _S, "name": _S},
        )
    },
    "/api/v1/queues/{queue_id}": {
        "get": _op(
            "A queue and every task's status (as_of: the state at a past time)",
            400,
            404,
            query=[_query("as_of", _SINCE, f"the queue as it was then, {_TIME}")],
        )
    },
    "/api/v1/queues/{queue_id}/tasks": {
        "post": _op(
            "Add a task to an open queue (selector: one task per live matching agent, grouped)",
            400,
            403,
            404,
            409,
            body=_TASK,
        )
    },
    "/api/v1/queues/{queue_id}/tasks/batch": {
        "post": _op(
            "Add up to 1000 tasks in order; 201 all added, 207 each task's outcome otherwise",
            400,
            403,
            404,
            body={"tasks": {"type": "array", "items": {"type": "object", "properties": _TASK}}},
        )
    },
    "/api/v1/queues/{queue_id}/commit": {"post": _op("Commit a queue", 404, 409)},
    "/api/v1/queues/{queue_id}/stop": {"post": _op("Stop a queue; kills what runs", 404, 409)},
    "/api/v1/queues/{queue_id}/limits": {
        "post": _op(
            "Change the limits of a queue that has not ended, from now on (those given; 0: no "
            "limit): a higher parallel limit readies waiting tasks at once, a lower one kills "
            "none, a failure limit already reached stops the queue failed; the reply has all four",
            400,
            404,
            409,
            body=_LIMITS,
        )
    },
    "/api/v1/queues/{queue_id}/rerun": {
        "post": _op(
            "Run an ended queue again as a new one (only: all or unsuccessful); 201 committed, "
            "207 some tasks refused (the new queue stays open)",
            400,
            403,
            404,
            409,
            body={"only": _S, "name": _S},
        )
    },
    "/api/v1/crons": {
        "post": _op("Schedule a task by a cron rule", 400, 403, body=_CRON),
        "get": _op(
            "Every cron (deleted=1: deleted ones too)",
            query=[_query("deleted", {"type": "string", "enum": ["1", "true"]}, "deleted too")],
        ),
    },
    "/api/v1/crons/{cron_id}": {
        "get": _op("A cron: rule, next fires, last fire and result, counts", 404),
        "delete": _op("Delete a cron: no further fires", 404),
        "patch": _op(
            "Change a cron in place (rule, timezone, params, timeout, misfire, overlap, name): "
            "it keeps its id and history, runs by its new rule from now on (no misfires of "
            "it), and an agent cron's agent gets its new version; the reply is the cron",
            400,
            404,
            body={
                "rule": _S,
                "timezone": _S,
                "params": _O,
                "timeout": _I,
                "misfire": _S,
                "overlap": _S,
                "name": _S,
            },
        ),
    },
    "/api/v1/crons/{cron_id}/pause": {"post": _op("Pause a cron", 404)},
    "/api/v1/crons/{cron_id}/resume": {"post": _op("Resume a cron", 404)},
    "/api/v1/apps": {"get": _op("Every published app: its versions and the active one")},
    "/api/v1/apps/{app}": {"get": _op("One app: its versions and the active one", 404)},
    "/api/v1/apps/{app}/active": {
        "post": _op(
            "Activate a published version (an older one: a rollback)",
            400,
            404,
            body={"version": _S},
        )
    },
    "/api/v1/apps/{app}/versions/{version}": {
        "post": {
            **_op(
                "Publish a package (activate=false: store only)",
                400,
                409,
                413,
                query=[
                    _query(
                        "activate",
                        {"type": "boolean", "default": True},
                        "make it the active version at once (false, 0 or no: store only)",
                    )
                ],
            ),
            "requestBody": {
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}}
            },
        }
    },
    "/api/v1/apps/{app}/versions/{version}/package": {
        "get": {
            **_op("Download a package; its sha256 in the X-Elves-Sha256 header", 404),
            "responses": {
                "200": {"description": "the zip", "content": {"application/zip": {}}},
                **_errors(404),
            },
        }
    },
    "/api/v1/apps/{app}/permissions": {
        "get": _op("The agents an app may run on (its rule, or the default) and which now"),
        "put": _op(
            "Set the agents an app may run on: ids and/or tag selectors (both empty: nowhere), "
            "or anywhere; elsewhere its tasks, queue tasks and crons are refused 413.5",
            400,
            body={"agents": _L, "selectors": _L, "anywhere": {"type": "boolean"}},
        ),
    },
}
_KEY = {"name": _S, "apps": _L, "agents": _L, "operations": _L}
_MORE.update(
    {
        "/api/v1/keys": {
            "post": _op(
                "Create an API key (admin); its secret is in this reply only", 400, body=_KEY
            ),
            "get": _op("Every API key and its scopes, never a secret (admin)"),
        },
        "/api/v1/keys/{key_id}": {"delete": _op("Revoke an API key for good (admin)", 404)},
    }
)
for _path, _ops in _MORE.items():
    _names = [part[1:-1] for part in _path.split("/") if part.startswith("{")]
    for _operation in _ops.values():
        _operation["parameters"] = [
            *({"name": n, "in": "path", "required": True, "schema": _S} for n in _names),
            *_operation.get("parameters", []),
        ]
OPENAPI["paths"].update(_MORE)

# Every path but /health and /openapi.json is signed: HMAC-SHA256 of the key's secret over
# method, path and query, sha256 of the body, timestamp, nonce and key id (README: API keys).
_SIGNING = ("X-Elves-Key", "X-Elves-Timestamp", "X-Elves-Nonce", "X-Elves-Signature")
OPENAPI["components"]["securitySchemes"] = {
    h: {"type": "apiKey", "in": "header", "name": h} for h in _SIGNING
}
OPENAPI["security"] = [dict.fromkeys(_SIGNING, [])]
OPENAPI["paths"]["/health"]["get"]["security"] = []
# An accepted agent may sign its package downloads with its own Ed25519 key instead (scheme
# ELVES-AGENT-ED25519 over the same lines, `agent:<id>` for the key): no API key needed.
_AGENT_SIGNING = ("X-Elves-Agent", "X-Elves-Timestamp", "X-Elves-Nonce", "X-Elves-Agent-Signature")
OPENAPI["components"]["securitySchemes"].update(
    {h: {"type": "apiKey", "in": "header", "name": h} for h in _AGENT_SIGNING}
)
OPENAPI["paths"]["/api/v1/apps/{app}/versions/{version}/package"]["get"]["security"] = [
    dict.fromkeys(_SIGNING, []),
    dict.fromkeys(_AGENT_SIGNING, []),
]
