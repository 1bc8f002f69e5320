"""A route's unexpected exception: a 500 with its code, and the client's connection still works.

Served by a real uvicorn on loopback, as the gateway is: Starlette's handler for `Exception`
replied and then raised again, and uvicorn closed the connection, so the client's next request
on it failed. No Kafka here; the middleware is the gateway's own (`api/app.py`).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from elves.api.app import CatchUnexpected
from elves.local import free_port, wait_for


async def broken(request: Request) -> JSONResponse:
    raise ValueError("a bug")


async def fine(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(
        routes=[Route("/broken", broken), Route("/fine", fine)],
        middleware=[Middleware(CatchUnexpected)],
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for("uvicorn to start", lambda: server.started, 10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_an_unexpected_error_is_a_500_with_its_code(base_url: str) -> None:
    reply = httpx.get(f"{base_url}/broken")
    assert reply.status_code == 500
    assert reply.json() == {"error": {"code": "500", "message": "internal error: ValueError"}}


def _exchange(sock: socket.socket, path: str) -> bytes:
    """One HTTP/1.1 request on a kept connection; its whole reply (b"" if the server closed)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(65536)
        if not chunk:
            return reply
        reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    length = int(
        next(h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")).split(b":")[
            1
        ]
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def test_the_connection_serves_the_next_request_after_a_500(base_url: str) -> None:
    # A bare socket: a client library would open a new connection when it finds this one closed.
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        for _ in range(3):
            assert _exchange(sock, "/broken").startswith(b"HTTP/1.1 500")
            try:
                after = _exchange(sock, "/fine")
            except ConnectionResetError:
                after = b""
            assert after.startswith(b"HTTP/1.1 200"), after
            assert after.endswith(b'{"ok":true}')
