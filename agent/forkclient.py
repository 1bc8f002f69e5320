"""The agent's handle on its fork server (`forkserver.py`, the process and its protocol): start
it, ask it for one process per task, stop it."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from elves.agent.forkserver import recv, send

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 15.0


class ForkServerUnavailable(Exception):
    """The fork server cannot take a request; the caller falls back to a plain subprocess."""


@dataclass
class ForkedProcess:
    """A task process forked by the server; `exit_fd` turns readable when its status is known."""

    pid: int
    reply: socket.socket

    @property
    def exit_fd(self) -> int:
        return self.reply.fileno()

    def wait(self) -> int:
        """The exit code (negative: killed by that signal). Blocks until it is known."""
        message, _ = recv(self.reply)
        if message is None or "status" not in message:
            raise ForkServerUnavailable(
                f"the fork server went away before task pid {self.pid} ended"
            )
        return int(message["status"])

    def close(self) -> None:
        self.reply.close()


class ForkServer:
    """The agent's handle on its fork server: start it, ask it for processes, stop it."""

    def __init__(self, python: str = sys.executable) -> None:
        self.python = python
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._env: dict[str, str] = {}  # what the server inherited

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._env = dict(os.environ)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "elves.agent.forkserver", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        ours.settimeout(READY_TIMEOUT_S)
        try:
            message, _ = recv(ours)
        except (OSError, ValueError) as exc:
            ours.close()
            self._kill()
            raise ForkServerUnavailable(f"the fork server did not start: {exc}") from exc
        if message is None or "ready" not in message:
            ours.close()
            self._kill()
            raise ForkServerUnavailable("the fork server exited while starting")
        ours.settimeout(None)
        self._channel = ours
        log.info("fork server %s ready", self._proc.pid)

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(
        self, argv: Sequence[str], cwd: str, env: Mapping[str, str], stdout: int, stderr: int
    ) -> ForkedProcess:
        """Fork a process running `argv[1]` (a Python script) with argv, cwd and env.

        `stdout` and `stderr` are fds the caller keeps and closes. Restarts a dead server once;
        raises ForkServerUnavailable when it cannot.
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._lock:
                if not self.running:
                    if self._channel is not None:
                        log.warning("the fork server died; restarting it")
                        self._channel.close()
                        self._channel = None
                    self._proc = None
                    self._start()
                assert self._channel is not None
                # Most tasks get the environment the server has: no need to send it, and the
                # child need not rebuild it (a tenth of its CPU).
                request = {
                    "argv": list(argv),
                    "cwd": cwd,
                    "env": None if env == self._env else dict(env),
                }
                try:
                    send(self._channel, request, [theirs.fileno(), stdout, stderr])
                except OSError as exc:
                    raise ForkServerUnavailable(f"cannot reach the fork server: {exc}") from exc
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            message, _ = recv(ours)
        except (OSError, ValueError) as exc:
            ours.close()
            raise ForkServerUnavailable(f"no answer from the fork server: {exc}") from exc
        if message is None or "pid" not in message:
            ours.close()
            reason = "closed" if message is None else message.get("error", message)
            raise ForkServerUnavailable(f"the fork server refused the task: {reason}")
        return ForkedProcess(int(message["pid"]), ours)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()  # the server sees EOF and exits
                self._channel = None
            if self._proc is not None:
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
                self._proc = None
