"""Signed requests: HMAC-SHA256 with the key's secret over what the request does. Pure.

The signature covers the method, the path with its query, the sha256 of the body, a timestamp
(Unix seconds) and a nonce, and the key id, one per line. It is sent in four headers. The
gateway refuses a request whose timestamp is more than `WINDOW_S` from its clock, and a nonce
the key already used within the window: ELVES' md5 signature had no nonce, so a captured
request could be replayed for as long as its timestamp was accepted.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from elves.errors import (
    BadSignature,
    BadSignatureFormat,
    BadTimestamp,
    MissingSignature,
    OutOfWindow,
    Replayed,
    UnknownKey,
)

SCHEME = "ELVES-HMAC-SHA256"
WINDOW_S = 300
KEY_HEADER = "x-elves-key"
TIMESTAMP_HEADER = "x-elves-timestamp"
NONCE_HEADER = "x-elves-nonce"
SIGNATURE_HEADER = "x-elves-signature"
HEADERS = (KEY_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


def canonical(method: str, target: str, body: bytes, timestamp: str, nonce: str, key: str) -> bytes:
    """What is signed. `target` is the path and query exactly as sent (`/api/v1/x?a=1`)."""
    digest = hashlib.sha256(body).hexdigest()
    return "\n".join((SCHEME, method.upper(), target, digest, timestamp, nonce, key)).encode()


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


def read_headers(headers: Mapping[str, str]) -> Signed:
    missing = [h for h in HEADERS if not headers.get(h)]
    if missing:
        raise MissingSignature(
            f"missing signing headers: {', '.join(missing)} (sign with an API key: see README)"
        )
    signed = Signed(*(headers[h] for h in HEADERS))
    if not signed.timestamp.isascii() or not signed.timestamp.isdigit():
        raise BadTimestamp(f"{TIMESTAMP_HEADER} must be Unix seconds, not {signed.timestamp!r}")
    if not _NONCE.match(signed.nonce):
        raise MissingSignature(f"{NONCE_HEADER} must be 16-64 letters, digits, - or _")
    if not _SIGNATURE.match(signed.signature):
        raise BadSignatureFormat(f"{SIGNATURE_HEADER} must be 64 lowercase hex digits")
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
    timestamp = int(signed.timestamp)
    if abs(now - timestamp) > nonces.window_s:
        raise OutOfWindow(
            f"the timestamp is {now - timestamp:+.0f} s from the gateway's clock "
            f"(at most {nonces.window_s} s either way)",
            key_id=signed.key_id,
        )
    if not nonces.first_use(signed.key_id, signed.nonce, timestamp, now):
        raise Replayed("this nonce was used already: a replayed request", key_id=signed.key_id)
    return signed.key_id
