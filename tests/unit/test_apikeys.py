"""The key fold: created once, revoked for good; and the audit never holds a sealed secret."""

from __future__ import annotations

import dataclasses
import json

from elves import apikeys
from elves.api.watcher import to_row
from elves.schemas.codec import CODEC
from elves.schemas.events import ApiKeyRevoked
from elves.scopes import Scopes

SCOPES = Scopes(("apptest",), ("role=web",), ("exec",))


def made(key_id: str = "k1", at: int = 1000) -> object:
    return apikeys.created(key_id, "ci", SCOPES, "c2VhbGVk", "m1", at, created_by="admin")


def test_a_created_key_is_active_with_its_scopes() -> None:
    keys = apikeys.fold([made()])
    key = keys["k1"]
    assert key.active and key.scopes == SCOPES and key.created_by == "admin"
    assert "sealed" not in json.dumps(key.to_json())


def test_a_key_never_changes_once_made() -> None:
    other = dataclasses.replace(made(at=2000), apps=("*",))  # type: ignore[type-var]
    keys = apikeys.fold([made(), other])
    assert keys["k1"].scopes.apps == ("apptest",) and keys["k1"].created_at == 1000


def test_a_revocation_is_final_and_idempotent() -> None:
    keys = apikeys.fold([made()])
    events = apikeys.decide_revoke(keys, "k1", 5000, "admin")
    assert events is not None and len(events) == 1
    keys = apikeys.fold(events, keys)
    assert not keys["k1"].active and keys["k1"].revoked_at == 5000
    assert apikeys.decide_revoke(keys, "k1", 6000, "admin") == []
    again = apikeys.apply(keys, ApiKeyRevoked("e2", 7000, "k1"))
    assert again["k1"].revoked_at == 5000
    assert apikeys.decide_revoke(keys, "nope", 6000, None) is None
    assert apikeys.apply({}, ApiKeyRevoked("e3", 7000, "nope")) == {}


def test_new_ids_and_secrets_are_random() -> None:
    assert len(apikeys.new_key_id()) == 16 and apikeys.new_key_id() != apikeys.new_key_id()
    assert len(apikeys.new_secret()) >= 43


class _Msg:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "t.keys"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 3

    def key(self) -> bytes:
        return b"k1"

    def timestamp(self) -> tuple[int, int]:
        return (1, 1000)

    def headers(self) -> None:
        return None


def test_the_audit_row_of_a_key_keeps_its_scopes_not_its_sealed_secret() -> None:
    row = to_row(_Msg(CODEC.encode(made())), "t.dlq")  # type: ignore[arg-type]
    payload = json.loads(row.payload)
    assert row.type == "ApiKeyCreated"
    assert payload["key_id"] == "k1" and payload["apps"] == ["apptest"]
    assert "sealed_secret" not in payload and "c2VhbGVk" not in row.payload
