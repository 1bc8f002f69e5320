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
The server exits when the agent closes its end, killing the process group of any task still
running (the agent died: nothing else would end them), and is single-threaded so that forking it
is safe.

Every task's process pays for what the server has imported: a module that registers a fork
handler runs it in each child (`threading`'s alone was a quarter of a noop task's CPU), and the
pages the child writes are copied. So this module imports little; the agent's side lives apart.
"""

from __future__ import annotations

# _socket, not socket: socket's enum classes were a twelfth of the server's memory, whose page
# tables every fork copies and every task's exit frees; typing (below) as much again.
import _socket
import array
import builtins
import gc
import importlib
import json
import mmap
import os
import select
import signal
import sys
import types

# The C function under `signal.signal`, which takes its own SIG_DFL, not the enum (CPython's
# since 3.5; typeshed has no stub for it).
from _signal import SIG_DFL as _SIG_DFL  # type: ignore[import-not-found]
from _signal import signal as _set_handler
from types import CodeType

from elves.apps.sdk import worker as sdk_worker

# typing.TYPE_CHECKING without importing typing (mypy reads any name TYPE_CHECKING so).
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections.abc stay out of the server, as socket does
    from collections.abc import Mapping, Sequence
    from typing import Any

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


def send(sock: _socket.socket, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def recv(
    sock: _socket.socket, maxfds: int = 0, buffer: bytearray | mmap.mmap | None = None
) -> tuple[dict[str, Any] | None, list[int]]:
    """One packet: (message, fds); (None, []) when the peer has closed. Read into `buffer` (the
    server keeps one of MAX_PACKET bytes for its requests), else into REPLY_MAX bytes: a fresh
    1 MiB buffer for each packet, as `socket.recv_fds` would take, cost 20 us of CPU and an mmap
    and munmap each time, three times a task."""
    into = bytearray(REPLY_MAX) if buffer is None else buffer
    ancillary = _socket.CMSG_LEN(maxfds * FD_BYTES) if maxfds else 0
    size, ancdata, flags, _addr = sock.recvmsg_into([into], ancillary)
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % FD_BYTES])
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC) or not size:
        for fd in fds:
            os.close(fd)
        if size:
            raise ValueError(f"a packet over {len(into)} bytes or with over {maxfds} fds")
        return None, []
    message = sdk_worker.json_value(into[:size].decode())  # json.loads without its frames
    if not isinstance(message, dict):
        raise TypeError("fork server packets are JSON objects")
    return message, list(fds)


# --- the server side -------------------------------------------------------------------------


def _run_child(
    request: dict[str, Any],
    entry: _Script | None,
    app: _AppModule | None,
    fds: tuple[int, int, int],
) -> int:
    """In the forked child: become the task's process, run app-worker.py (already compiled, as
    `entry`, unless the server could not) as `python app-worker.py` would: as a fresh
    `__main__` module; `fds` become its stdin, stdout and stderr. Every page this writes is
    copied from the server's, so it does what it must with few Python calls."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
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
    if entry is not None:
        # What `python script.py` does: the script's own folder, links resolved, first on
        # sys.path; the SDK's main() finds the app there too.
        sys.path[0] = entry.home
        sdk_worker.HOMES[script] = entry.home
    else:
        sys.path[0] = os.path.dirname(os.path.realpath(script))
    if app is not None:
        sdk_worker.PRECOMPILED[app.path] = app.code
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    sys.modules["__main__"] = main
    exit_code = 0
    try:
        # Unreadable or not Python: the error is the task's, as python's would be.
        code = _compile(script, script) if entry is None else entry.code
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
        import traceback

        traceback.print_exc()
        exit_code = 1
    return exit_code


def _compile(path: str, name: str) -> CodeType:
    """The script at `path` compiled as python would, its tracebacks naming it `name`."""
    with open(path, "rb") as f:
        return compile(f.read(), name, "exec", dont_inherit=True)


class _Script:
    __slots__ = ("stamp", "code", "home")  # a plain class: NamedTuple would import typing

    def __init__(self, stamp: tuple[int, int, int], code: CodeType, home: str) -> None:
        self.stamp = stamp  # (mtime, size, inode): a new version is another file
        self.code = code
        self.home = home  # its folder, links resolved: sys.path[0] of `python <script>`


class _AppModule:
    __slots__ = ("path", "code")

    def __init__(self, path: str, code: CodeType) -> None:
        self.path = path  # as the SDK's load_app names it: PRECOMPILED's key
        self.code = code


class _Scripts:
    """Each Python file a task runs compiled once, again when it changes (a new app version):
    the entry script and the app module the SDK imports.

    Compiling is not running: the code still runs in every task's own process. Reading and
    compiling the entry script there was a fifth of a noop task's CPU, and importing the app
    module (stat, read, unmarshal) as much again."""

    def __init__(self) -> None:
        self._scripts: dict[str, _Script] = {}

    def entry(self, path: str, name: str) -> _Script:
        """The entry script at `path` (its tracebacks naming it `name`); raises OSError,
        SyntaxError or ValueError as compiling it would."""
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = self._scripts.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        script = _Script(stamp, _compile(path, name), os.path.dirname(os.path.realpath(path)))
        self._scripts[path] = script
        return script

    def app_module(self, home: str, app: str) -> _AppModule | None:
        """`<app>.py` in the entry script's folder, compiled, as the SDK's main() imports it;
        None when there is none to compile: the SDK then imports it itself and meets the same
        error, if any, as the task's own."""
        if not app.isidentifier():
            return None
        # os.path.join(home, ...), the SDK's key, without its frames (see `_Server`).
        path = f"{home}/{app}.py" if home != "/" else f"/{app}.py"
        try:
            return _AppModule(path, self.entry(path, path).code)
        except (OSError, SyntaxError, ValueError):
            return None


class _Server:
    """The loop. After every fork the server's pages are shared with the child until one of
    them writes, so each page the server writes before the next fork costs it a fault and a
    copy: a page per Python object it touches. The loop therefore touches few: epoll, not
    `selectors`; a task's reply socket as a bare fd, written with `os.write` (one packet, as
    `send` would), its messages formatted by hand; no path helpers; json's scanner alone. With
    the leaner child and imports, a noop task went from about 220 of the server's faults and
    350 of the child's to about 100 and 245 (bench/fork.py: server and child CPU 0.96 and
    1.74 ms a task, then 0.62 and 1.36)."""

    def __init__(self, channel: _socket.socket) -> None:
        self.channel = channel
        self.epoll = select.epoll()
        self.children: dict[int, tuple[int, int]] = {}  # pidfd -> (pid, reply fd)
        # Every request is read into it. Anonymous memory: only the pages a request fills are
        # ever touched, so the rest costs a fork nothing (a bytearray's would all be zeroed).
        self.buffer = mmap.mmap(-1, MAX_PACKET)
        self.scripts = _Scripts()
        self.devnull = os.open(os.devnull, os.O_RDONLY)  # every task's stdin, opened once

    def serve(self) -> None:
        channel = self.channel.fileno()
        self.epoll.register(channel, select.EPOLLIN)
        send(self.channel, {"ready": os.getpid()})
        while True:
            for fd, _ in self.epoll.poll():
                if fd != channel:
                    self._reap(fd)
                elif not self._accept():
                    self._orphaned()
                    return

    def _orphaned(self) -> None:
        """The agent is gone (it stops only after its tasks ended, so it died): kill the process
        group of every task still running. Each is in a session of its own, which nothing would
        end, and no one is left to read its result or kill it at its timeout."""
        for pid, _reply in self.children.values():
            try:
                os.killpg(pid, signal.SIGKILL)  # the child's setsid made its pid the group's id
            except OSError:
                pass  # it has just ended
        if self.children:
            _warn(f"the agent is gone: killed {len(self.children)} running tasks")

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
        reply, out_fd, err_fd = fds
        problem = _malformed(request)
        try:
            if problem is not None:
                _warn(f"bad request: {problem}")
                _answer(reply, {"error": f"bad request: {problem}"})
                os.close(reply)
                return True
            pid = self._fork(request, out_fd, err_fd)
        except OSError as exc:
            _answer(reply, {"error": f"fork failed: {exc}"})
            os.close(reply)
            return True
        finally:
            os.close(out_fd)
            os.close(err_fd)
        pidfd = os.pidfd_open(pid)
        self.children[pidfd] = (pid, reply)
        self.epoll.register(pidfd, select.EPOLLIN)
        _answer_bytes(reply, b'{"pid": %d}' % pid)  # not json.dumps: see the class
        return True

    def _fork(self, request: dict[str, Any], out_fd: int, err_fd: int) -> int:
        argv: list[str] = request["argv"]
        name = argv[1]
        # os.path.join's result, without its frames: the runner sends an absolute path.
        script = name if name[:1] == "/" else f"{request['cwd']}/{name}"
        entry: _Script | None = None
        app: _AppModule | None = None
        try:
            entry = self.scripts.entry(script, name)
        except (OSError, SyntaxError, ValueError):
            pass  # the child meets the same error and reports it as the task's
        if entry is not None and len(argv) > 2:
            app = self.scripts.app_module(entry.home, argv[2])
        # Nothing to flush first: the server writes only through `_warn`, which flushes.
        pid = os.fork()
        if pid == 0:
            exit_code = 1
            try:
                exit_code = _run_child(request, entry, app, (self.devnull, out_fd, err_fd))
            finally:
                # Not contextlib.suppress: a class's frames, for each of every task's flushes.
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except BaseException:  # noqa: BLE001, S110 - exiting whatever happened
                        pass
                os._exit(exit_code & 0xFF)
        return pid

    def _reap(self, pidfd: int) -> None:
        self.epoll.unregister(pidfd)
        pid, reply = self.children.pop(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(pid, 0)
        _answer_bytes(reply, b'{"status": %d}' % os.waitstatus_to_exitcode(status))
        os.close(reply)


def _malformed(request: dict[str, Any]) -> str | None:
    """What is wrong with a request's shape, or None: an agent's bug must not end the server."""
    argv, cwd, env = request.get("argv"), request.get("cwd"), request.get("env")
    if not isinstance(argv, list) or len(argv) < 2 or not all(isinstance(a, str) for a in argv):
        return "argv must be a list of at least two strings (the interpreter and the script)"
    if not isinstance(cwd, str):
        return "cwd must be a string"
    if env is not None and not isinstance(env, dict):
        return "env must be an object or null"
    return None


def _answer(reply: int, message: Mapping[str, Any]) -> None:
    """One packet on a task's reply socket (a bare fd); the agent may have gone: no matter."""
    _answer_bytes(reply, json.dumps(message).encode())


def _answer_bytes(reply: int, data: bytes) -> None:
    try:
        os.write(reply, data)  # on a SOCK_SEQPACKET socket: one packet, as `send` makes
    except OSError:
        pass


def serve(fd: int) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    # Objects that survive to here are shared with every child; freezing them keeps the
    # children's garbage collector from touching (and so copying) their pages.
    gc.freeze()
    # The agent's Ctrl-C reaches the whole foreground group; the agent decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _socket.socket(fileno=fd)
    _Server(channel).serve()


if __name__ == "__main__":
    serve(int(sys.argv[1]))
