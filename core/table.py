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


def out(text: str) -> None:
    print(text)  # noqa: T201 - the CLI's output


def call(settings: Settings, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
    """A gateway call: its JSON, or None after printing the error and its code."""
    with client(settings, timeout=60) as signing:
        response = signing.request(method, path, **kwargs)
    data: dict[str, Any] = response.json()
    if response.status_code >= 400:
        error = data.get("error", {})
        out(f"error [{error.get('code')}]: {error.get('message')}")
        return None
    return data


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
