"""Run one task as its own process and turn what it did into ELVES' (flag, message, costtime).

The worker contract: `<entry> <app> <func> <base64(json params)>` in the app's folder; the entry
is `python <apps_dir>/<app>/app-worker.py` (for an installed package: the current version's
folder and its manifest's `entry`) unless a `proxy` ("interp|file" or "file") overrides it:
the task's own, else the one its package's manifest names (a shell or Go app's entry point).
The process gets a new session, so its process group holds everything it starts, and at the
timeout the whole group gets SIGKILL. Default-entry Python tasks are forked from the
warm fork server when there is one; anything else, or a fork server that fails, is a plain
subprocess.

worker_flag: 1 the app said true, 0 it said false, -1 it crashed, exited non-zero, printed no
tags, ran out of time, or is not installed.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from elves.agent.forkclient import ForkServer, ForkServerUnavailable
from elves.agent.install import CURRENT, entry_of, proxy_of
from elves.agent.output import OutputStream
from elves.packages import MANIFEST

log = logging.getLogger(__name__)

WORKER_SCRIPT = "app-worker.py"
FLAG_OK, FLAG_FALSE, FLAG_ERROR = 1, 0, -1
STDERR_TAIL = 2048  # bytes of stderr kept for the message of a failed run
STDOUT_TAIL = 4096  # bytes kept past the cap, so that the closing tags are still found
EXIT_DRAIN_S = 0.2  # after the worker exits, how long its leftover children may hold the pipes
KILL_WAIT_S = 5.0  # SIGKILL is prompt; past this the process is stuck in the kernel
CANCEL_POLL_S = 0.1
STOPPING = "killed: the agent is stopping"
# A run the agent's next start found not ended: the agent died while it ran (a dispatched
# attempt's or a cron fire's), and nothing tells how it went.
LOST = "lost: the agent stopped before it ended; its outcome is unknown"
_APP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a Python module and class name
_FLAG = re.compile(rb"<ElvesWFlag>\s*(.*?)\s*</ElvesWFlag>", re.DOTALL)
_RESULT_OPEN = b"<ElvesWResult>"
_RESULT_CLOSE = b"</ElvesWResult>"
_CUT = b"\n...[output truncated]...\n"


@dataclass(frozen=True)
class TaskSpec:
    app: str
    func: str
    params: str  # JSON text, as dispatched
    timeout_s: float
    proxy: str | None = None


@dataclass(frozen=True)
class _Place:
    """Where an app runs from: its folder, its worker script, the manifest's proxy if any."""

    folder: Path
    script: Path
    proxy: str | None


@dataclass(frozen=True)
class RunResult:
    worker_flag: int
    worker_message: str
    worker_costtime: int  # ms
    truncated: bool = False
    pid: int | None = None
    exit_code: int | None = None
    forked: bool = False  # came from the fork server (for benchmarks and logs)
    timed_out: bool = False  # killed at the task's timeout (the task ends `timed_out`)
    # Parts of its output sent as it ran (`OutputStream.sent`); None: not known (a run the
    # agent lost in a crash may have sent some).
    output_parts: int | None = 0


class _Process(Protocol):
    pid: int

    @property
    def exit_fd(self) -> int: ...

    def wait(self) -> int: ...

    def close(self) -> None: ...


class _Subprocess:
    """A Popen seen through the same small interface as a ForkedProcess."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd = os.pidfd_open(popen.pid)

    @property
    def exit_fd(self) -> int:
        return self._pidfd

    def wait(self) -> int:
        return self.popen.wait()

    def close(self) -> None:
        os.close(self._pidfd)


class Runner:
    """Runs tasks for apps installed under `installed` (packages, see install.py) or, failing
    that, under `apps_dir` (folders, e.g. the samples); thread-safe (one call per task)."""

    def __init__(
        self,
        apps_dir: Path,
        max_output_bytes: int,
        *,
        python: str = sys.executable,
        forkserver: ForkServer | None = None,
        env: Mapping[str, str] | None = None,
        installed: Path | None = None,
    ) -> None:
        self.apps_dir = Path(apps_dir).resolve()
        self.installed = installed
        self.max_output_bytes = max_output_bytes
        self.python = python
        self.forkserver = forkserver
        self.env = dict(os.environ if env is None else env)
        self._places: dict[str, tuple[tuple[object, ...], _Place]] = {}  # app -> (found by, place)

    def locate(self, app: str) -> tuple[Path, Path]:
        """(the app's folder, its worker script): the installed package's current version
        first, else the folder under `apps_dir`."""
        place = self._place(app)
        return place.folder, place.script

    def _place(self, app: str) -> _Place:
        """Where `app` runs from, found again only when what it was found by changes: the
        target of the package's `current` link (an installed version's folder never changes),
        else the stat of the app folder's manifest (an edit that keeps its size within one tick
        of the file system's clock is seen at the next). Found every time (paths resolved, the
        manifest read), it took 33 us a task; looked up, 12."""
        found_by, link = self._found_by(app)
        cached = self._places.get(app)
        if cached is not None and cached[0] == found_by:
            return cached[1]
        if link is not None:
            folder = Path(link).resolve()  # this task keeps this version, whatever comes next
            place = _Place(folder, folder / entry_of(folder), proxy_of(folder))
        else:
            folder = self.apps_dir / app
            place = _Place(folder, folder / WORKER_SCRIPT, proxy_of(folder))
        self._places[app] = (found_by, place)
        return place

    def _found_by(self, app: str) -> tuple[tuple[object, ...], str | None]:
        """What `_place` is keyed by, and the package's `current` link when that is what runs:
        its target, else the stat of the apps folder's manifest."""
        if self.installed is not None:
            link = f"{self.installed}/{app}/{CURRENT}"
            try:
                version = os.readlink(link)
            except OSError:
                version = None
            if version is not None and os.path.isdir(link):
                return ("installed", version), link
        try:
            st = os.stat(f"{self.apps_dir}/{app}/{MANIFEST}")
        except OSError:
            return ("folder", None), None
        return ("folder", st.st_mtime_ns, st.st_size, st.st_ino), None

    def command(self, spec: TaskSpec, script: Path | None = None) -> list[str]:
        """The argv of the worker contract."""
        encoded = base64.b64encode((spec.params or "{}").encode()).decode("ascii")
        return [*self.entry(spec, script), spec.app, spec.func, encoded]

    def entry(self, spec: TaskSpec, script: Path | None = None) -> list[str]:
        if spec.proxy:
            interp, sep, file = spec.proxy.partition("|")
            return [interp.strip(), file.strip()] if sep else [interp.strip()]
        return [self.python, str(script or self.locate(spec.app)[1])]

    def run(
        self,
        spec: TaskSpec,
        on_start: Callable[[int], None] | None = None,
        cancel: threading.Event | None = None,
        still_running: Callable[[], None] | None = None,
        still_running_after_s: float = 0.0,
        output: OutputStream | None = None,
    ) -> RunResult:
        """Run one task to its end, its timeout or `cancel`; never raises for a task's failure.

        `on_start(pid)` is called once the process exists, and `still_running()` once it has
        run `still_running_after_s` without ending: not at all if it ends before. `output` is
        given what the process prints as it comes, and its end once the pipes are closed. All
        are called on the caller's thread, before this returns."""
        started = time.monotonic()
        if not _APP_NAME.match(spec.app):
            return RunResult(FLAG_ERROR, f"bad app name {spec.app!r}", _ms(started))
        place = self._place(spec.app)
        if not spec.proxy and place.proxy:
            # A package's manifest may name its own entry point; a task's own proxy wins.
            spec = replace(spec, proxy=place.proxy)
        if not spec.proxy and not os.path.isfile(place.script):
            return RunResult(FLAG_ERROR, f"app '{spec.app}' not installed", _ms(started))
        argv = self.command(spec, place.script)
        cwd = place.folder if os.path.isdir(place.folder) else self.apps_dir
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            try:
                proc, forked = self._start(spec, argv, str(cwd), out_w, err_w)
            finally:
                os.close(out_w)
                os.close(err_w)
        except OSError as exc:
            os.close(out_r)
            os.close(err_r)
            return RunResult(FLAG_ERROR, f"cannot start {argv[0]!r}: {exc}", _ms(started))
        collecting = False  # from then on `_collect` closes the pipes
        try:
            if on_start is not None:
                on_start(proc.pid)
            # The task thread waits here anyway: it makes the call when the time comes.
            report = None
            if still_running is not None:
                report = (started + still_running_after_s, still_running)
            collecting = True
            return self._collect(spec, proc, forked, out_r, err_r, started, cancel, report, output)
        except BaseException:
            # A caller's callback failed (an agent bug, a full disk): the task must not run on
            # with no one left to time it out, cancel it or read its pipes. One known to have
            # ended is not signalled: its pid may be another process's by now.
            if not _ended(proc):
                _kill_group(proc.pid)
            with contextlib.suppress(Exception):  # the error to raise is the callback's
                proc.wait()  # reaped, as `_collect` would have
            raise
        finally:
            if not collecting:
                os.close(out_r)
                os.close(err_r)
            proc.close()

    def _start(
        self, spec: TaskSpec, argv: list[str], cwd: str, out_w: int, err_w: int
    ) -> tuple[_Process, bool]:
        if self.forkserver is not None and not spec.proxy:
            try:
                return self.forkserver.spawn(argv, cwd, self.env, out_w, err_w), True
            except ForkServerUnavailable as exc:
                log.warning("fork server unavailable, using a plain process: %s", exc)
        popen = subprocess.Popen(
            argv,
            cwd=cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=out_w,
            stderr=err_w,
            start_new_session=True,
        )
        return _Subprocess(popen), False

    def _collect(
        self,
        spec: TaskSpec,
        proc: _Process,
        forked: bool,
        out_r: int,
        err_r: int,
        started: float,
        cancel: threading.Event | None,
        report: tuple[float, Callable[[], None]] | None,
        output: OutputStream | None,
    ) -> RunResult:
        """`report`: (when, what) to call if the process is still running by then."""
        out = _Capture(self.max_output_bytes, STDOUT_TAIL)
        err = _Capture(0, STDERR_TAIL)
        pipes = {out_r: out, err_r: err}
        streams = {out_r: "stdout", err_r: "stderr"}
        deadline = started + spec.timeout_s
        killed: str | None = None  # why the group was killed
        timed_out = False
        exited = False
        # select.poll, not a selectors object (its keys and maps, for every task): with
        # `_place`, the agent's side of a noop task went from 0.44 to 0.35 ms (bench/fork.py).
        poller = select.poll()
        # Registered in this order, not a set's: poll answers in registration order, so stdout
        # printed before stderr is read first when both are ready at once.
        order = (out_r, err_r, proc.exit_fd)
        for fd in order:
            poller.register(fd, select.POLLIN)
        watched = set(order)
        try:
            while True:
                now = time.monotonic()
                if exited:
                    # Done; a child the worker left behind may hold the pipes, so do not wait long.
                    if not watched or now >= deadline:
                        break
                elif killed is None and (now >= deadline or (cancel and cancel.is_set())):
                    timed_out = now >= deadline
                    killed = f"timeout after {spec.timeout_s:g}s" if timed_out else STOPPING
                    _kill_group(proc.pid)
                    deadline = now + KILL_WAIT_S
                    continue
                elif killed is not None and now >= deadline:
                    log.error("task pid %s outlived SIGKILL by %ss", proc.pid, KILL_WAIT_S)
                    break
                if report is not None and not exited and killed is None and now >= report[0]:
                    report[1]()
                    report = None
                    continue
                if output is not None and now >= output.due():
                    output.flush(now)
                    continue
                wait = deadline - now
                if cancel is not None and killed is None:
                    wait = min(wait, CANCEL_POLL_S)
                if report is not None and not exited and killed is None:
                    wait = min(wait, report[0] - now)
                if output is not None:
                    wait = min(wait, output.due() - now)
                # Any event counts as readable (a hang-up too), as selectors counts it.
                for fd, _ in poller.poll(max(0, math.ceil(wait * 1000))):
                    if fd == proc.exit_fd:
                        poller.unregister(fd)
                        watched.discard(fd)
                        exited = True
                        deadline = time.monotonic() + EXIT_DRAIN_S
                        continue
                    chunk = os.read(fd, 65536)
                    if chunk:
                        pipes[fd].add(chunk)
                        if output is not None:
                            output.add(streams[fd], chunk, time.monotonic())
                    else:
                        poller.unregister(fd)
                        watched.discard(fd)
        finally:
            os.close(out_r)
            os.close(err_r)
        parts = 0
        if output is not None:
            output.finish()  # before the result is made: its parts go out first
            parts = output.sent
        code: int | None = None
        if exited:
            try:
                code = proc.wait()
            except ForkServerUnavailable as exc:
                killed = killed or str(exc)
        cost = _ms(started)
        if killed is not None:
            return RunResult(
                FLAG_ERROR,
                killed,
                cost,
                out.truncated,
                proc.pid,
                code,
                forked,
                timed_out,
                output_parts=parts,
            )
        if code != 0:
            reason = f"exit code {code}" if code and code > 0 else f"killed by {_signal(code)}"
            tail = err.text().strip()
            message = f"{reason}: {tail}" if tail else reason
            return RunResult(
                FLAG_ERROR, message, cost, out.truncated, proc.pid, code, forked, output_parts=parts
            )
        flag, message = parse_output(out.data())
        return RunResult(
            flag, message, cost, out.truncated, proc.pid, code, forked, output_parts=parts
        )


class _Capture:
    """Keeps the first `cap` bytes and the last `tail` bytes of a stream."""

    def __init__(self, cap: int, tail: int) -> None:
        self.cap = cap
        self.tail_size = tail
        self.head = bytearray()
        self.tail = bytearray()
        self.truncated = False

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.truncated = self.cap > 0 or self.truncated
            self.tail += chunk
            del self.tail[: max(0, len(self.tail) - self.tail_size)]

    def data(self) -> bytes:
        return bytes(self.head + _CUT + self.tail) if self.truncated else bytes(self.head)

    def text(self) -> str:
        return bytes(self.head + self.tail).decode("utf-8", errors="replace")


def parse_output(stdout: bytes) -> tuple[int, str]:
    """(worker_flag, worker_message) from a worker's stdout.

    The last ElvesWFlag counts (an app may print before the SDK does); the result runs from the
    ElvesWResult after it to the last closing tag, or to the end when the output was cut.
    """
    flags = list(_FLAG.finditer(stdout))
    if not flags:
        tail = stdout[-200:].decode("utf-8", errors="replace").strip()
        return FLAG_ERROR, f"no ElvesWFlag in output: {tail}" if tail else "no ElvesWFlag in output"
    last = flags[-1]
    value = last.group(1).decode("utf-8", errors="replace").strip().lower()
    start = stdout.find(_RESULT_OPEN, last.end())
    if start < 0:
        message = ""
    else:
        start += len(_RESULT_OPEN)
        end = stdout.rfind(_RESULT_CLOSE, start)
        message = stdout[start : end if end >= 0 else len(stdout)].decode("utf-8", "replace")
    if value == "true":
        return FLAG_OK, message
    if value == "false":
        return FLAG_FALSE, message
    return FLAG_ERROR, f"bad ElvesWFlag {value!r}: {message}"


def _ended(proc: _Process) -> bool:
    """Is the process's end known (its exit fd readable, or closed), without waiting?"""
    poller = select.poll()
    poller.register(proc.exit_fd, select.POLLIN)
    return bool(poller.poll(0))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        # Not yet a group leader (killed within microseconds of the fork) or already gone.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _signal(code: int | None) -> str:
    if code is None:
        return "an unknown signal"
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
