"""Turning request bodies into commands: every bad input gets a stable code, before any event."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from elves.config import Settings
from elves.errors import BadJson, MissingField, ParamsTooLarge, WrongType

MAX_TIMEOUT_S = 24 * 3600


@dataclass(frozen=True)
class InstantRequest:
    agent: str
    app: str
    func: str
    params: str  # JSON text of an object
    timeout_s: int
    proxy: str | None


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


def parse_instant(body: dict[str, Any], settings: Settings) -> InstantRequest:
    agent, app, func = _text(body, "agent"), _text(body, "app"), _text(body, "func")
    params = body.get("params", {})
    if isinstance(params, str):  # ELVES sends `param` as JSON text; accept both forms
        try:
            params = json.loads(params)
        except ValueError as exc:
            raise BadJson("params is not valid JSON", field="params") from exc
    if not isinstance(params, dict):
        raise WrongType("params must be a JSON object", field="params")
    params_text = json.dumps(params, separators=(",", ":"))
    if len(params_text.encode()) > settings.max_params_bytes:
        raise ParamsTooLarge(
            f"params are larger than {settings.max_params_bytes} bytes", field="params"
        )
    timeout = body.get("timeout", settings.task_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int):
        raise WrongType("timeout must be a whole number of seconds", field="timeout")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise WrongType(f"timeout must be between 1 and {MAX_TIMEOUT_S} s", field="timeout")
    proxy = body.get("proxy")
    if proxy is not None and not isinstance(proxy, str):
        raise WrongType("proxy must be a string", field="proxy")
    return InstantRequest(agent, app, func, params_text, timeout, proxy or None)
