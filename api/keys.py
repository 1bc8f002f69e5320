"""API key endpoints: create (the secret in this one reply, never again), list, revoke.

Each write goes to `keys` and waits until the broker has it, then is applied to the gateway's
key ring at once, so the new key works (or the revoked one stops) with the very next request.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from elves import apikeys
from elves.api.access import caller
from elves.api.gateway import gateway
from elves.api.requests import parse_json_body
from elves.errors import KeyNotFound, WrongType
from elves.keyring import write
from elves.scopes import parse_scopes


def _now() -> int:
    return int(time.time() * 1000)


async def create_key(request: Request) -> JSONResponse:
    gw = gateway(request)
    body = parse_json_body(await request.body())
    scopes = parse_scopes(body.get("apps"), body.get("agents"), body.get("operations"))
    name = body.get("name", "")
    if not isinstance(name, str):
        raise WrongType("name must be a string", field="name")
    key_id, secret = apikeys.new_key_id(), apikeys.new_secret()
    sealer = gw.auth.sealer
    event = apikeys.created(
        key_id,
        name,
        scopes,
        sealer.seal(secret, key_id),
        sealer.key_id,
        _now(),
        caller(request).key_id,
    )
    await asyncio.to_thread(write, gw.producer, gw.settings, event)
    gw.auth.ring.apply(event)
    state = gw.auth.ring.get(key_id)
    assert state is not None
    return JSONResponse({**state.to_json(), "secret": secret}, status_code=201)


async def list_keys(request: Request) -> JSONResponse:
    gw = gateway(request)
    return JSONResponse({"keys": [k.to_json() for k in gw.auth.ring.all()]})


async def revoke_key(request: Request) -> JSONResponse:
    gw = gateway(request)
    key_id = request.path_params["key_id"]
    ring = gw.auth.ring
    events = apikeys.decide_revoke(ring.snapshot(), key_id, _now(), caller(request).key_id)
    if events is None:
        raise KeyNotFound(f"no API key {key_id}", key_id=key_id)
    for event in events:
        await asyncio.to_thread(write, gw.producer, gw.settings, event)
        ring.apply(event)
    state = ring.get(key_id)
    assert state is not None
    return JSONResponse(state.to_json())
