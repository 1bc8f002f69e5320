"""`elves up` where something already listens on its gateway's or dashboard's port: it says so
and starts nothing. A second `elves up` used to start its processes beside the first's, see
them fail, and on its way out stop the broker the first one was using."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from elves.config import Settings
from elves.local import free_port
from elves.up import busy_ports, up


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_busy_ports_names_what_listens(listening: int) -> None:
    free = free_port()
    settings = Settings(gateway_port=listening, dashboard_port=free)
    assert busy_ports(settings) == [f"the gateway (127.0.0.1:{listening})"]
    assert busy_ports(Settings(gateway_port=free, dashboard_port=free)) == []


def test_up_refuses_to_start_beside_a_running_stack(
    listening: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on this broker's port: had `up` gone on, starting Kafka would show.
    settings = Settings(
        state_dir=tmp_path / "state",
        bootstrap=f"127.0.0.1:{free_port()}",
        gateway_port=free_port(),
        dashboard_port=listening,
    )
    assert up(settings) == 1
    said = capsys.readouterr().out
    assert f"the dashboard (127.0.0.1:{listening})" in said
    assert "is Elves up already?" in said
    assert not (tmp_path / "state").exists()
