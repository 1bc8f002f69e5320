"""What the CLI reads and prints: `key=value` params, readable tables, gateway calls."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

from elves.client import client
from elves.config import Settings


def when(ms: int | None) -> str:
    """Unix milliseconds as a readable UTC time; "" for none."""
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


# The rows the CLI and the dashboard both show, from the gateway's JSON.
AGENT_HEADERS = ["agent", "status", "enrolment", "host", "last heartbeat (UTC)", "tags", "apps"]
QUEUE_TASK_HEADERS = ["task", "status", "attempt", "flag", "time", "depends on", "result / cause"]


def agent_row(a: dict[str, Any]) -> list[Any]:
    """One agent of GET /api/v1/agents, as `AGENT_HEADERS`."""
    return [
        a["agent_id"],
        a["status"],
        a.get("enrolment", ""),
        a["hostname"],
        when(a["last_seen_at"]) or "-",
        ",".join(f"{k}={v}" for k, v in sorted(a.get("tags", {}).items())),
        ", ".join(f"{k}:{v}" for k, v in sorted(a["apps"].items())),
    ]


def queue_task_row(t: dict[str, Any]) -> list[Any]:
    """One task of GET /api/v1/queues/{id}, as `QUEUE_TASK_HEADERS`."""
    return [
        t["task_id"],
        t["status"],
        t["attempt"],
        "" if t["worker_flag"] is None else t["worker_flag"],
        f"{t['worker_costtime']} ms",
        ",".join(t["depends_on"]),
        t["cause"] or t["worker_message"],
    ]


def out(text: str) -> None:
    print(text)  # noqa: T201 - the CLI's output


def call(settings: Settings, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
    """A gateway call: its JSON, or None after printing the error and its code."""
    with client(settings, timeout=60) as signing:
        response = signing.request(method, path, **kwargs)
    data: dict[str, Any] = response.json()
    if response.status_code >= 400:
        say_error(data)
        return None
    return data


def say_error(data: dict[str, Any]) -> int:
    """Print a gateway's error reply with its code; the CLI's exit code for it (1)."""
    error = data.get("error", {})
    out(f"error [{error.get('code')}]: {error.get('message')}")
    return 1


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    def cell(value: Any) -> str:
        text = "" if value is None else str(value).replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    body = [[cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(out)


def params_of(pairs: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"-p takes key=value, not {pair!r}")
        try:
            params[key] = json.loads(value)  # numbers, booleans and JSON stay typed
        except ValueError:
            params[key] = value
    return params


def limits_said(data: dict[str, Any]) -> str:
    """A queue's limits as `elves queue show` and the dashboard say them after its status
    (", at most 2 tasks at once, ..."), or nothing."""
    said = []
    if limit := data.get("max_parallel"):
        said.append(f"at most {limit} task{'s' if limit > 1 else ''} at once")
    if percent := data.get("max_parallel_percent"):
        tasks = len(data["tasks"])
        share = f" ({data['parallel_limit']} of {tasks})" if tasks else ""
        said.append(f"at most {percent}% of its tasks at once{share}")
    if failures := data.get("max_failures"):
        said.append(f"stops after {failures} failed task{'s' if failures > 1 else ''}")
    if percent := data.get("max_failure_percent"):
        said.append(f"stops once over {percent}% of its tasks failed")
    return "".join(f", {s}" for s in said)
