"""A warm parent that forks one process per Python app task: the server process itself (the
agent's handle on it is `forkclient.py`).

A fresh interpreter costs tens of milliseconds before the app runs a line; a fork of a parent that
has already imported the SDK costs about one. The task still gets its own process (isolation, the
ELVES contract), its own session and process group (so a timeout kills all it started), and the
same argv, cwd and environment it would get from `python app-worker.py ...`.

Protocol. The agent starts `python -m elves.agent.forkserver <fd>` with one end of an AF_UNIX
SOCK_SEQPACKET socketpair as `<fd>`; every message is one JSON object (packets keep boundaries, so
no framing). The server sends {"ready": pid} once it has preloaded. Per task, the agent sends
{"argv", "cwd", "env"} (env null: the server's own, as the agent started it) with three fds
attached: a reply socket (its own new socketpair) and the write ends of the task's stdout and
stderr pipes. On the reply socket the server answers {"pid": n} (or {"error": text}) at once, then
{"status": code} when the child has exited (`os.waitstatus_to_exitcode`: negative for a signal).
The server exits when the agent closes its end, and is single-threaded so that forking it is safe.

Every task's process pays for what the server has imported: a module that registers a fork
handler runs it in each child (`threading`'s alone was a quarter of a noop task's CPU), and the
pages the child writes are copied. So this module imports little; the agent's side lives apart.
"""

from __future__ import annotations

import array
import builtins
import contextlib
import gc
import importlib
import json
import mmap
import os
import selectors
import signal
import socket
import sys
import types

# The C function under `signal.signal`, which takes its own SIG_DFL, not the enum (CPython's
# since 3.5; typeshed has no stub for it).
from _signal import SIG_DFL as _SIG_DFL  # type: ignore[import-not-found]
from _signal import signal as _set_handler
from collections.abc import Mapping, Sequence
from types import CodeType
from typing import Any

from elves.apps.sdk import worker as sdk_worker

MAX_PACKET = 1 << 20  # argv carries base64 params (64 KiB of JSON by default) and the env
REPLY_MAX = 4096  # what the server says: {"ready"}, {"pid"}, {"status"} or {"error": text}
FD_BYTES = array.array("i").itemsize
# What every Python task imports anyway (and the SDK's worker, imported above).
PRELOAD = ("json", "base64", "traceback")


def _warn(text: str) -> None:
    """To the agent's stderr, which the server shares: not through `logging`, which would
    import `threading`, whose fork handler alone cost every task's process a millisecond."""
    sys.stderr.write(f"fork server {os.getpid()}: {text}\n")
    sys.stderr.flush()


def send(sock: socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(
    sock: socket.socket, maxfds: int = 0, buffer: bytearray | mmap.mmap | None = None
) -> tuple[dict[str, Any] | None, list[int]]:
    """One packet: (message, fds); (None, []) when the peer has closed. Read into `buffer` (the
    server keeps one of MAX_PACKET bytes for its requests), else into REPLY_MAX bytes: a fresh
    1 MiB buffer for each packet, as `socket.recv_fds` would take, cost 20 us of CPU and an mmap
    and munmap each time, three times a task."""
    into = bytearray(REPLY_MAX) if buffer is None else buffer
    ancillary = socket.CMSG_LEN(maxfds * FD_BYTES) if maxfds else 0
    size, ancdata, flags, _addr = sock.recvmsg_into([into], ancillary)
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % FD_BYTES])
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or not size:
        for fd in fds:
            os.close(fd)
        if size:
            raise ValueError(f"a packet over {len(into)} bytes or with over {maxfds} fds")
        return None, []
    message = json.loads(into[:size])
    if not isinstance(message, dict):
        raise TypeError("fork server packets are JSON objects")
    return message, list(fds)


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
        # Every request is read into it. Anonymous memory: only the pages a request fills are
        # ever touched, so the rest costs a fork nothing (a bytearray's would all be zeroed).
        self.buffer = mmap.mmap(-1, MAX_PACKET)
        self.scripts = _Scripts()

    def serve(self) -> None:
        self.selector.register(self.channel, selectors.EVENT_READ, None)
        send(self.channel, {"ready": os.getpid()})
        while True:
            for key, _ in self.selector.select():
                if key.data is None:
                    if not self._accept():
                        return
                else:
                    self._reap(key.fd)

    def _accept(self) -> bool:
        try:
            request, fds = recv(self.channel, maxfds=3, buffer=self.buffer)
        except (OSError, ValueError, TypeError) as exc:
            _warn(f"bad request: {exc}")
            return True
        if request is None:
            return False  # the agent is gone
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            _warn(f"a request came with {len(fds)} fds, not 3")
            return True
        reply = socket.socket(fileno=fds[0])
        try:
            pid = self._fork(request, fds[1], fds[2])
        except OSError as exc:
            send(reply, {"error": f"fork failed: {exc}"})
            reply.close()
            return True
        finally:
            os.close(fds[1])
            os.close(fds[2])
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, reply)
        self.selector.register(pidfd, selectors.EVENT_READ, pid)
        with contextlib.suppress(OSError):
            send(reply, {"pid": pid})
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
            send(reply, {"status": os.waitstatus_to_exitcode(status)})
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


if __name__ == "__main__":
    serve(int(sys.argv[1]))
