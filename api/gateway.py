"""What every handler shares: the clients the lifespan built, and audit rows back to events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from starlette.requests import Request

from elves.api.audit import AuditStore
from elves.api.listener import Listener
from elves.api.watcher import Watcher
from elves.config import Settings
from elves.schemas.events import EVENT_TYPES, Event


@dataclass
class Gateway:
    settings: Settings
    producer: Producer
    listener: Listener
    store: AuditStore
    watcher: Watcher


def gateway(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gateway
    return gw


def to_event(row: dict[str, Any]) -> Event | None:
    """An audit row (payload parsed) as its event; None for dead letters and the undecodable."""
    cls = EVENT_TYPES.get(str(row["type"]))
    if cls is None:
        return None
    return cls(**row["payload"])
