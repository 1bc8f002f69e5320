"""Signed requests: the canonical string, and every way a request is refused, with its code."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.errors import ElvesError
from elves.request_signing import (
    AGENT_SCHEME,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    NonceCache,
    canonical,
    sign,
    sign_as_agent,
    verify,
    verify_agent,
)

NOW = 1_700_000_000.0
KEYS = {"k1": "s3cret", "k2": "other"}


def check(
    headers: dict[str, str],
    body: bytes = b"{}",
    target: str = "/api/v1/x?a=1",
    now: float = NOW,
    nonces: NonceCache | None = None,
    method: str = "POST",
) -> str:
    cache = NonceCache() if nonces is None else nonces  # an empty cache is falsy
    return verify(headers, method, target, body, now, KEYS.get, cache)


def signed(body: bytes = b"{}", target: str = "/api/v1/x?a=1", at: float = NOW) -> dict[str, str]:
    return sign("k1", KEYS["k1"], "POST", target, body, at)


def code_of(headers: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(ElvesError) as err:
        check(headers, **kwargs)  # type: ignore[arg-type]
    return err.value.code


def test_the_canonical_string_is_one_field_a_line() -> None:
    text = canonical("post", "/api/v1/x?a=1", b"{}", "1700000000", "n" * 16, "k1").decode()
    assert text.split("\n") == [
        "ELVES-HMAC-SHA256",
        "POST",
        "/api/v1/x?a=1",
        hashlib.sha256(b"{}").hexdigest(),
        "1700000000",
        "n" * 16,
        "k1",
    ]


def test_a_signed_request_names_its_key() -> None:
    assert check(signed()) == "k1"


def test_every_request_gets_a_fresh_nonce() -> None:
    assert signed()[NONCE_HEADER] != signed()[NONCE_HEADER]


@pytest.mark.parametrize(
    "change",
    [
        {"body": b'{"x": 1}'},
        {"target": "/api/v1/x?a=2"},
        {"target": "/api/v1/y?a=1"},
        {"method": "DELETE"},
    ],
)
def test_any_change_to_what_was_signed_is_401_5(change: dict[str, object]) -> None:
    assert code_of(signed(), **change) == "401.5"


def test_another_keys_secret_is_401_5() -> None:
    headers = sign("k1", KEYS["k2"], "POST", "/api/v1/x?a=1", b"{}", NOW)
    assert code_of(headers) == "401.5"


def test_a_missing_header_is_401_1() -> None:
    for name in signed():
        headers = signed()
        del headers[name]
        assert code_of(headers) == "401.1"


def test_malformed_headers_have_their_codes() -> None:
    assert code_of({**signed(), TIMESTAMP_HEADER: "soon"}) == "401.8"
    assert code_of({**signed(), TIMESTAMP_HEADER: "-5"}) == "401.8"
    assert code_of({**signed(), SIGNATURE_HEADER: "abc"}) == "401.4"
    assert code_of({**signed(), NONCE_HEADER: "short"}) == "401.1"


def test_an_unknown_or_revoked_key_is_401_9() -> None:
    headers = sign("k9", "whatever", "POST", "/api/v1/x?a=1", b"{}", NOW)
    assert code_of(headers) == "401.9"


def test_a_timestamp_out_of_the_window_is_401_7() -> None:
    assert check(signed(at=NOW - 299)) == "k1"
    assert check(signed(at=NOW + 299)) == "k1"
    assert code_of(signed(at=NOW - 301)) == "401.7"
    assert code_of(signed(at=NOW + 301)) == "401.7"


def test_a_replayed_nonce_is_401_10_and_a_forged_one_takes_no_room() -> None:
    nonces = NonceCache()
    headers = signed()
    assert check(headers, nonces=nonces) == "k1"
    assert code_of(headers, nonces=nonces) == "401.10"
    assert code_of({**signed(), SIGNATURE_HEADER: "0" * 64}, nonces=nonces) == "401.5"
    assert len(nonces) == 1


def test_a_nonce_is_forgotten_once_its_timestamp_left_the_window() -> None:
    nonces = NonceCache(window_s=300)
    assert nonces.first_use("k1", "n1", 1000, now=1000)
    assert not nonces.first_use("k1", "n1", 1000, now=1299)
    assert nonces.first_use("k2", "n1", 1000, now=1299)  # per key
    assert nonces.first_use("k1", "n2", 1200, now=1301)  # this purges n1's entries
    assert len(nonces) == 1


# --- an agent's own key ---------------------------------------------------------------------


AGENT_KEY = Ed25519PrivateKey.generate()
ACCEPTED = {"web-1": AGENT_KEY.public_key().public_bytes_raw().hex()}


def agent_code(headers: dict[str, str], target: str = "/p", now: float = NOW, **kw: Any) -> str:
    cache: NonceCache = kw.get("nonces") or NonceCache()
    with pytest.raises(ElvesError) as refused:
        verify_agent(headers, "GET", target, b"", now, ACCEPTED.get, cache)
    return refused.value.code


def test_an_accepted_agent_signs_with_its_own_key() -> None:
    headers = sign_as_agent(AGENT_KEY, "web-1", "GET", "/p", b"", NOW)
    assert verify_agent(headers, "GET", "/p", b"", NOW, ACCEPTED.get, NonceCache()) == "web-1"


def test_an_agents_request_is_refused_with_the_codes_of_a_keys() -> None:
    good = sign_as_agent(AGENT_KEY, "web-1", "GET", "/p", b"", NOW)
    assert agent_code(good, target="/other") == "401.5"  # signed for another path
    other_key = sign_as_agent(Ed25519PrivateKey.generate(), "web-1", "GET", "/p", b"", NOW)
    assert agent_code(other_key) == "401.5"  # not the key the operator accepted
    not_accepted = sign_as_agent(AGENT_KEY, "db-1", "GET", "/p", b"", NOW)
    assert agent_code(not_accepted) == "401.9"
    assert agent_code(good, now=NOW + 301) == "401.7"
    assert agent_code({k: v for k, v in good.items() if k != "x-elves-agent-signature"}) == "401.1"
    # The HMAC signature of an API key is not an agent's: the form tells them apart.
    assert agent_code({**good, "x-elves-agent-signature": "ab" * 32}) == "401.4"
    cache = NonceCache()
    verify_agent(good, "GET", "/p", b"", NOW, ACCEPTED.get, cache)
    assert agent_code(good, nonces=cache) == "401.10"


def test_an_agents_signature_is_not_a_keys_and_a_keys_not_an_agents() -> None:
    """The scheme name is signed: the same lines cannot pass as the other kind."""
    lines = ("GET", "/p", b"", "1", "n" * 16, "agent:web-1")
    assert canonical(*lines) != canonical(*lines, scheme=AGENT_SCHEME)
