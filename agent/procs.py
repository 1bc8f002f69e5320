"""A task's process told apart from a later one that got its pid: what lets the agent, at its next
start, kill what is left of a task it was running when it died, and nothing else.

A pid alone is not enough: once its process is gone the kernel may give the number to another.
Its start time (in clock ticks since boot) and the boot's id name one process for good.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

PROC = Path("/proc")


def identity(pid: int, proc: Path = PROC) -> str | None:
    """`<boot id>:<start time>` of process `pid`; None when it is gone (a zombie, which no one
    may have reaped, is gone too) or there is no /proc."""
    try:
        boot = (proc / "sys/kernel/random/boot_id").read_text().strip()
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # After the command's closing parenthesis come the fields from the 3rd on: the state, and
    # the start time as the 22nd (proc(5)). The command itself may hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return f"{boot}:{fields[19]}"


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
