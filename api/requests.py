"""Turning request bodies into commands: every bad input gets a stable code, before any event."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from elves.config import Settings
from elves.errors import BadJson, MissingField, ParamsTooLarge, WrongType
from elves.selectors import parse_selector
from elves.streams.cron.state import CHANGEABLE

MAX_TIMEOUT_S = 24 * 3600


@dataclass(frozen=True)
class InstantRequest:
    agent: str  # "" when a selector names the agents
    app: str
    func: str
    params: str  # JSON text of an object
    timeout_s: int
    proxy: str | None
    selector: str | None = None  # run on every live agent with these tags


def parse_json_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw or b"null")
    except ValueError as exc:
        raise BadJson(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadJson("the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    if name not in body or body[name] in (None, ""):
        raise MissingField(f"missing field: {name}", field=name)
    value = body[name]
    if not isinstance(value, str):
        raise WrongType(f"{name} must be a string", field=name)
    return value


def _target(body: dict[str, Any]) -> tuple[str, str | None]:
    """(agent, selector): exactly one is given; a selector is checked here (403.8)."""
    has_agent = body.get("agent") not in (None, "")
    has_selector = body.get("selector") not in (None, "")
    if has_agent and has_selector:
        raise WrongType("give either agent or selector, not both", field="selector")
    if not has_selector:
        if not has_agent:
            raise MissingField("missing field: agent (or selector)", field="agent")
        return _text(body, "agent"), None
    selector = _text(body, "selector")
    parse_selector(selector)
    return "", selector


def parse_instant(body: dict[str, Any], settings: Settings) -> InstantRequest:
    agent, selector = _target(body)
    app, func = _text(body, "app"), _text(body, "func")
    params_text = _params_text(body, settings)
    timeout = body.get("timeout", settings.task_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise WrongType("timeout must be a whole number of seconds", field="timeout")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise WrongType(f"timeout must be between 1 and {MAX_TIMEOUT_S} s", field="timeout")
    proxy = body.get("proxy")
    if proxy is not None and not isinstance(proxy, str):
        raise WrongType("proxy must be a string", field="proxy")
    return InstantRequest(agent, app, func, params_text, timeout, proxy or None, selector)


def _params_text(body: dict[str, Any], settings: Settings) -> str:
    """The params as compact JSON text of an object, within the size limit."""
    params = body.get("params", {})
    if isinstance(params, str):  # ELVES sends `param` as JSON text; accept both forms
        try:
            params = json.loads(params)
        except ValueError as exc:
            raise BadJson("params is not valid JSON", field="params") from exc
    if not isinstance(params, dict):
        raise WrongType("params must be a JSON object", field="params")
    text = json.dumps(params, separators=(",", ":"))
    if len(text.encode()) > settings.max_params_bytes:
        raise ParamsTooLarge(
            f"params are larger than {settings.max_params_bytes} bytes", field="params"
        )
    return text


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WrongType(f"{name} must be a whole number from {low} to {high}", field=name)
    return int(value)


@dataclass(frozen=True)
class QueueTaskRequest:
    task_id: str | None
    agent: str
    func: str
    params: str
    timeout_s: int
    mode: str
    depends_on: tuple[str, ...]
    run_if: str
    max_attempts: int
    backoff_s: int
    proxy: str | None
    selector: str | None = None  # one task per live agent with these tags (agent is "")


def parse_queue_task(body: dict[str, Any], settings: Settings) -> QueueTaskRequest:
    """Types only; the queue fold judges the rest (modes, dependencies, cycles) with its codes."""
    depends_on = body.get("depends_on", [])
    if isinstance(depends_on, str):
        depends_on = [depends_on]  # ELVES' depend_task_id: one parent
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise WrongType("depends_on must be a list of task ids", field="depends_on")
    task_id = body.get("task_id")
    if task_id is not None and (not isinstance(task_id, str) or not task_id):
        raise WrongType("task_id must be a non-empty string", field="task_id")
    proxy = body.get("proxy")
    if proxy is not None and not isinstance(proxy, str):
        raise WrongType("proxy must be a string", field="proxy")
    mode, run_if = body.get("mode", "NP"), body.get("run_if", "all_succeeded")
    if not isinstance(mode, str) or not isinstance(run_if, str):
        raise WrongType("mode and run_if are strings", field="mode")
    agent, selector = _target(body)
    return QueueTaskRequest(
        task_id=task_id,
        agent=agent,
        func=_text(body, "func"),
        params=_params_text(body, settings),
        timeout_s=_int(body, "timeout", settings.task_timeout_s, 1, MAX_TIMEOUT_S),
        mode=mode,
        depends_on=tuple(depends_on),
        run_if=run_if,
        max_attempts=_int(body, "max_attempts", 1, 1, 100),
        backoff_s=_int(body, "backoff_s", 0, 0, 24 * 3600),
        proxy=proxy or None,
        selector=selector,
    )


@dataclass(frozen=True)
class CronRequest:
    agent: str  # "" when a selector names the agents
    app: str
    func: str
    params: str
    timeout_s: int
    rule: str
    timezone: str
    mode: str
    misfire: str
    overlap: str
    name: str
    proxy: str | None
    selector: str | None = None


# An update's body names and the `UpdateCron` field each sets (the fold's `CHANGEABLE`, under
# the names an add's body uses); anything else is refused.
CRON_CHANGES = {"timeout" if field == "timeout_s" else field: field for field in CHANGEABLE}


def parse_cron_update(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The `UpdateCron` fields a body gives (types only, as `parse_cron`). What runs where
    (agent, selector, app, func, mode) cannot change: 403.2 names the field."""
    for name in body:
        if name not in CRON_CHANGES:
            raise WrongType(
                f"{name} cannot be changed: a cron's {', '.join(CRON_CHANGES)} can; for"
                " another target, app, func or mode, delete it and add a new one",
                field=name,
            )
    if not body:
        raise MissingField(f"give one or more of: {', '.join(CRON_CHANGES)}", field="rule")
    changes: dict[str, Any] = {}
    for name, field in CRON_CHANGES.items():
        if name not in body:
            continue
        if name == "params":
            changes[field] = _params_text(body, settings)
        elif name == "timeout":
            changes[field] = _int(body, "timeout", 0, 1, MAX_TIMEOUT_S)
        elif name == "name":  # may be emptied
            if not isinstance(body[name], str):
                raise WrongType("name must be a string", field=name)
            changes[field] = body[name]
        else:
            changes[field] = _text(body, name)
    return changes


def parse_cron(body: dict[str, Any], settings: Settings) -> CronRequest:
    """Types only; the cron fold judges the rule, the time zone and the policies, with codes."""
    optional = {"timezone": "UTC", "mode": "CANP", "misfire": "run_once", "overlap": "skip"}
    values = {}
    for name, default in {**optional, "name": "", "proxy": ""}.items():
        value = body.get(name, default)
        if not isinstance(value, str):
            raise WrongType(f"{name} must be a string", field=name)
        values[name] = value
    agent, selector = _target(body)
    return CronRequest(
        agent=agent,
        app=_text(body, "app"),
        func=_text(body, "func"),
        params=_params_text(body, settings),
        timeout_s=_int(body, "timeout", settings.task_timeout_s, 1, MAX_TIMEOUT_S),
        rule=_text(body, "rule"),
        timezone=values["timezone"],
        mode=values["mode"],
        misfire=values["misfire"],
        overlap=values["overlap"],
        name=values["name"],
        proxy=values["proxy"] or None,
        selector=selector,
    )
