"""The one way to call the gateway: an httpx client that signs every request with an API key.

The key is a JSON file `{"id": ..., "secret": ...}` (mode 0600), named by `ELVES_KEY_FILE`; by
default the admin key that `elves up` writes to `<state>/center/admin.key`. The file is read on
the first request and again whenever it changes, so a client made before `elves up` mints the
key (the local stack's) works once it exists.

An agent calls with `agent_client` instead: signed with its own enrolled key, which the gateway
takes for its packages only once an operator has accepted it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from elves.config import Settings
from elves.errors import MissingSignature
from elves.request_signing import sign, sign_as_agent
from elves.secret_files import replace_private


@dataclass(frozen=True)
class KeyFile:
    key_id: str
    secret: str


def read_key_file(path: Path) -> KeyFile:
    try:
        data = json.loads(path.read_text())
        return KeyFile(str(data["id"]), str(data["secret"]))
    except FileNotFoundError:
        raise MissingSignature(
            f"no API key file at {path}: set ELVES_KEY_FILE, or run `elves up`, which writes "
            "the admin key there"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise MissingSignature(f"{path} is not an API key file ({{id, secret}})") from exc


def write_key_file(path: Path, key_id: str, secret: str) -> None:
    replace_private(path, json.dumps({"id": key_id, "secret": secret}).encode())


class KeyAuth(httpx.Auth):
    """Signs each request (sync or async alike: signing does no I/O but the key file's)."""

    requires_request_body = True  # the body's sha256 is signed

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: tuple[int, KeyFile] | None = None

    def key(self) -> KeyFile:
        try:
            changed = os.stat(self.path).st_mtime_ns
        except FileNotFoundError:
            changed = -1
        if self._loaded is None or self._loaded[0] != changed:
            self._loaded = (changed, read_key_file(self.path))
        return self._loaded[1]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        key = self.key()
        target = request.url.raw_path.decode("latin-1")  # path and query, as sent
        request.headers.update(
            sign(key.key_id, key.secret, request.method, target, request.content, time.time())
        )
        yield request


class AgentAuth(httpx.Auth):
    """Signs each request with an agent's own enrolled key: what an agent needs of the gateway
    (its apps' packages) without an API key."""

    requires_request_body = True  # the body's sha256 is signed

    def __init__(self, agent_id: str, key: Ed25519PrivateKey) -> None:
        self.agent_id = agent_id
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        target = request.url.raw_path.decode("latin-1")
        request.headers.update(
            sign_as_agent(
                self._key, self.agent_id, request.method, target, request.content, time.time()
            )
        )
        yield request


def agent_client(
    settings: Settings, agent_id: str, key: Ed25519PrivateKey, timeout: float = 30.0
) -> httpx.Client:
    return httpx.Client(base_url=settings.base_url, timeout=timeout, auth=AgentAuth(agent_id, key))


def client(settings: Settings, timeout: float = 30.0, **kwargs: Any) -> httpx.Client:
    return httpx.Client(
        base_url=settings.base_url, timeout=timeout, auth=KeyAuth(settings.key_path), **kwargs
    )


def async_client(settings: Settings, timeout: float = 30.0, **kwargs: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=settings.base_url, timeout=timeout, auth=KeyAuth(settings.key_path), **kwargs
    )
