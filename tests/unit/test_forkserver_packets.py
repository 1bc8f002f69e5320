"""The fork server's packets (`send`, `recv`) on a real socket pair, without a server."""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Iterator

import pytest

from elves.agent.forkserver import MAX_PACKET, REPLY_MAX, recv, send


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


def test_a_request_and_its_fds_come_through_the_servers_buffer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    buffer = mmap.mmap(-1, MAX_PACKET)
    r, w = os.pipe()
    try:
        big = {"argv": ["python", "x" * 100_000], "cwd": "/", "env": None}  # over a reply's size
        send(a, big, [w, w, w])
        message, fds = recv(b, maxfds=3, buffer=buffer)
        assert message == big
        assert len(fds) == 3
        os.write(fds[0], b"ok")  # a working duplicate of the write end that was sent
        assert os.read(r, 2) == b"ok"
        for fd in fds:
            os.close(fd)
        send(a, {"argv": ["short"]})  # the kept buffer holds no trace of the longer one
        assert recv(b, maxfds=3, buffer=buffer) == ({"argv": ["short"]}, [])
    finally:
        os.close(r)
        os.close(w)


def test_a_packet_over_the_buffer_is_refused_and_its_fds_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    r, w = os.pipe()
    try:
        send(a, {"error": "x" * REPLY_MAX}, [w])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(ValueError, match="over"):
            recv(b, maxfds=1)
        assert set(os.listdir("/proc/self/fd")) <= before  # the fd that came was closed
    finally:
        os.close(r)
        os.close(w)


def test_a_closed_peer_reads_as_none(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    a.close()
    assert recv(b) == (None, [])
