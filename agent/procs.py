"""What lets the agent, at its next start, kill what is left of the tasks it was running when it
died, and nothing else: each task's process kept in a record while it runs (`Tracked`), and
told apart from a later process that got its pid (`identity`).

A pid alone is not enough: once its process is gone the kernel may give the number to another.
Its start time (in clock ticks since boot) and the boot's id name one process for good.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

log = logging.getLogger(__name__)


@functools.cache
def _boot_id(proc: Path) -> str:
    return (proc / "sys/kernel/random/boot_id").read_text().strip()  # one boot, one agent run


def identity(pid: int, proc: Path = PROC) -> str | None:
    """`<boot id>:<start time>` of process `pid`; None when it is gone (a zombie, which no one
    may have reaped, is gone too) or there is no /proc."""
    try:
        boot = _boot_id(proc)
        # os.open, not Path.read_text: a third of the cost, on every task's way to its run.
        fd = os.open(f"{proc}/{pid}/stat", os.O_RDONLY)
        try:
            stat = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    # After the command's closing parenthesis come the fields from the 3rd on: the state, and
    # the start time as the 22nd (proc(5)). The command itself may hold spaces and parentheses.
    fields = stat.rsplit(b")", 1)[1].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return f"{boot}:{fields[19].decode()}"


def kill_group_if_same(pid: int, process: str, proc: Path = PROC) -> bool:
    """SIGKILL the process group led by `pid` (a task's process made its own session) if `pid`
    is still the process `identity` named; True when it was."""
    if identity(pid, proc) != process:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        return False  # it ended in between, or made a group of another id
    return True


@dataclass(frozen=True)
class Left:
    """A task's process that was running when the agent died, as its next start found it."""

    pid: int
    killed: bool  # its group was killed; False: it had ended (or its pid is another's now)


class Tracked:
    """The process of every task the agent runs, kept in a file while it runs, so that the
    agent's next start can kill what a crash left running (`kill_left`).

    The file is a row of fixed-size records, one per task running at once: a task's start
    writes one in a free place, its end zeroes its first byte, each a single `pwrite` (about 1
    us). A file per task (create, unlink) cost 40 to 60 us; a commit to the outbox's database
    would wait on its lock, which the claims' fsyncs hold, on the task's way to its run. Not
    fsynced: it must outlive the agent's process, not the machine, whose end ends the tasks
    too. The fork server kills its tasks when the agent dies; this is for what it did not fork
    (a non-Python app), or what was left when it died too."""

    RECORD = 512

    def __init__(self, path: Path, proc: Path = PROC) -> None:
        self.path = path
        self.proc = proc
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._lock = threading.Lock()
        # Every place taken since the start is either a running task's or free, so a new one
        # is the count of those running when none is free.
        self._places: dict[int, int] = {}  # pid -> its place
        self._free: list[int] = []  # places of ended tasks, to reuse

    def add(self, pid: int, task_id: str, attempt: int) -> None:
        """Keep `pid` as the attempt's process. Never raises for the file: a task is not
        failed for want of what only a crash would need."""
        process = identity(pid, self.proc)
        if process is None:
            return  # it has ended already: nothing to kill
        record = f"{pid}\n{process}\n{attempt}\n{task_id}\n".encode()
        if len(record) > self.RECORD:
            log.warning("task %s: its id is too long to keep its process", task_id[:64])
            return
        with self._lock:
            place = self._free.pop() if self._free else len(self._places)
            self._places[pid] = place
        try:
            os.pwrite(self._fd, record.ljust(self.RECORD, b"\0"), place * self.RECORD)
        except OSError as exc:  # a full disk, say: the task runs all the same, unkept
            log.warning("task %s: its process %s is not kept (%s)", task_id, pid, exc)

    def remove(self, pid: int) -> None:
        with self._lock:
            place = self._places.pop(pid, None)
        if place is None:
            return
        try:
            os.pwrite(self._fd, b"\0", place * self.RECORD)
        except OSError as exc:  # a next start finds the process gone: nothing is killed
            log.warning("process %s: its record is not cleared (%s)", pid, exc)
        with self._lock:
            self._free.append(place)  # a next task's record overwrites it whole

    def kill_left(self) -> dict[tuple[str, int], Left]:
        """At a start, before any task runs: kill the group of each task process kept, if it is
        still that process, and forget them all. By (task id, attempt)."""
        left: dict[tuple[str, int], Left] = {}
        data = self.path.read_bytes()
        for start in range(0, len(data), self.RECORD):
            record = data[start : start + self.RECORD]
            if record[0] == 0:
                continue  # an ended task's place
            try:
                pid, process, attempt, task_id = record.rstrip(b"\0").decode().split("\n")[:4]
                left[(task_id, int(attempt))] = Left(
                    int(pid), kill_group_if_same(int(pid), process, self.proc)
                )
            except ValueError as exc:
                log.warning(
                    "%s: ignoring a record that is not a task's process (%s)", self.path, exc
                )
        os.ftruncate(self._fd, 0)
        return left

    def close(self) -> None:
        os.close(self._fd)
