"""The agent's identity: not its IP address (ELVES' choice), but an id made once and kept."""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from elves.config import Settings

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # the id is part of a topic name


def id_path(settings: Settings) -> Path:
    return Path(settings.state_dir) / "agent" / "agent_id"


def new_agent_id(hostname: str | None = None) -> str:
    """`<hostname>-<6 hex>`: readable in listings, unique when hosts share a name."""
    host = _UNSAFE.sub("-", hostname or socket.gethostname()).strip("-")[:40] or "agent"
    return f"{host}-{secrets.token_hex(3)}"


def agent_id(settings: Settings) -> str:
    """settings.agent_id, or the id kept in the state dir (made on first start)."""
    if settings.agent_id:
        return str(settings.agent_id)
    path = id_path(settings)
    try:
        kept = path.read_text().strip()
    except FileNotFoundError:
        kept = ""
    if kept:
        return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    made = new_agent_id()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)  # never a half-written id
    return made
