"""A benchmark's stack stops when the benchmark is killed: SIGTERM becomes SystemExit."""

from __future__ import annotations

import signal

import pytest

from elves.local import term_as_exit


def test_sigterm_inside_raises_system_exit_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, term_as_exit():
        signal.raise_signal(signal.SIGTERM)
    assert exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_finally_inside_runs_on_sigterm() -> None:
    ran = []
    with pytest.raises(SystemExit), term_as_exit():
        try:
            signal.raise_signal(signal.SIGTERM)
        finally:
            ran.append("stopped")
    assert ran == ["stopped"]
