"""The agent's identity: not its IP address (ELVES' choice), but an id made once and kept, and
an Ed25519 key pair an operator accepts (enrolment)."""

from __future__ import annotations

import os
import re
import secrets
import socket
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.config import Settings
from elves.signing import private_key

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


def key_path(settings: Settings, agent_id: str) -> Path:
    """One key pair per agent id, beside its outbox: agents may share a state dir."""
    return Path(settings.state_dir) / "agent" / agent_id / "agent.key"


def agent_key(settings: Settings, agent_id: str) -> Ed25519PrivateKey:
    """The agent's Ed25519 key, made on its first start (mode 0600) and kept: an operator
    accepts this key, and a new one makes the agent pending again."""
    return private_key(key_path(settings, agent_id))
