"""A warm parent that forks one process per Python app task.

A fresh interpreter costs tens of milliseconds before the app runs a line; a fork of a parent that
has already imported the SDK costs about one. The task still gets its own process (isolation, the
ELVES contract), its own session and process group (so a timeout kills all it started), and the
same argv, cwd and environment it would get from `python app-worker.py ...`.

Protocol. The agent starts `python -m elves.agent.forkserver <fd>` with one end of an AF_UNIX
SOCK_SEQPACKET socketpair as `<fd>`; every message is one JSON object (packets keep boundaries,
so no framing). The server sends {"ready": pid} once it has preloaded. Per task, the agent sends
{"argv", "cwd", "env"} (env null: the server's own, as the agent started it) with three fds
attached: a reply socket (its own new socketpair) and the write ends of the task's stdout and
stderr pipes. On the reply socket the server answers
{"pid": n} (or {"error": text}) at once, then {"status": code} when the child has exited
(`os.waitstatus_to_exitcode`: negative for a signal). The server exits when the agent closes
its end, and is single-threaded so that forking it is safe.
"""

from __future__ import annotations

import array
import builtins
import contextlib
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import types

# The C function under `signal.signal`, which takes its own SIG_DFL, not the enum (CPython's
# since 3.5; typeshed has no stub for it).
from _signal import SIG_DFL as _SIG_DFL  # type: ignore[import-not-found]
from _signal import signal as _set_handler
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import CodeType
from typing import Any

from elves.apps.sdk import worker as sdk_worker

log = logging.getLogger(__name__)

MAX_PACKET = 1 << 20  # argv carries base64 params (64 KiB of JSON by default) and the env
READY_TIMEOUT_S = 15.0
# What every Python task imports anyway (and the SDK's worker, imported above).
PRELOAD = ("json", "base64", "traceback")


class ForkServerUnavailable(Exception):
    """The fork server cannot take a request; the caller falls back to a plain subprocess."""


def _send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def _recv(sock: socket.socket, maxfds: int = 0) -> tuple[dict[str, Any] | None, list[int]]:
    """One packet: (message, fds); (None, []) when the peer has closed."""
    data, fds, _flags, _addr = socket.recv_fds(sock, MAX_PACKET, maxfds)
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    message = json.loads(data)
    if not isinstance(message, dict):
        raise TypeError("fork server packets are JSON objects")
    return message, fds


# --- the server side -------------------------------------------------------------------------


def _run_child(request: dict[str, Any], code: CodeType | None, out_fd: int, err_fd: int) -> int:
    """In the forked child: become the task's process, run app-worker.py (already compiled, as
    `code`, unless the server could not) as `python app-worker.py` would: as a fresh `__main__`
    module."""
    import traceback

    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.closerange(3, 1 << 16)  # nothing of the server (its channel, other tasks' sockets) leaks
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE):
        # The C call: `signal.signal` also maps the old handler to an enum, and the pages that
        # touches cost more than the four calls.
        _set_handler(sig, _SIG_DFL)
    argv: list[str] = request["argv"]
    os.chdir(request["cwd"])
    env = request["env"]
    if env is not None:  # None: the server's own environment, which this process has already
        os.environ.clear()
        os.environ.update(env)
    script = argv[1]
    sys.argv = argv[1:]
    # What `python script.py` does: the script's folder first on sys.path.
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    exit_code = 0
    try:
        if code is None:  # unreadable or not Python: the error is the task's, as python's would be
            code = _compile(script, script)
        exec(code, main.__dict__)  # noqa: S102 - the app's own entry script, as python runs it
    except SystemExit as exc:
        if exc.code is None:
            exit_code = 0
        elif isinstance(exc.code, int):
            exit_code = exc.code
        else:
            sys.stderr.write(f"{exc.code}\n")
            exit_code = 1
    except BaseException:  # noqa: BLE001 - as the interpreter would: print it, exit 1
        traceback.print_exc()
        exit_code = 1
    return exit_code


def _compile(path: str, name: str) -> CodeType:
    """The script at `path` compiled as python would, its tracebacks naming it `name`."""
    with open(path, "rb") as f:
        return compile(f.read(), name, "exec", dont_inherit=True)


class _Scripts:
    """Each Python file a task runs compiled once, again when it changes (a new app version):
    the entry script and the app module the SDK imports.

    Compiling is not running: the code still runs in every task's own process. Reading and
    compiling the entry script there was a fifth of a noop task's CPU, and importing the app
    module (stat, read, unmarshal) as much again."""

    def __init__(self) -> None:
        self._code: dict[str, tuple[tuple[int, int, int], CodeType]] = {}

    def code(self, path: str, name: str) -> CodeType:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._code.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        code = _compile(path, name)
        self._code[path] = (stamp, code)
        return code

    def app_module(self, script: str, app: str) -> tuple[str, CodeType] | None:
        """`<app>.py` beside the entry script, compiled, as the SDK's main() imports it (keyed
        by the path it looks up); None when there is none to compile: the SDK then imports
        it itself and meets the same error, if any, as the task's own."""
        if not app.isidentifier():
            return None
        path = os.path.join(os.path.dirname(script), f"{app}.py")
        try:
            return path, self.code(path, path)
        except (OSError, SyntaxError, ValueError):
            return None


class _Server:
    def __init__(self, channel: socket.socket) -> None:
        self.channel = channel
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, reply)
        self.scripts = _Scripts()

    def serve(self) -> None:
        self.selector.register(self.channel, selectors.EVENT_READ, None)
        _send(self.channel, {"ready": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self._accept():
                        return
                else:
                    self._reap(key.fd)

    def _accept(self) -> bool:
        try:
            request, fds = _recv(self.channel, maxfds=3)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("fork server: bad request: %s", exc)
            return True
        if request is None:
            return False  # the agent is gone
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            log.warning("fork server: a request came with %d fds, not 3", len(fds))
            return True
        reply = socket.socket(fileno=fds[0])
        try:
            pid = self._fork(request, fds[1], fds[2])
        except OSError as exc:
            _send(reply, {"error": f"fork failed: {exc}"})
            reply.close()
            return True
        finally:
            os.close(fds[1])
            os.close(fds[2])
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, reply)
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        with contextlib.suppress(OSError):
            _send(reply, {"pid": pid})
        return True

    def _fork(self, request: dict[str, Any], out_fd: int, err_fd: int) -> int:
        argv: list[str] = request["argv"]
        script = os.path.join(request["cwd"], argv[1])
        try:
            code: CodeType | None = self.scripts.code(script, argv[1])
        except (OSError, SyntaxError, ValueError):
            code = None  # the child meets the same error and reports it as the task's
        app = self.scripts.app_module(script, argv[2]) if len(argv) > 2 else None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            exit_code = 1
            try:
                if app is not None:
                    sdk_worker.PRECOMPILED[app[0]] = app[1]
                exit_code = _run_child(request, code, out_fd, err_fd)
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                with contextlib.suppress(BaseException):
                    sys.stderr.flush()
                os._exit(exit_code & 0xFF)
        return pid

    def _reap(self, pidfd: int) -> None:
        self.selector.unregister(pidfd)
        pid, reply = self.children.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        with contextlib.suppress(OSError):
            _send(reply, {"status": os.waitstatus_to_exitcode(status)})
        reply.close()


def serve(fd: int) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    # Objects that survive to here are shared with every child; freezing them keeps the
    # children's garbage collector from touching (and so copying) their pages.
    gc.freeze()
    # The agent's Ctrl-C reaches the whole foreground group; the agent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = socket.socket(fileno=fd)
    _Server(channel).serve()


# --- the agent side --------------------------------------------------------------------------


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
        message, _ = _recv(self.reply)
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
            message, _ = _recv(ours)
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
                    _send(self._channel, request, [theirs.fileno(), stdout, stderr])
                except OSError as exc:
                    raise ForkServerUnavailable(f"cannot reach the fork server: {exc}") from exc
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        try:
            message, _ = _recv(ours)
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


if __name__ == "__main__":
    serve(int(sys.argv[1]))
