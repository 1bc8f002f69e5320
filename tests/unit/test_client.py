"""The signing client: what it sends is what the gateway's check accepts, sync and async."""

from __future__ import annotations

import asyncio
import json
import stat
import time
from pathlib import Path

import httpx
import pytest

from elves.client import KeyAuth, read_key_file, write_key_file
from elves.errors import ElvesError
from elves.request_signing import KEY_HEADER, NonceCache, verify


def checker(seen: list[str]) -> httpx.MockTransport:
    """A stand-in gateway that verifies each request as the real one does."""
    nonces = NonceCache()

    def handle(request: httpx.Request) -> httpx.Response:
        target = request.url.raw_path.decode()
        key = verify(
            request.headers,
            request.method,
            target,
            request.content,
            time.time(),
            {"k1": "s3cret"}.get,
            nonces,
        )
        seen.append(f"{key} {request.method} {target}")
        return httpx.Response(200, json={})

    return httpx.MockTransport(handle)


def test_the_key_file_is_private_json(tmp_path: Path) -> None:
    path = tmp_path / "center" / "admin.key"
    write_key_file(path, "k1", "s3cret")
    assert json.loads(path.read_text()) == {"id": "k1", "secret": "s3cret"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_key_file(path).key_id == "k1"


def test_a_missing_key_file_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ElvesError, match="missing.key") as err:
        read_key_file(tmp_path / "missing.key")
    assert err.value.code == "401.1"


def test_every_request_is_signed_and_verifies(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, "k1", "s3cret")
    seen: list[str] = []
    with httpx.Client(base_url="http://gw", auth=KeyAuth(path), transport=checker(seen)) as c:
        assert c.post("/api/v1/audit", json={"sql": "SELECT 1"}).status_code == 200
        assert c.get("/api/v1/audit", params={"sql": "SELECT 'a b'"}).status_code == 200
        assert c.post("/api/v1/apps/x/versions/1", content=b"PK\x03\x04").status_code == 200
    assert seen == [
        "k1 POST /api/v1/audit",
        "k1 GET /api/v1/audit?sql=SELECT+%27a+b%27",
        "k1 POST /api/v1/apps/x/versions/1",
    ]


def test_the_async_client_signs_too(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, "k1", "s3cret")
    seen: list[str] = []

    async def call() -> int:
        auth, transport = KeyAuth(path), checker(seen)
        async with httpx.AsyncClient(base_url="http://gw", auth=auth, transport=transport) as c:
            return (await c.post("/api/v1/tasks/instant", json={"a": 1})).status_code

    assert asyncio.run(call()) == 200 and seen == ["k1 POST /api/v1/tasks/instant"]


def test_a_changed_key_file_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    auth = KeyAuth(path)
    write_key_file(path, "k1", "s3cret")
    assert auth.key().key_id == "k1"
    write_key_file(path, "k2", "other")
    request = httpx.Request("GET", "http://gw/api/v1/agents")
    flow = auth.auth_flow(request)
    assert next(flow).headers[KEY_HEADER] == "k2"
