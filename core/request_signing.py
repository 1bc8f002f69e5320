"""Signed requests: HMAC-SHA256 with the key's secret over what the request does. Pure.

The signature covers the method, the path with its query, the sha256 of the body, a timestamp
(Unix seconds) and a nonce, and the key id, one per line. It is sent in four headers. The
gateway refuses a request whose timestamp is more than `WINDOW_S` from its clock, and a nonce
the key already used within the window: ELVES' md5 signature had no nonce, so a captured
request could be replayed for as long as its timestamp was accepted.

An agent signs with its own enrolled Ed25519 key instead (`sign_as_agent`, `verify_agent`): the
same lines under another scheme name, with `agent:<id>` for the key, in `x-elves-agent` and
`x-elves-agent-signature`. The gateway checks it against the key an operator accepted, so an
agent needs no API key of its own; what it may do with it is the gateway's rule (access.py).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.errors import (
    BadSignature,
    BadSignatureFormat,
    BadTimestamp,
    MissingSignature,
    OutOfWindow,
    Replayed,
    UnknownKey,
)
from elves.signing import verified

SCHEME = "ELVES-HMAC-SHA256"
AGENT_SCHEME = "ELVES-AGENT-ED25519"
WINDOW_S = 300
KEY_HEADER = "x-elves-key"
TIMESTAMP_HEADER = "x-elves-timestamp"
NONCE_HEADER = "x-elves-nonce"
SIGNATURE_HEADER = "x-elves-signature"
HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
AGENT_HEADER = "x-elves-agent"
AGENT_SIGNATURE_HEADER = "x-elves-agent-signature"
AGENT_HEADERS = (AGENT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, AGENT_SIGNATURE_HEADER)

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
# The hex digits of each scheme's signature: HMAC-SHA256 (32 bytes), Ed25519 (64 bytes).
HEX_DIGITS: dict[tuple[str, ...], int] = {HEADERS: 64, AGENT_HEADERS: 128}


def canonical(
    method: str,
    target: str,
    body: bytes,
    timestamp: str,
    nonce: str,
    key: str,
    scheme: str = SCHEME,
) -> bytes:
    """What is signed. `target` is the path and query exactly as sent (`/api/v1/x?a=1`)."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((scheme, method.upper(), target, digest, timestamp, nonce, key)).encode()


def signature(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(
    key_id: str, secret: str, method: str, target: str, body: bytes, now: float
) -> dict[str, str]:
    """The four headers of one request; a fresh nonce each time."""
    timestamp, nonce = str(int(now)), secrets.token_hex(16)
    message = canonical(method, target, body, timestamp, nonce, key_id)
    return {
        KEY_HEADER: key_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, message),
    }


@dataclass(frozen=True)
class Signed:
    key_id: str
    timestamp: str
    nonce: str
    signature: str


def read_headers(headers: Mapping[str, str], names: tuple[str, ...] = HEADERS) -> Signed:
    """The four signing headers, `names` in the order of `Signed`'s fields, checked for form."""
    missing = [h for h in names if not headers.get(h)]
    if missing:
        raise MissingSignature(
            f"missing signing headers: {', '.join(missing)} (sign with an API key: see README)"
        )
    signed = Signed(*(headers[h] for h in names))
    if not signed.timestamp.isascii() or not signed.timestamp.isdigit():
        raise BadTimestamp(f"{TIMESTAMP_HEADER} must be Unix seconds, not {signed.timestamp!r}")
    if not _NONCE.match(signed.nonce):
        raise MissingSignature(f"{NONCE_HEADER} must be 16-64 letters, digits, - or _")
    digits = HEX_DIGITS[names]
    if not re.fullmatch(f"[0-9a-f]{{{digits}}}", signed.signature):
        raise BadSignatureFormat(f"{names[-1]} must be {digits} lowercase hex digits")
    return signed


class NonceCache:
    """The nonces each key used, each kept until its timestamp leaves the window: by then the
    window check refuses a replay on its own. In memory, so one gateway's; entries are added
    only for requests whose signature held, so only a key's holder can fill it."""

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._seen: set[tuple[str, str]] = set()
        self._expiry: list[tuple[int, str, str]] = []  # a heap: (forget at, key, nonce)

    def first_use(self, key_id: str, nonce: str, timestamp: int, now: float) -> bool:
        while self._expiry and self._expiry[0][0] < now:
            _, k, n = heapq.heappop(self._expiry)
            self._seen.discard((k, n))
        if (key_id, nonce) in self._seen:
            return False
        self._seen.add((key_id, nonce))
        heapq.heappush(self._expiry, (timestamp + self.window_s, key_id, nonce))
        return True

    def __len__(self) -> int:
        return len(self._seen)


def verify(
    headers: Mapping[str, str],
    method: str,
    target: str,
    body: bytes,
    now: float,
    secret_of: Callable[[str], str | None],
    nonces: NonceCache,
) -> str:
    """The id of the key that signed this request, or the error that says why not. The
    signature is checked before the window and the nonce, so neither tells anything to
    someone without the key, and only signed requests take room in the nonce cache."""
    signed = read_headers(headers)
    secret = secret_of(signed.key_id)
    if secret is None:
        raise UnknownKey(f"unknown or revoked API key {signed.key_id}", key_id=signed.key_id)
    message = canonical(method, target, body, signed.timestamp, signed.nonce, signed.key_id)
    if not hmac.compare_digest(signature(secret, message), signed.signature):
        raise BadSignature(
            "the signature does not match this request (method, path and query, body, "
            "timestamp, nonce, key)",
            key_id=signed.key_id,
        )
    _fresh(signed, signed.key_id, now, nonces)
    return signed.key_id


def _fresh(signed: Signed, key: str, now: float, nonces: NonceCache) -> None:
    """A signed request must be recent and its nonce new for its key (after its signature
    held: only a key's holder can fill the nonce cache)."""
    timestamp = int(signed.timestamp)
    if abs(now - timestamp) > nonces.window_s:
        raise OutOfWindow(
            f"the timestamp is {now - timestamp:+.0f} s from the gateway's clock "
            f"(at most {nonces.window_s} s either way)",
            key_id=key,
        )
    if not nonces.first_use(key, signed.nonce, timestamp, now):
        raise Replayed("this nonce was used already: a replayed request", key_id=key)


def sign_as_agent(
    key: Ed25519PrivateKey, agent_id: str, method: str, target: str, body: bytes, now: float
) -> dict[str, str]:
    """The four headers of a request an agent signs with its own enrolled key."""
    timestamp, nonce = str(int(now)), secrets.token_hex(16)
    message = canonical(
        method, target, body, timestamp, nonce, f"agent:{agent_id}", scheme=AGENT_SCHEME
    )
    return {
        AGENT_HEADER: agent_id,
        TIMESTAMP_HEADER: timestamp,
        NONCE_HEADER: nonce,
        AGENT_SIGNATURE_HEADER: key.sign(message).hex(),
    }


def verify_agent(
    headers: Mapping[str, str],
    method: str,
    target: str,
    body: bytes,
    now: float,
    accepted_key_of: Callable[[str], str | None],
    nonces: NonceCache,
) -> str:
    """The id of the agent that signed this request with the key an operator accepted for it
    (`accepted_key_of`: its public key in hex, None unless it is accepted now), or the error
    that says why not."""
    signed = read_headers(headers, AGENT_HEADERS)
    agent_id = signed.key_id
    public = accepted_key_of(agent_id)
    if public is None:
        raise UnknownKey(
            f"agent {agent_id} is not accepted: it may not call the gateway with its key",
            agent_id=agent_id,
        )
    message = canonical(
        method, target, body, signed.timestamp, signed.nonce, f"agent:{agent_id}", AGENT_SCHEME
    )
    if not verified(public, signed.signature, message):
        raise BadSignature(
            "the signature does not match this request and the agent's accepted key",
            agent_id=agent_id,
        )
    _fresh(signed, f"agent:{agent_id}", now, nonces)
    return agent_id
