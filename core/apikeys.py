"""API keys as a fold of the `keys` topic: created with scopes and a sealed secret, revoked for
good. Pure: the gateway folds it at start and applies its own writes at once; `elves up` folds
it to learn whether its admin key still stands.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from elves.schemas.events import ApiKeyCreated, ApiKeyRevoked, Event, new_id
from elves.scopes import Scopes


@dataclass(frozen=True)
class KeyState:
    key_id: str
    name: str
    scopes: Scopes
    sealed_secret: str  # AES-GCM under the center's master key; never the secret itself
    sealed_with: str  # which master key sealed it
    created_at: int
    created_by: str | None = None
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_json(self) -> dict[str, object]:
        """What a listing shows: everything but the sealed secret."""
        return {
            "key_id": self.key_id,
            "name": self.name,
            "apps": list(self.scopes.apps),
            "agents": list(self.scopes.agents),
            "operations": list(self.scopes.operations),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
            "status": "active" if self.active else "revoked",
        }


Keys = Mapping[str, KeyState]


def apply(keys: Keys, event: Event) -> Keys:
    """A key never changes once made (a second `ApiKeyCreated` for its id is a replay and is
    ignored), and a revocation is final."""
    if isinstance(event, ApiKeyCreated):
        if event.key_id in keys:
            return keys
        scopes = Scopes(event.apps, event.agents, event.operations)
        state = KeyState(
            event.key_id,
            event.name,
            scopes,
            event.sealed_secret,
            event.sealed_with,
            event.occurred_at,
            event.created_by,
        )
        return {**keys, event.key_id: state}
    if isinstance(event, ApiKeyRevoked):
        known = keys.get(event.key_id)
        if known is None or not known.active:
            return keys
        return {**keys, event.key_id: replace(known, revoked_at=event.occurred_at)}
    return keys


def fold(events: Iterable[Event], keys: Keys | None = None) -> Keys:
    state: Keys = keys or {}
    for event in events:
        state = apply(state, event)
    return state


def new_key_id() -> str:
    return secrets.token_hex(8)  # 16 hex characters, as ELVES' ids


def new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def created(
    key_id: str,
    name: str,
    scopes: Scopes,
    sealed: str,
    sealed_with: str,
    now: int,
    created_by: str | None,
) -> ApiKeyCreated:
    return ApiKeyCreated(
        event_id=new_id(),
        occurred_at=now,
        key_id=key_id,
        name=name,
        apps=scopes.apps,
        agents=scopes.agents,
        operations=scopes.operations,
        sealed_secret=sealed,
        sealed_with=sealed_with,
        created_by=created_by,
    )


def decide_revoke(
    keys: Keys, key_id: str, now: int, revoked_by: str | None
) -> list[ApiKeyRevoked] | None:
    """None for an unknown key; [] when it is revoked already (revoking twice is no error)."""
    known = keys.get(key_id)
    if known is None:
        return None
    if not known.active:
        return []
    return [ApiKeyRevoked(new_id(), now, key_id, revoked_by)]
