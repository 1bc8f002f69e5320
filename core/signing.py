"""Ed25519 for the center and its agents: key files, signed dispatches, registration proofs.

Everything the center writes to an agent's dispatch topic is a `SignedDispatch`: `claims` are the
exact Avro bytes of a `DispatchClaims` (which agent, which task or cron, which attempt or
version, until when, and the inner event's exact bytes) and `signature` is the center's Ed25519
signature over them. The agent verifies the bytes it got, not a re-encoding, so no two encoders
ever have to agree. The center's key pair lives in its state dir (`dispatch.key`, mode 0600, and
`dispatch.pub`, which agents are given as `ELVES_CENTER_KEY`).

An agent's own key pair proves, once, that its registration comes from whoever holds the key
(`AgentRegistered.signature`); an operator then accepts that key.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign, crypto_sign_open
from nacl.exceptions import BadSignatureError

from elves.config import Settings
from elves.errors import (
    DecodeError,
    DispatchForged,
    DispatchUnsigned,
    DispatchWrongAgent,
)
from elves.schemas.codec import CODEC
from elves.schemas.events import (
    AgentCronSet,
    AgentRegistered,
    TaskCancelRequested,
    TaskDispatched,
)
from elves.secret_files import create_once

# What the center may write to an agent's dispatch topic.
Dispatchable = TaskDispatched | TaskCancelRequested | AgentCronSet
DISPATCHABLE = (TaskDispatched, TaskCancelRequested, AgentCronSet)
SIGNED = "SignedDispatch"
CLAIMS = "DispatchClaims"


# --- keys ---------------------------------------------------------------------------------------


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# Every dispatch is signed once (by the streams) and verified twice (by its agent and by the
# watcher, which verifies every dispatch of the whole fleet). `cryptography` keeps the keys
# (files, PEM); the signatures themselves go through libsodium, whose Ed25519 verifies in half
# the time OpenSSL's (as `cryptography` ships it) takes and signs in two thirds of it: 60-111
# against 123-228 us, 24-45 against 39-68 (`bench/signing.py`, over runs on one machine).


def verifies(public_raw: bytes, signature: bytes, message: bytes) -> bool:
    """Is `signature` the Ed25519 signature of `message` by the raw public key?"""
    if len(public_raw) != 32 or len(signature) != 64:  # libsodium reads these lengths unchecked
        return False
    try:
        crypto_sign_open(signature + message, public_raw)
    except BadSignatureError:
        return False
    return True


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key (16 hex of its sha256), for logs, refusals and listings."""
    return raw_key_id(raw_public(key))


def raw_key_id(raw: bytes) -> str:
    """`key_id` of a raw public key."""
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_key(path: Path) -> Ed25519PrivateKey:
    """The private key kept at `path`, made on first use. Created exclusively (several streams
    workers may start at once), mode 0600: whoever loses the race reads the winner's key."""
    made = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    key = serialization.load_pem_private_key(create_once(path, made), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError(f"{path} does not hold an Ed25519 private key")
    return key


def public_key(path: Path) -> Ed25519PublicKey:
    """A public key (PEM) from a file; FileNotFoundError until the center has made it."""
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError(f"{path} does not hold an Ed25519 public key")
    return key


# --- the center's signature -----------------------------------------------------------------------


@dataclass(frozen=True)
class Claims:
    agent_id: str
    subject: str  # the task id, or the cron id of an AgentCronSet
    attempt: int  # the task's attempt, or the cron definition's version (its occurred_at)
    issued_at: int
    expires_at: int
    event: bytes  # the inner event's exact bytes


def subject_of(event: Dispatchable) -> tuple[str, int]:
    """(subject, attempt) that the claims name for an event."""
    if isinstance(event, AgentCronSet):
        return event.cron_id, event.occurred_at
    return event.task_id, event.attempt


class Signer:
    """The center's signing key: `seal` an event for its agent."""

    def __init__(self, key: Ed25519PrivateKey, control_ttl_s: int) -> None:
        self.public = key.public_key()
        # libsodium's secret key: the seed, then the public key.
        self._secret = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        ) + raw_public(self.public)
        self.key_id = key_id(self.public)
        self.control_ttl_ms = control_ttl_s * 1000

    def seal(self, event: Dispatchable, now: int, expires_at: int | None = None) -> bytes:
        """The SignedDispatch bytes of `event`. A dispatch expires at its deadline (after it
        the center has timed the task out anyway); a cancel or a cron change after the control
        TTL (`ELVES_CONTROL_TTL`), unless `expires_at` is given."""
        if expires_at is None:
            expires_at = (
                event.deadline_at
                if isinstance(event, TaskDispatched)
                else now + self.control_ttl_ms
            )
        subject, attempt = subject_of(event)
        claims = CODEC.encode_as(
            CLAIMS,
            {
                "agent_id": event.agent_id,
                "subject": subject,
                "attempt": attempt,
                "issued_at": now,
                "expires_at": expires_at,
                "event": CODEC.encode(event),
            },
        )
        signature = crypto_sign(claims, self._secret)[:64]  # libsodium: signature, then message
        signed = {"claims": claims, "signature": signature, "key_id": self.key_id}
        return CODEC.encode_as(SIGNED, signed)


def center_signer(settings: Settings) -> Signer:
    """The center's signer, its key pair made on first use (`dispatch.key`, `dispatch.pub`)."""
    key = private_key(settings.dispatch_key_path)
    pub = settings.center_dir / "dispatch.pub"
    if create_once(pub, public_pem(key.public_key())) != public_pem(key.public_key()):
        raise ValueError(f"{pub} is not the public key of {settings.dispatch_key_path}")
    return Signer(key, settings.control_ttl_s)


def sign_dispatch(settings: Settings, event: Dispatchable, expires_at: int | None = None) -> bytes:
    """`event` signed with the center's key of these settings, as the streams would: for tests
    and tools that write to a dispatch topic themselves."""
    return center_signer(settings).seal(event, int(time.time() * 1000), expires_at)


@dataclass(frozen=True)
class Opened:
    """A verified message: its claims, its inner event, who signed, and the digest by which the
    agent recognises the same signed bytes again (a replay)."""

    claims: Claims
    event: Dispatchable
    key_id: str
    digest: bytes


def claimed_task(data: bytes | None) -> str | None:
    """The task id a message claims to be about, verified or not: for the refusal's record."""
    try:
        signed = CODEC.decode_record(data, SIGNED)
        data = CODEC.decode_record(signed["claims"], CLAIMS)["event"]
    except DecodeError:
        pass  # maybe a bare event
    try:
        return getattr(CODEC.decode(data), "task_id", None)
    except DecodeError:
        return None


def open_signed(data: bytes | None, center: bytes) -> Opened:
    """Verify a message from a dispatch topic with the center's raw public key (`raw_public`,
    made once per key, not per message) and read it; raises 416.1
    (unsigned or unreadable), 416.2 (the signature does not verify) or 416.3 (the claims and the
    event name different agents). Expiry, the agent's id and replays are the agent's to check.

    The task id a refusal names is read only for a refusal: reading it for every message decoded
    each one twice."""
    try:
        signed = CODEC.decode_record(data, SIGNED)
    except DecodeError as exc:
        raise DispatchUnsigned(
            f"not a signed dispatch: {exc.message}", task_id=claimed_task(data)
        ) from exc
    claims_bytes, signer = bytes(signed["claims"]), str(signed["key_id"])
    if not verifies(center, bytes(signed["signature"]), claims_bytes):
        ours = raw_key_id(center)
        why = "another key" if signer == ours else f"key {signer}, not the center's {ours}"
        raise DispatchForged(
            f"the signature does not verify with the center's key (signed by {why})",
            task_id=claimed_task(data),
            key_id=signer,
        ) from None
    try:
        claims = Claims(**CODEC.decode_record(claims_bytes, CLAIMS))
        event = CODEC.decode(claims.event)
    except (DecodeError, TypeError) as exc:
        raise DispatchUnsigned(
            f"signed, but unreadable: {exc}", task_id=claimed_task(data)
        ) from exc
    if not isinstance(event, DISPATCHABLE):
        raise DispatchUnsigned(f"signed, but {type(event).__name__} is not a dispatch")
    if event.agent_id != claims.agent_id:
        raise DispatchWrongAgent(
            f"the claims name agent {claims.agent_id!r}, the event {event.agent_id!r}",
            task_id=getattr(event, "task_id", None),  # read already: what claimed_task reads
        )
    if subject_of(event) != (claims.subject, claims.attempt):
        raise DispatchUnsigned(
            "signed, but the claims do not match the event",
            task_id=getattr(event, "task_id", None),
        )
    digest = hashlib.sha256(claims_bytes).digest()
    return Opened(claims, event, signer, digest)


class CenterKey:
    """The center's public key as a verifier reads it from its file (`ELVES_CENTER_KEY`): on
    first use (the streams make it when they first start), and again when the file changes (a
    new center key), so neither an agent nor the watcher needs a restart."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: bytes | None = None  # raw
        self._stamp: tuple[int, int] | None = None

    def open(self, data: bytes | None) -> Opened:
        try:
            return open_signed(data, self._load())
        except DispatchForged:
            if self._stamp is None or self._stamp == _stamp(self.path):
                raise
            self._key = None  # the file changed since it was read: read it and try again
            return open_signed(data, self._load())

    def _load(self) -> bytes:
        if self._key is None:
            try:
                self._stamp = _stamp(self.path)
                self._key = raw_public(public_key(self.path))
            except (OSError, TypeError, ValueError) as exc:
                self._stamp = None
                raise DispatchForged(
                    f"cannot verify: no center key at {self.path} ({exc}); set"
                    " ELVES_CENTER_KEY to the center's dispatch.pub"
                ) from exc
        return self._key


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return st.st_mtime_ns, st.st_ino


# --- an agent's registration ----------------------------------------------------------------------


def registration_message(agent_id: str, public_key_hex: str) -> bytes:
    """What an agent signs to register: its id and key, with a purpose of their own, so that the
    signature cannot be taken for any other message of that key."""
    return f"elves agent registration\n{agent_id}\n{public_key_hex}".encode()


def registration(
    key: Ed25519PrivateKey, agent_id: str, hostname: str, event_id: str, now: int
) -> AgentRegistered:
    public_hex = raw_public(key.public_key()).hex()
    return AgentRegistered(
        event_id=event_id,
        occurred_at=now,
        agent_id=agent_id,
        public_key=public_hex,
        hostname=hostname,
        signature=key.sign(registration_message(agent_id, public_hex)).hex(),
    )


def verified(public_key_hex: str, signature_hex: str, message: bytes) -> bool:
    """Is `signature_hex` the Ed25519 signature of `message` by `public_key_hex`? (False for a
    malformed key or signature too.)"""
    try:
        return verifies(bytes.fromhex(public_key_hex), bytes.fromhex(signature_hex), message)
    except ValueError:
        return False


def registration_valid(event: AgentRegistered) -> bool:
    """The registration is signed by the key it names (proof of possession)."""
    message = registration_message(event.agent_id, event.public_key)
    return verified(event.public_key, event.signature, message)


def short_id(public_key_hex: str) -> str:
    """`key_id` of a public key given as hex ("" for none or a malformed one)."""
    try:
        raw = bytes.fromhex(public_key_hex)
    except ValueError:
        return ""
    return hashlib.sha256(raw).hexdigest()[:16] if raw else ""
