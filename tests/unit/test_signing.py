"""The center's signature and the agents' registration proof, without Kafka."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.config import Settings
from elves.errors import DecodeError, DispatchForged, DispatchUnsigned, DispatchWrongAgent
from elves.schemas.codec import CODEC
from elves.schemas.events import AgentCronSet, TaskCancelRequested, TaskDispatched
from elves.signing import (
    CLAIMS,
    SIGNED,
    CenterKey,
    Signer,
    center_signer,
    key_id,
    open_signed,
    private_key,
    public_key,
    raw_public,
    registration,
    registration_valid,
    sign_dispatch,
    verifies,
)

NOW = 1_700_000_000_000


def dispatch(agent_id: str = "a1", task_id: str = "t1") -> TaskDispatched:
    return TaskDispatched(
        "e1", NOW, task_id, 2, agent_id, "apptest", "helloword", "{}", 10, NOW + 15_000
    )


def cron_set() -> AgentCronSet:
    return AgentCronSet(
        "c1", NOW - 5, "cron-1", "a1", "apptest", "helloword", "{}", 10, "* * * * *", "UTC",
        "AANP", "active",
    )  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path)


def test_a_signed_dispatch_opens_to_the_exact_event_and_its_claims(settings: Settings) -> None:
    signer = center_signer(settings)
    data = signer.seal(dispatch(), NOW)
    opened = open_signed(data, raw_public(public_key(settings.center_key_path)))
    assert opened.event == dispatch()
    assert (opened.claims.agent_id, opened.claims.subject, opened.claims.attempt) == ("a1", "t1", 2)
    assert opened.claims.event == CODEC.encode(dispatch())  # the inner event's exact bytes
    assert opened.claims.expires_at == NOW + 15_000  # a dispatch expires at its deadline
    assert opened.key_id == signer.key_id == key_id(signer.public)
    assert CODEC.name_of(data) == SIGNED


def test_control_messages_expire_after_the_ttl(settings: Settings) -> None:
    signer = Signer(private_key(settings.dispatch_key_path), control_ttl_s=60)
    cancel = TaskCancelRequested("k1", NOW, "t1", 2, "a1", "stop")
    for event, subject in ((cancel, ("t1", 2)), (cron_set(), ("cron-1", NOW - 5))):
        opened = open_signed(signer.seal(event, NOW), raw_public(signer.public))
        assert opened.claims.expires_at == NOW + 60_000
        assert (opened.claims.subject, opened.claims.attempt) == subject
        assert opened.event == event


def test_the_key_pair_is_made_once_mode_0600_and_shared_by_racing_starters(
    settings: Settings,
) -> None:
    keys: list[bytes] = []

    def start() -> None:
        keys.append(center_signer(settings).public.public_bytes_raw())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1  # every worker signs with the one key
    mode = stat.S_IMODE(os.stat(settings.dispatch_key_path).st_mode)
    assert mode == 0o600
    assert public_key(settings.center_key_path).public_bytes_raw() == keys[0]
    assert not [p for p in settings.center_dir.iterdir() if p.name.endswith(".tmp")]


def test_unsigned_junk_and_broken_envelopes_are_416_1(settings: Settings) -> None:
    center = raw_public(center_signer(settings).public)
    with pytest.raises(DispatchUnsigned) as bare:
        open_signed(CODEC.encode(dispatch(task_id="bare")), center)
    assert bare.value.code == "416.1" and bare.value.details["task_id"] == "bare"
    for junk in (b"", b"not avro", None, CODEC.encode_as(CLAIMS, {
        "agent_id": "a1", "subject": "t1", "attempt": 1, "issued_at": NOW, "expires_at": NOW,
        "event": b"",
    })):  # fmt: skip
        with pytest.raises(DispatchUnsigned):
            open_signed(junk, center)


def test_another_key_or_altered_bytes_are_416_2(settings: Settings) -> None:
    center = center_signer(settings)
    forger = Signer(Ed25519PrivateKey.generate(), control_ttl_s=60)
    with pytest.raises(DispatchForged) as other:
        open_signed(forger.seal(dispatch(task_id="forged"), NOW), raw_public(center.public))
    assert other.value.code == "416.2"
    assert other.value.details == {"task_id": "forged", "key_id": forger.key_id}
    assert forger.key_id in other.value.message and center.key_id in other.value.message
    # The center's key id on a forger's signature, and claims altered after signing.
    signed = CODEC.decode_record(center.seal(dispatch(), NOW), SIGNED)
    claims = CODEC.decode_record(signed["claims"], CLAIMS)
    altered = CODEC.encode_as(CLAIMS, {**claims, "expires_at": claims["expires_at"] + 10**9})
    tampered = CODEC.encode_as(SIGNED, {**signed, "claims": altered})
    with pytest.raises(DispatchForged):
        open_signed(tampered, raw_public(center.public))


def test_claims_that_name_another_agent_than_the_event_are_416_3(settings: Settings) -> None:
    key = private_key(settings.dispatch_key_path)
    claims = CODEC.encode_as(CLAIMS, {
        "agent_id": "a2", "subject": "t1", "attempt": 2, "issued_at": NOW,
        "expires_at": NOW + 1, "event": CODEC.encode(dispatch("a1")),
    })  # fmt: skip
    data = CODEC.encode_as(SIGNED, {"claims": claims, "signature": key.sign(claims), "key_id": ""})
    with pytest.raises(DispatchWrongAgent):
        open_signed(data, raw_public(key.public_key()))


def test_a_signed_dispatch_is_not_an_event_to_the_plain_codec(settings: Settings) -> None:
    with pytest.raises(DecodeError, match="SignedDispatch is not an event"):
        CODEC.decode(sign_dispatch(settings, dispatch()))


def test_the_center_key_file_is_read_when_it_appears_and_again_when_it_changes(
    settings: Settings,
) -> None:
    verifier = CenterKey(settings.center_key_path)
    with pytest.raises(DispatchForged, match="no center key"):
        verifier.open(b"anything")
    first = sign_dispatch(settings, dispatch())  # the streams made the key meanwhile
    assert verifier.open(first).event == dispatch()
    for name in ("dispatch.key", "dispatch.pub"):  # a new center key
        (settings.center_dir / name).unlink()
    second = sign_dispatch(settings, dispatch())
    assert verifier.open(second).event == dispatch()
    with pytest.raises(DispatchForged):
        verifier.open(first)  # the old key's signatures no longer hold


def test_a_registration_proves_the_key_it_names() -> None:
    key = Ed25519PrivateKey.generate()
    event = registration(key, "a1", "host-1", "r1", NOW)
    assert registration_valid(event)
    other = registration(Ed25519PrivateKey.generate(), "a1", "host-1", "r2", NOW)
    assert not registration_valid(type(event)(**{**event.__dict__, "public_key": other.public_key}))
    assert not registration_valid(type(event)(**{**event.__dict__, "agent_id": "a2"}))
    assert not registration_valid(type(event)(**{**event.__dict__, "signature": "zz"}))


def test_libsodium_and_openssl_agree_on_each_others_signatures(settings: Settings) -> None:
    """Dispatches are signed and verified through libsodium, keys kept by `cryptography`: a
    signature either makes, the other accepts, and a changed byte fails both."""
    key = private_key(settings.dispatch_key_path)
    public = key.public_key()
    raw = raw_public(public)
    message = b"claims"
    ours = CODEC.decode_record(Signer(key, control_ttl_s=60).seal(dispatch(), NOW), SIGNED)
    public.verify(bytes(ours["signature"]), bytes(ours["claims"]))  # OpenSSL takes libsodium's
    assert verifies(raw, key.sign(message), message)  # and libsodium OpenSSL's
    assert not verifies(raw, key.sign(message), b"claimz")
    bad = bytearray(key.sign(message))
    bad[0] ^= 1
    assert not verifies(raw, bytes(bad), message)
    assert not verifies(
        raw_public(Ed25519PrivateKey.generate().public_key()), key.sign(message), message
    )


def test_a_malformed_key_or_signature_does_not_verify() -> None:
    key = Ed25519PrivateKey.generate()
    signature = key.sign(b"m")
    raw = raw_public(key.public_key())
    assert verifies(raw, signature, b"m")
    assert not verifies(raw[:31], signature, b"m")  # libsodium would read past a short key
    assert not verifies(raw, signature[:63], b"m")
    assert not verifies(raw + b"x", signature, b"m")
    assert not verifies(raw, signature + b"x", b"m")
