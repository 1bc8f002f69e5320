"""The agent's cron definitions: read from its cron file or from the center's `AgentCronSet`.

Pure: the file's text in, definitions and the problems found out; no clock, no I/O.

The file is a JSON list of objects (ELVES' `conf/cron.json`, in Elves' field names):

    [{"name": "disk", "app": "hostfacts", "func": "facts", "rule": "0 */5 * * * *"}]

`name`, `app`, `func` and `rule` are required; `params` (an object, default {}), `timezone`
("UTC"), `timeout` (seconds, 90), `mode` (AANP | AAP), `misfire` (run_once | run_all | skip),
`overlap` (skip | queue | parallel) and `proxy` are optional. An entry that breaks a rule is
skipped with its stable code and the others still run; a file that is not a JSON list is
refused whole (the caller keeps the crons it had). Unknown fields are refused too: a misspelt
`timout` must not silently run with the default.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from elves.errors import BadJson, BadRequest, MissingField, ParamsTooLarge, WrongType
from elves.schemas.events import AgentCronSet
from elves.streams.cron import rules

AGENT_MODES = ("AANP", "AAP")
DUPLICATE = "411.3"  # the center's code for a cron id in use
DEFAULT_TIMEOUT_S = 90.0  # ELVES' task timeout
DEFAULT_MAX_PARAMS = 64 * 1024

Source = Literal["config", "center"]
_FIELDS = frozenset(
    {"name", "app", "func", "params", "rule", "timezone", "timeout", "mode", "misfire"}
    | {"overlap", "proxy"}
)


@dataclass(frozen=True)
class CronDef:
    """One agent cron, whichever way it came."""

    cron_id: str
    source: Source
    app: str
    func: str
    params: str  # JSON text, as a dispatched task's
    rule: rules.Rule
    timeout_s: float
    mode: str = "AANP"
    misfire: str = "run_once"
    overlap: str = "skip"
    proxy: str | None = None

    @property
    def schedule(self) -> str:
        """What its scheduled times depend on: a change starts the schedule again from now."""
        return f"{self.rule.text}\n{self.rule.timezone}"


@dataclass(frozen=True)
class Problem:
    """An entry of the cron file that was skipped, and why."""

    index: int
    name: str
    code: str
    message: str


@dataclass(frozen=True)
class CronFile:
    crons: tuple[CronDef, ...]
    problems: tuple[Problem, ...]


def config_cron_id(agent_id: str, name: str) -> str:
    return f"{agent_id}/{name}"


def parse_cron_file(
    text: str,
    agent_id: str,
    *,
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    max_params_bytes: int = DEFAULT_MAX_PARAMS,
) -> CronFile:
    """The crons of a cron file; raises BadJson (403.4) or WrongType (403.2) for the whole file."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise BadJson(f"the cron file is not valid JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise WrongType(f"the cron file must be a JSON list of crons, not {_kind(raw)}")
    crons: list[CronDef] = []
    problems: list[Problem] = []
    names: set[str] = set()
    for index, entry in enumerate(raw):
        name = entry.get("name") if isinstance(entry, dict) else None
        label = name if isinstance(name, str) else ""
        try:
            cron = _entry(entry, agent_id, default_timeout_s, max_params_bytes)
        except BadRequest as exc:
            problems.append(Problem(index, label, exc.code, exc.message))
            continue
        if label in names:
            message = f"cron name {label!r} is used by an earlier entry; names must be unique"
            problems.append(Problem(index, label, DUPLICATE, message))
            continue
        names.add(label)
        crons.append(cron)
    return CronFile(tuple(crons), tuple(problems))


def _entry(entry: object, agent_id: str, default_timeout_s: float, max_params: int) -> CronDef:
    if not isinstance(entry, dict):
        raise WrongType(f"a cron is a JSON object, not {_kind(entry)}")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise WrongType(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_FIELDS))}"
        )
    name = _text(entry, "name")
    params = entry.get("params", {})
    if not isinstance(params, dict):
        raise WrongType(f"params must be a JSON object, not {_kind(params)}")
    params_text = json.dumps(params, separators=(",", ":"))
    if len(params_text.encode()) > max_params:
        raise ParamsTooLarge(f"params are {len(params_text.encode())} bytes; at most {max_params}")
    timeout = entry.get("timeout", default_timeout_s)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise WrongType(f"timeout must be a number of seconds, not {_kind(timeout)}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise WrongType(f"timeout must be more than 0 seconds, not {timeout}")
    proxy = entry.get("proxy")
    if proxy is not None and not isinstance(proxy, str):
        raise WrongType(f"proxy must be a string, not {_kind(proxy)}")
    return CronDef(
        cron_id=config_cron_id(agent_id, name),
        source="config",
        app=_text(entry, "app"),
        func=_text(entry, "func"),
        params=params_text,
        rule=rules.parse_rule(_text(entry, "rule"), _text(entry, "timezone", "UTC")),
        timeout_s=float(timeout),
        mode=_choice(entry, "mode", AGENT_MODES),
        misfire=_choice(entry, "misfire", rules.MISFIRE_POLICIES),
        overlap=_choice(entry, "overlap", rules.OVERLAP_POLICIES),
        proxy=proxy or None,
    )


def cron_from_set(event: AgentCronSet, default_timeout_s: float = DEFAULT_TIMEOUT_S) -> CronDef:
    """The definition a center-pushed cron stands for; raises like a file entry."""
    values: Mapping[str, object] = {
        "mode": event.mode,
        "misfire": event.misfire,
        "overlap": event.overlap,
    }
    return CronDef(
        cron_id=event.cron_id,
        source="center",
        app=event.app,
        func=event.func,
        params=event.params or "{}",
        rule=rules.parse_rule(event.rule, event.timezone or "UTC"),
        timeout_s=float(event.timeout_s) if event.timeout_s > 0 else default_timeout_s,
        mode=_choice(values, "mode", AGENT_MODES),
        misfire=_choice(values, "misfire", rules.MISFIRE_POLICIES),
        overlap=_choice(values, "overlap", rules.OVERLAP_POLICIES),
        proxy=event.proxy or None,
    )


def _text(entry: Mapping[str, object], key: str, default: str | None = None) -> str:
    value = entry.get(key, default)
    if value is None:
        raise MissingField(f"missing field: {key}", field=key)
    if not isinstance(value, str):
        raise WrongType(f"{key} must be a string, not {_kind(value)}", field=key)
    if not value.strip():
        raise MissingField(f"{key} is empty", field=key)
    return value


def _choice(entry: Mapping[str, object], key: str, allowed: tuple[str, ...]) -> str:
    value = entry.get(key, allowed[0])
    if value not in allowed:
        raise WrongType(f"unknown {key} {value!r}: one of {', '.join(allowed)}", field=key)
    return str(value)


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )
