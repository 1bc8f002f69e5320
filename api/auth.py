"""Who sent a request: its signature checked against the keys the gateway folded.

Thin wiring of `elves.request_signing.verify` (pure) to the key ring, the master key that opens
the secrets, one nonce cache and the request as the server received it; and of `verify_agent`
to the keys operators accepted for agents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.requests import Request

from elves.apikeys import KeyState
from elves.errors import Unavailable, UnknownKey
from elves.keyring import KeyRing
from elves.request_signing import NonceCache, verify, verify_agent
from elves.sealing import Sealer, SealError

log = logging.getLogger("elves.api")


def signed_target(request: Request) -> str:
    """The path and query exactly as the client sent them (and signed them), not as decoded."""
    scope = request.scope
    path: bytes = scope.get("raw_path") or scope["path"].encode()
    query: bytes = scope.get("query_string", b"")
    return (path + (b"?" + query if query else b"")).decode("latin-1")


class Authenticator:
    def __init__(
        self, ring: KeyRing, sealer: Sealer, accepted_key_of: Callable[[str], str | None]
    ) -> None:
        self.ring = ring
        self.sealer = sealer
        self.accepted_key_of = accepted_key_of  # agent id -> the key accepted for it, if now
        self.nonces = NonceCache()  # the gateway's one event loop is its only user

    def _secret(self, key_id: str) -> str | None:
        state = self.ring.get(key_id)
        if state is None or not state.active:
            return None
        try:
            return self.sealer.unseal(state.sealed_secret, key_id, state.sealed_with)
        except SealError as exc:
            # The center's fault, not the caller's: another master key, or a damaged event.
            log.warning("API key %s cannot be opened: %s", key_id, exc)
            raise Unavailable(f"this gateway cannot open API key {key_id}: {exc}") from exc

    def authenticate(self, request: Request, body: bytes) -> KeyState:
        key_id = verify(
            request.headers,
            request.method,
            signed_target(request),
            body,
            time.time(),
            self._secret,
            self.nonces,
        )
        state = self.ring.get(key_id)
        if state is None:  # revoked and gone in between: cannot happen with today's fold
            raise UnknownKey(f"unknown API key {key_id}", key_id=key_id)
        return state

    def authenticate_agent(self, request: Request, body: bytes) -> str:
        """The id of the accepted agent that signed this request with its own key."""
        return verify_agent(
            request.headers,
            request.method,
            signed_target(request),
            body,
            time.time(),
            self.accepted_key_of,
            self.nonces,
        )
